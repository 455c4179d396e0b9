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

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent.append(data)


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
