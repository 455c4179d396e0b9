"""Issue 8's done-when, against a running server process on loopback.

Every input that once stopped the server (non-ASCII digits in an authenticated
INVITE's SDP, an RSeq of '²', ``rport=abc``, and what the PBX fuzz test found: a
non-ASCII digest response, a bad Contact, an INVITE without From tag, a BYE on the
early dialog, mangled bytes) is sent: the server answers OPTIONS after each one, and
``minisip status`` shows none of them as a fault (each is answered as bad input, or
served). A callee whose TCP connection is gone: the caller hears a final answer at
once (not after Timer B's 32 s) and no transaction is left behind.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minisip.sip.message import Request, Response
from tests.e2e.rawsip import RawPhone
from tests.helpers import ServerProcess, make_server, options_ping
from tests.pbx.harness import sdp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path_factory.mktemp("faults"))
    path = srv.config_dir / "system.yaml"  # every SDP goes through the relay's rewrite too
    path.write_text(path.read_text().replace("relay_media: auto", "relay_media: always"))
    srv.start()
    yield srv
    srv.stop()


def status(server: ServerProcess) -> dict[str, Any]:
    r = server.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def alive(server: ServerProcess) -> None:
    for _ in range(4):  # a UA retransmits
        reply = options_ping(server.port, timeout=1.0)
        if reply is not None:
            assert reply.startswith(b"SIP/2.0 200 "), reply
            return
    raise AssertionError(f"no answer to OPTIONS:\n{server.log()}")


GOOD = sdp("127.0.0.1", 40000)
BAD_SDP = {
    "a=ptime:²": GOOD.replace(b"a=sendrecv", "a=ptime:²".encode()),
    "m=audio ²0000": GOOD.replace(b"m=audio 40000", "m=audio ²0000".encode()),
    "a=rtpmap:² x/²": GOOD.replace(b"a=rtpmap:0 PCMU/8000", "a=rtpmap:² x/²".encode()),
    "o= version ²": GOOD.replace(b"o=phone 1 1", "o=phone 1 ²".encode()),
}


def busy_callee(callee: RawPhone, headers: list[tuple[str, str]] | None = None) -> Request:
    """The callee's device: a 183 (with ``headers``) then 486 to the next INVITE."""
    inv = callee.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
    assert isinstance(inv, Request)
    if headers is not None:
        callee.answer(inv, 183, headers=[("Contact", callee.contact), *headers], to_tag="t1")
    callee.answer(inv, 486, to_tag="t1")
    callee.expect(lambda m: isinstance(m, Request) and m.method == "ACK"
                  and m.call_id == inv.call_id)
    return inv


def call_refused_by_callee(caller: RawPhone, callee: RawPhone, body: bytes,
                           headers: list[tuple[str, str]] | None = None) -> Response:
    invite, first = caller.invite("101", body)
    busy_callee(callee, headers)
    final = caller.final(invite, first)
    caller.ack(invite, final)
    return final


@pytest.fixture
def phones(server: ServerProcess) -> Iterator[tuple[RawPhone, RawPhone]]:
    caller, callee = RawPhone(server.port, "100"), RawPhone(server.port, "101")
    assert callee.register().status == 200
    yield caller, callee
    callee.register(expires=0)
    caller.close()
    callee.close()


@pytest.mark.parametrize("case", list(BAD_SDP))
def test_non_ascii_digits_in_the_sdp_of_an_authenticated_invite(
        server: ServerProcess, phones: tuple[RawPhone, RawPhone], case: str) -> None:
    caller, callee = phones
    assert call_refused_by_callee(caller, callee, BAD_SDP[case]).status == 486
    alive(server)


def test_rseq_of_non_ascii_digits_from_the_callee(server: ServerProcess,
                                                  phones: tuple[RawPhone, RawPhone]) -> None:
    caller, callee = phones
    final = call_refused_by_callee(caller, callee, GOOD,
                                   headers=[("Require", "100rel"), ("RSeq", "²")])
    assert final.status == 486
    alive(server)


CASES: dict[str, Callable[[RawPhone], None]] = {}


def case(fn: Callable[[RawPhone], None]) -> Callable[[RawPhone], None]:
    CASES[fn.__name__] = fn
    return fn


@case
def rport_abc(caller: RawPhone) -> None:
    req = Request("OPTIONS", "sip:minisip", [
        ("Via", caller.via(params=";rport=abc")), ("Max-Forwards", "70"),
        ("From", "<sip:100@minisip>;tag=r1"), ("To", "<sip:minisip>"),
        ("Call-ID", "rport-abc"), ("CSeq", "1 OPTIONS")])
    caller.send(req)
    caller.response_to(req)


