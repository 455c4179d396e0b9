"""The driver's own decisions, without sockets: Via stamping, rejects, load shedding."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from minisip.sip.parser import parse_message_untrusted
from minisip.sip.peer import Peer
from minisip.transaction.layer import TransactionLayer
from minisip.transport.driver import SipDriver, reject_untrusted, stamp_via
from minisip.transport.udp import OverloadDetector

PEER = Peer("udp", "192.0.2.7", 40000)


def request(method: str = "INVITE", to_tag: str = "", via_host: str = "10.0.0.2") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (f"{method} sip:101@pbx SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via_host}:5060;branch=z9hG4bKd1;rport\r\n"
            f"Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKold\r\n"
            f"From: <sip:100@pbx>;tag=a\r\nTo: <sip:101@pbx>{tag}\r\nCall-ID: d1\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode()


@dataclass
class FakeUdp:
    host: str = "0.0.0.0"
    port: int = 5060
    busy: bool = False
    sent: list[bytes] = field(default_factory=list)

    def overloaded(self) -> bool:
        return self.busy

    def send(self, data: bytes, peer: Peer) -> bool:
        self.sent.append(data)
        return True


def driver(busy: bool = False) -> tuple[SipDriver, FakeUdp, list[float]]:
    layer = TransactionLayer()
    seen: list[float] = []
    d = SipDriver(layer, seen.append, lambda: None)
    udp = FakeUdp(busy=busy)
    d.add_sender("udp", udp)
    return d, udp, seen


def test_via_gets_received_and_rport_and_keeps_the_other_vias() -> None:
    req = parse_message_untrusted(request())
    stamp_via(req, PEER)  # type: ignore[arg-type]
    vias = req.headers.get_all("Via")
    assert vias[0] == ("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKd1;rport=40000;"
                       "received=192.0.2.7")
    assert vias[1] == "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKold"
    assert req.top_via.params["rport"] == "40000"  # the cached view agrees


def test_reject_copies_the_lines_a_client_matches_on() -> None:
    out = reject_untrusted(request().replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE"), 400,
                           "Bad CSeq header")
    assert out is not None and out.startswith(b"SIP/2.0 400 Bad CSeq header\r\n")
    assert b"Call-ID: d1" in out and out.count(b"Via:") == 2
    assert reject_untrusted(b"SIP/2.0 200 OK\r\n\r\n", 400, "x") is None  # never answer a response
    assert reject_untrusted(b"garbage", 400, "x") is None


@pytest.mark.parametrize(("method", "to_tag", "shed"), [
    ("INVITE", "", True), ("REGISTER", "", True), ("OPTIONS", "", True),
    ("BYE", "b", False), ("INVITE", "b", False),  # calls in progress always go through
])
async def test_new_work_is_refused_with_503_while_overloaded(method: str, to_tag: str,
                                                             shed: bool) -> None:
    d, udp, seen = driver(busy=True)
    d.on_message(request(method, to_tag), PEER)
    if shed:
        assert udp.sent and udp.sent[0].startswith(b"SIP/2.0 503 Overloaded")
        assert b"Retry-After: 5" in udp.sent[0] and d.shed == 1 and not seen
    else:
        assert d.shed == 0 and seen  # handed to the transaction layer


async def test_no_shedding_when_keeping_up() -> None:
    d, udp, seen = driver(busy=False)
    d.on_message(request(), PEER)
    assert d.shed == 0 and seen


@pytest.mark.parametrize(("looks", "overloaded"), [
    ([(0.0, 0.5)], False),  # one look over the threshold: a stall's queue, not overload
    ([(0.0, 0.5), (0.5, 0.6), (1.0, 0.4)], True),  # held for the whole second
    ([(0.0, 0.5), (0.5, 0.1), (1.0, 0.5)], False),  # it drained in between
    ([(0.0, 0.5), (0.5, 0.2), (1.0, 0.5)], True),  # above half the threshold: still behind
    ([(0.0, 0.2), (2.0, 0.25)], False),  # never over
])
def test_overload_is_a_delay_held_over_a_window(looks: list[tuple[float, float]],
                                                overloaded: bool) -> None:
    det = OverloadDetector(threshold=0.3, sustained=1.0)
    for now, delay in looks:
        det.observe(delay, now)
    assert det.overloaded(looks[-1][0]) is overloaded


# -- the error boundary, transport failures ------------------------------------------------------

def test_a_fault_in_the_tu_answers_500_counts_it_and_runs_the_events_queued_behind() -> None:
    layer = TransactionLayer()
    handled: list[str] = []

    def on_events(now: float) -> None:  # the TU: one request makes it raise, once
        for event in layer.next_events():
            handled.append(type(event).__name__)
            if len(handled) == 1:
                raise KeyError("a bug")

    d = SipDriver(layer, on_events, lambda: None, clock=lambda: 5.0)
    udp = FakeUdp()
    d.add_sender("udp", udp)
    d.on_message(request("OPTIONS"), PEER)
    d.flush()
    assert d.faults.count == 1 and d.faults.last is not None
    assert d.faults.last.kind == "sip" and "KeyError" in d.faults.last.text
    assert [m.split(b"\r\n")[0] for m in udp.sent] == [b"SIP/2.0 500 Server Internal Error"]
    d.on_message(request("OPTIONS").replace(b"z9hG4bKd1", b"z9hG4bKd2")
                 .replace(b"Call-ID: d1", b"Call-ID: d2"), PEER)
    assert d.faults.count == 1 and len(handled) == 2  # the next message is served


def test_a_fault_in_one_timer_source_leaves_the_others_firing() -> None:
    fired: list[float] = []

    class Broken:
        def get_timer(self) -> float | None:
            return 1.0

        def handle_timer(self, now: float) -> None:
            raise ValueError("bug")

    class Fine:
        def get_timer(self) -> float | None:
            return 1.0

        def handle_timer(self, now: float) -> None:
            fired.append(now)

    d, udp, seen = driver()
    d.clock = lambda: 2.0
    d.mono_timers += [Broken(), Fine()]
    d.fire_timers(2.0)
    assert fired == [2.0] and d.faults.by_kind == {"timer": 1}


@dataclass
class FakeStream:
    host: str = "0.0.0.0"
    port: int = 5060
    connected: set[Peer] = field(default_factory=set)
    sent: list[bytes] = field(default_factory=list)

    def send(self, data: bytes, peer: Peer) -> bool:
        if peer not in self.connected:
            return False
        self.sent.append(data)
        return True

    def local_for(self, peer: Peer) -> tuple[str, int] | None:
        return ("192.0.2.1", self.port) if peer in self.connected else None


def test_contact_and_via_name_the_port_of_the_transport_before_its_connection_is_up() -> None:
    """A TLS line's first REGISTER is built while its connection still dials: its
    Contact must name the TLS port (naming the UDP one, it left a second binding at the
    provider with the refreshes, and the provider's calls forked to both)."""
    d = SipDriver(TransactionLayer(), lambda now: None, lambda: None)
    d.add_sender("udp", FakeUdp("127.0.0.1", 5060))
    d.add_sender("tcp", FakeStream("127.0.0.1", 5070))
    tls = FakeStream("127.0.0.1", 5061)
    d.add_sender("tls", tls)
    peer = Peer("tls", "127.0.0.1", 6061)
    assert d.local_address(peer) == ("127.0.0.1", 5061)
    tls.connected.add(peer)
    assert d.local_address(peer) == ("192.0.2.1", 5061)  # the connection's own address
    assert d.local_address(Peer("tcp", "127.0.0.1", 6060)) == ("127.0.0.1", 5070)
    assert d.local_address(Peer("udp", "127.0.0.1", 6060)) == ("127.0.0.1", 5060)


def test_a_request_to_a_peer_without_connection_fails_its_transaction_at_once() -> None:
    from minisip.sip.message import Request
    from minisip.transaction import events as ev

    layer = TransactionLayer()
    got: list[object] = []
    d = SipDriver(layer, lambda now: got.extend(layer.next_events()), lambda: None,
                  clock=lambda: 1.0)
    d.add_sender("tcp", FakeStream())
    peer = Peer("tcp", "192.0.2.9", 40000)
    req = Request("INVITE", "sip:101@192.0.2.9", [
        ("Via", "SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKx1"), ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:101@b>"), ("Call-ID", "c1"), ("CSeq", "1 INVITE")])
    layer.send_request(req, peer, 1.0)
    d.flush()
    assert d.send_failures == 1 and layer.counters.ict == 0
    assert [type(e) for e in got] == [ev.TransportFailure, ev.TransactionTerminated]


def test_a_lost_connection_removes_the_server_transactions_on_it() -> None:
    layer = TransactionLayer()
    d = SipDriver(layer, lambda now: layer.next_events(), lambda: None, clock=lambda: 1.0)
    stream = FakeStream()
    d.add_sender("tcp", stream)
    peer = Peer("tcp", "192.0.2.9", 40000)
    stream.connected.add(peer)
    d.on_message(request("INVITE").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), peer)
    d.flush()
    assert layer.counters.ist == 1 and stream.sent  # 100 Trying went out
    stream.connected.clear()
    d.connection_lost(peer)
    assert layer.counters.ist == 0 and layer.counters.transport_failures == 1


@pytest.mark.parametrize("ping", [b"\r\n\r\n", b"\r\n", b""])
def test_udp_crlf_keepalives_are_neither_answered_nor_bad(ping: bytes) -> None:
    d, udp, seen = driver()
    d.clock = lambda: 0.0
    d.on_message(ping, PEER)
    assert d.keepalives == 1 and d.bad_messages == 0 and not udp.sent and not seen