@case
def non_ascii_digest_response(caller: RawPhone) -> None:
    invite, first = caller.invite("101", GOOD, mangle=lambda b: b.replace(
        b'response="', 'response="²'.encode(), 1))
    resp = caller.final(invite, first)
    assert resp.status == 407  # refused like any wrong password, and challenged again
    caller.ack(invite, resp)


@case
def second_contact_not_a_uri(caller: RawPhone) -> None:
    invite, first = caller.invite("101", GOOD, headers=[("Contact", "<sip:x@²>")])
    resp = caller.final(invite, first)
    assert resp.status == 400
    caller.ack(invite, resp)


@case
def invite_without_from_tag(caller: RawPhone) -> None:
    invite, first = caller.invite("101", GOOD,
                                  mangle=lambda b: b.replace(b";tag=", b";tog=", 1))
    resp = caller.final(invite, first)
    assert resp.status == 400
    caller.ack(invite, resp)


@case
def mangled_bytes(caller: RawPhone) -> None:
    for mangle in (lambda b: b[: len(b) // 2], lambda b: b.replace(b"\r\n", b"\r\n\x00", 3),
                   lambda b: b.replace(b"CSeq: 2", "CSeq: ²".encode())):
        caller.invite("102", GOOD, mangle=mangle)  # 102 is offline: nothing rings
        caller.backlog.clear()


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_found_inputs_leave_the_server_serving(server: ServerProcess, name: str) -> None:
    caller = RawPhone(server.port, "100")
    try:
        try:
            CASES[name](caller)
        except TimeoutError:
            pass  # a message too broken to answer: dropped, which is fine
        alive(server)
    finally:
        caller.close()


def test_bye_on_the_early_dialog_ends_the_call(server: ServerProcess,
                                               phones: tuple[RawPhone, RawPhone]) -> None:
    caller, callee = phones
    invite, _ = caller.invite("101", GOOD)
    inv = callee.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
    assert isinstance(inv, Request)
    callee.answer(inv, 180, headers=[("Contact", callee.contact)], to_tag="e1")
    ringing = caller.expect(lambda m: isinstance(m, Response) and m.status == 180)
    bye = Request("BYE", f"sip:101@127.0.0.1:{server.port}", [
        ("Via", caller.via()), ("Max-Forwards", "70"), ("From", invite.headers.get("From")),
        ("To", ringing.headers.get("To")), ("Call-ID", invite.call_id), ("CSeq", "3 BYE")])
    caller.send(bye)
    assert caller.response_to(bye).status == 200
    final = caller.response_to(invite)
    assert final.status == 487
    caller.ack(invite, final)
    cancel = callee.expect(lambda m: isinstance(m, Request) and m.method == "CANCEL")
    assert isinstance(cancel, Request)
    callee.answer(cancel, 200, to_tag="e1")
    callee.answer(inv, 487, to_tag="e1")
    alive(server)


def test_status_counts_no_fault_for_any_of_them(server: ServerProcess) -> None:
    st = status(server)
    assert st["faults"]["count"] == 0, st["faults"]
    assert st["counters"]["bad_messages"] > 0
    assert server.proc is not None and server.proc.poll() is None


@pytest.fixture
def idle_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own: its transaction table holds only what the test makes."""
    srv = make_server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_callee_whose_tcp_connection_is_gone_fails_at_once(idle_server: ServerProcess) -> None:
    server = idle_server
    callee = RawPhone(server.port, "102", transport="tcp")
    assert callee.register().status == 200
    callee.close()  # the phone's connection is gone, its registration is not
    caller = RawPhone(server.port, "100", transport="tcp")
    try:
        start = time.monotonic()
        invite, first = caller.invite("102", GOOD)
        final = caller.final(invite, first, timeout=2.0)
        assert time.monotonic() - start < 2.0
        assert final.status == 480, final  # the device is unreachable (its fork got 503)
        caller.ack(invite, final)
        deadline = time.monotonic() + 10
        while any(status(server)["transactions"].values()):
            assert time.monotonic() < deadline, status(server)["transactions"]
            time.sleep(0.2)
    finally:
        caller.close()
    st = status(server)
    assert st["counters"]["transport_failures"] >= 1
    alive(server)


def test_crlf_keepalives_over_udp_are_counted_as_such_not_as_bad(server: ServerProcess) -> None:
    import socket
    before = status(server)["counters"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for ping in (b"\r\n\r\n", b"\r\n"):
            s.sendto(ping, ("127.0.0.1", server.port))
    alive(server)  # after our pings, in order on the same socket
    after = status(server)["counters"]
    assert after["keepalives"] == before["keepalives"] + 2
    assert after["bad_messages"] == before["bad_messages"]
