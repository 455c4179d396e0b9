"""The B2BUA in process (tests/pbx/harness.py): calls, their endings, their records.

Each test plays phones against the PBX core as ``minisip serve`` wires it, moves a
fake clock, and ends by checking that nothing is left behind.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minisip.sip.message import Request, Response
from tests.pbx.harness import Harness, Phone, UacCall, UasCall


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def make(tmp_path: Path, **kw: Any) -> Harness:
    return Harness(tmp_path, **kw)


def registered(h: Harness, *users: str, transport: str = "udp") -> list[Phone]:
    phones = [h.phone(u, transport=transport) for u in users]
    for p in phones:
        assert p.register().status == 200
    return phones


def answered(h: Harness) -> tuple[Phone, Phone, UacCall, UasCall]:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    leg = bob.incoming()
    assert leg is not None
    leg.ring()
    leg.answer()
    final = call.final()
    assert final is not None and final.status == 200
    call.ack()
    return alice, bob, call, leg


def current(call: UacCall) -> list[Response]:
    """The responses to the call's current INVITE (not the 407 before it)."""
    return [r for r in call.responses() if r.cseq[0] == call.cseq]


def statuses(msgs: list[Response]) -> list[int]:
    return [r.status for r in msgs]


def idle(h: Harness) -> None:
    h.settle()
    assert h.leftovers() == {}, h.leftovers()


# -- whole calls ------------------------------------------------------------------------

def test_a_call_rings_answers_talks_and_the_caller_hangs_up(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    assert statuses(current(call)) == [100, 180, 200]
    assert list(h.calls.calls.values())[0].state.value == "talking"
    assert h.calls.user_state("100") == "talking" and h.calls.live()[0]["caller"] == "100"
    bye = call.bye()
    assert bye is not None and statuses(call.responses("BYE")) == [200]
    assert bob.requests("BYE")  # relayed to the callee's device
    idle(h)
    cdrs = h.server.cdr.query(user="100")
    assert {(c["kind"], c["status"], c["cause"], c["released_by"]) for c in cdrs} == {
        ("O", 200, "normal", "caller"), ("T", 200, "normal", "caller")}
    assert h.server.cdr.query(since=0, limit=1)


def test_the_callee_hangs_up(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    leg.bye()
    assert [r.method for r in alice.requests()] == ["BYE"]
    idle(h)
    assert h.server.cdr.query()[0]["released_by"] == "callee"


def test_forked_call_answered_on_one_device_cancels_the_other(h: Harness) -> None:
    alice, desk, mobile = registered(h, "100", "101", "101")
    call = alice.call("101")
    d, m = desk.incoming(), mobile.incoming()
    assert d is not None and m is not None
    d.ring()
    m.ring()
    m.answer()
    assert [r.method for r in desk.requests()] == ["INVITE", "CANCEL"]
    cancel = desk.requests("CANCEL")[0]
    assert "completed elsewhere" in (cancel.headers.get("Reason") or "")
    desk.answer(cancel, 200)
    d.respond(487)
    call.ack()
    call.bye()
    idle(h)


def test_the_best_failure_of_all_forks_reaches_the_caller(h: Harness) -> None:
    alice, desk, mobile = registered(h, "100", "101", "101")
    call = alice.call("101")
    desk.incoming().respond(404)  # type: ignore[union-attr]
    mobile.incoming().respond(486)  # type: ignore[union-attr]
    final = call.final()
    assert final is not None and final.status == 486
    call.ack()
    idle(h)
    assert h.server.cdr.query()[0]["cause"] == "busy"


def test_a_6xx_ends_the_search_and_cancels_the_rest(h: Harness) -> None:
    alice, desk, mobile = registered(h, "100", "101", "101")
    call = alice.call("101")
    desk.incoming().ring()  # type: ignore[union-attr]
    mobile.incoming().respond(603)  # type: ignore[union-attr]
    assert call.final().status == 486  # type: ignore[union-attr]  # declined reads as busy
    assert desk.requests("CANCEL")
    call.ack()
    idle(h)


def test_nobody_answers_then_480_and_the_devices_are_cancelled(tmp_path: Path) -> None:
    h = make(tmp_path, users={"101": {"no_answer_time": 10}})
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    bob.incoming().ring()  # type: ignore[union-attr]
    h.advance(9)
    assert call.final() is None
    h.advance(2)
    assert call.final().status == 480  # type: ignore[union-attr]
    assert bob.requests("CANCEL")
    call.ack()
    idle(h)
    h.close()


def test_the_caller_cancels(h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    call.cancel()  # before any provisional: the PBX waits for one to CANCEL (RFC 3261 9.1)
    assert statuses(call.responses("CANCEL")) == [200]
    assert call.final().status == 487  # type: ignore[union-attr]
    assert not bob.requests("CANCEL")
    bob.incoming().ring()  # type: ignore[union-attr]
    assert bob.requests("CANCEL")
    call.ack()
    idle(h)
    assert h.server.cdr.query()[0]["cause"] == "cancelled"


def test_a_cancel_for_no_call_is_481(h: Harness) -> None:
    alice, = registered(h, "100")
    call = UacCall(alice, "101", b"", [])
    call.invite = Request("INVITE", call.uri, [("Via", alice.via())])
    call.cancel()
    assert statuses(call.responses("CANCEL")) == [481]


def test_max_duration_hangs_up_both_sides(tmp_path: Path) -> None:
    h = make(tmp_path, users={"100": {"max_duration": 30}})
    alice, bob, call, leg = answered(h)
    h.advance(31)
    assert alice.requests("BYE") and bob.requests("BYE")
    idle(h)
    assert h.server.cdr.query()[0]["cause"] == "max duration"
    h.close()


def test_a_2xx_never_acked_is_resent_then_the_call_is_released(h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    bob.incoming().answer()  # type: ignore[union-attr]
    h.advance(4 * h.t1)
    assert statuses(call.responses()).count(200) >= 3  # RFC 3261 13.3.1.4
    h.advance(64 * h.t1)
    assert bob.requests("BYE")
    idle(h)
    assert h.server.cdr.query()[0]["cause"] == "no ACK"


def test_an_offerless_invite_takes_the_answer_from_the_callers_ack(h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101", body=b"")
    leg = bob.incoming()
    assert leg is not None and leg.invite.body == b""
    leg.answer()  # the offer is in the 200
    assert not bob.requests("ACK")  # minisip waits for the caller's answer
    call.ack(alice.sdp())
    acks = bob.requests("ACK")
    assert len(acks) == 1 and b"m=audio" in acks[0].body
    call.bye()
    idle(h)


def test_a_second_2xx_from_the_answering_device_gets_its_own_bye(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    other = UasCall(bob, leg.invite)  # another dialog from behind the device
    other.answer()
    assert len(bob.requests("BYE")) == 1
    call.bye()
    idle(h)


# -- mid-call ---------------------------------------------------------------------------

def test_a_reinvite_gets_one_100_trying_and_its_answer(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    call.request("INVITE", alice.sdp(direction="sendonly"))
    relayed = [r for r in bob.requests("INVITE") if r.to_tag]
    assert relayed and b"a=sendonly" in relayed[-1].body
    bob.answer(relayed[-1], 100)  # the far end's own 100: not relayed again
    bob.answer(relayed[-1], 200, body=bob.sdp(direction="recvonly"))
    resp = call.responses()
    assert statuses([r for r in resp if r.cseq[0] == call.cseq]) == [100, 200]
    call.ack()
    assert len([a for a in bob.requests("ACK")]) == 2  # the first answer's and this one's
    call.bye()
    idle(h)


def test_info_and_update_are_relayed_both_ways(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    call.request("INFO", b"Signal=5\r\nDuration=160\r\n",
                 [("Content-Type", "application/dtmf-relay")])
    info = bob.requests("INFO")[-1]
    assert info.body == b"Signal=5\r\nDuration=160\r\n"
    bob.answer(info, 200)
    assert statuses(call.responses("INFO")) == [200]
    leg.request("UPDATE", bob.sdp())
    update = alice.requests("UPDATE")[-1]
    alice.answer(update, 200, body=alice.sdp())
    assert statuses(bob.responses(method="UPDATE")) == [200]
    call.request("PRACK")
    assert statuses(call.responses("PRACK")) == [200]
    call.bye()
    idle(h)


def test_a_request_the_far_end_never_answers_gets_408(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    call.request("INFO", b"x", [("Content-Type", "text/plain")])
    h.advance(64 * h.t1 + 1)
    assert statuses(call.responses("INFO")) == [408]
    call.bye()
    idle(h)


def test_reliable_provisionals_are_pracked_once_and_a_bad_rseq_not_at_all(h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    leg = bob.incoming()
    assert leg is not None
    leg.respond(183, bob.sdp(), reliable=True)
    assert len(bob.requests("PRACK")) == 1
    bob.answer(bob.requests("PRACK")[0], 200)
    leg.respond(180, headers=[("Require", "100rel"), ("RSeq", "\u00b2")])
    assert len(bob.requests("PRACK")) == 1 and h.faults.count == 0
    leg.answer()
    call.ack()
    call.bye()
    idle(h)


def test_a_bye_on_the_early_dialog_ends_the_call_with_487(h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    bob.incoming().ring()  # type: ignore[union-attr]
    call.bye()
    assert statuses(call.responses("BYE")) == [200]
    assert call.final().status == 487  # type: ignore[union-attr]
    assert bob.requests("CANCEL")
    call.ack()
    idle(h)


def test_a_lost_ack_is_resent_when_the_2xx_comes_again(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    ok = bob.responses  # the 200 the device sent, again: the PBX ACKs it again
    leg.answer()
    assert len(bob.requests("ACK")) == 2
    assert ok is not None
    call.bye()
    idle(h)


# -- routing: RFC 3261 12 --------------------------------------------------------------------

def test_dialog_creating_responses_copy_record_route_and_requests_follow_the_route(
        h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    proxy = h.phone("proxy", host="198.51.100.250", port=5070)
    rr = "<sip:198.51.100.250:5070;lr>"
    call = alice.call("101", headers=[("Record-Route", rr)])
    leg = bob.incoming()
    assert leg is not None
    leg.ring()
    leg.answer()
    for r in call.responses():
        if r.status in (180, 200):
            assert r.headers.get_all("Record-Route") == [rr]
    call.ack()
    leg.bye()  # the PBX's BYE to the caller goes to the proxy, not to where alice sent from
    assert not alice.requests("BYE")
    bye = proxy.requests("BYE")
    assert len(bye) == 1 and bye[0].headers.get("Route") == rr
    assert bye[0].uri == str(alice.contact).strip("<>")
    proxy.answer(bye[0], 200)
    idle(h)


def test_a_callee_target_refresh_moves_in_dialog_requests(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    moved = h.phone("101", host=bob.peer.host, port=5099)
    assert leg.dialog is not None
    leg.dialog.contact = moved.contact
    leg.request("INVITE", bob.sdp())
    alice.answer(alice.requests("INVITE")[-1], 200, body=alice.sdp())
    call.ack()
    call.bye()
    assert moved.requests("BYE") and not bob.requests("BYE")
    idle(h)


# -- transport failures: RFC 3261 8.1.3.1 ------------------------------------------------------

def test_a_device_whose_connection_is_gone_fails_at_once(h: Harness) -> None:
    alice, = registered(h, "100")
    bob, = registered(h, "101", transport="tcp")
    h.connected.discard(bob.peer)  # the connection closed; the registration stays
    call = alice.call("101")
    # RFC 3261 8.1.3.1: the B-leg hears 503; the plan reads it as unreachable: 480
    assert call.final().status == 480  # type: ignore[union-attr]
    assert h.layer.counters.transport_failures == 1
    call.ack()
    idle(h)


def test_the_other_device_still_rings_when_one_cannot_be_reached(h: Harness) -> None:
    alice, desk = registered(h, "100", "101")
    mobile, = registered(h, "101", transport="tcp")
    h.unreachable.add(desk.peer)  # a send error on UDP (no route to host)
    call = alice.call("101")
    assert call.final() is None and statuses(current(call)) == [100]
    mobile.incoming().answer()  # type: ignore[union-attr]
    assert call.final().status == 200  # type: ignore[union-attr]
    h.unreachable.clear()
    call.ack()
    call.bye()
    idle(h)


def test_a_device_connection_lost_while_ringing_fails_its_fork(h: Harness) -> None:
    alice, = registered(h, "100")
    bob, = registered(h, "101", transport="tcp")
    call = alice.call("101")
    bob.incoming().ring()  # type: ignore[union-attr]
    h.disconnect(bob)
    assert call.final().status == 480  # type: ignore[union-attr]
    call.ack()
    idle(h)


def test_a_caller_whose_connection_is_lost_while_ringing_is_released(h: Harness) -> None:
    alice, = registered(h, "100", transport="tcp")
    bob, = registered(h, "101")
    alice.call("101")
    bob.incoming().ring()  # type: ignore[union-attr]
    h.disconnect(alice)
    assert bob.requests("CANCEL")
    idle(h)
    assert h.server.cdr.query()[0]["cause"] == "caller unreachable"


# -- admission ---------------------------------------------------------------------------------

@pytest.mark.parametrize("number, status", [("101", 480), ("555", 404), ("9123", 503)])
def test_calls_that_cannot_ring(h: Harness, number: str, status: int) -> None:
    alice, = registered(h, "100")
    call = alice.call(number)
    assert call.final().status == status  # type: ignore[union-attr]
    call.ack()
    idle(h)


def test_wrong_password_and_impersonation_are_refused(h: Harness) -> None:
    alice, = registered(h, "100")
    mallory = h.phone("100", password="wrong")
    assert mallory.call("101").final().status == 407  # type: ignore[union-attr]
    bob = h.phone("101")
    call = UacCall(bob, "102", bob.sdp(), [])
    call.local = "<sip:100@minisip>"  # From says 100, credentials say 101
    call.invite_()
    call.authenticate(call.final())  # type: ignore[arg-type]
    assert call.final().status == 403  # type: ignore[union-attr]


def test_call_limits(tmp_path: Path) -> None:
    h = make(tmp_path, users={"101": {"max_concurrent_calls": 1},
                              "102": {"max_concurrent_outgoing_calls": 0}})
    alice, bob, call, leg = answered(h)
    carol, = registered(h, "102")
    assert carol.call("100").final().status == 403  # type: ignore[union-attr]
    dave = h.phone("100")
    assert dave.call("101").final().status == 486  # type: ignore[union-attr]
    call.bye()
    idle(h)
    h.close()


def test_a_repeated_invite_of_a_live_call_is_a_loop(h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101")
    call.invite_()  # same Call-ID, new transaction
    assert statuses(call.responses())[-1] == 482
    call.cancel()
    bob.incoming().ring()  # type: ignore[union-attr]
    idle(h)


# -- what every request passes first: RFC 3261 8.2 ---------------------------------------------

def raw(h: Harness, phone: Phone, method: str, to_tag: str = "",
        headers: list[tuple[str, str]] | None = None) -> Response:
    tag = f";tag={to_tag}" if to_tag else ""
    req = Request(method, "sip:101@minisip", [
        ("Via", phone.via()), ("Max-Forwards", "70"), ("From", "<sip:100@minisip>;tag=f1"),
        ("To", f"<sip:101@minisip>{tag}"), ("Call-ID", f"raw-{method}-{to_tag}"),
        ("CSeq", f"1 {method}"), ("Contact", phone.contact), *(headers or [])])
    phone.send(req)
    return phone.responses(req.call_id)[-1]


@pytest.mark.parametrize("method, status", [
    ("VITE", 501), ("E", 501), ("FOO", 501),  # not a substring of Allow: unknown
    ("REFER", 403),  # a transfer moves a call its sender is part of (pbx/transfer.py)
    ("INFO", 481), ("UPDATE", 481), ("NOTIFY", 481), ("PRACK", 481), ("BYE", 481),
    ("OPTIONS", 200),
])
def test_methods_outside_a_dialog(h: Harness, method: str, status: int) -> None:
    resp = raw(h, h.phone("100"), method)
    assert resp.status == status
    allow = [m.strip() for m in (resp.headers.get("Allow") or "").split(",")]
    if status in (405, 501):
        assert method not in allow and "INVITE" in allow
        assert "MESSAGE" in allow  # the events service took it (pbx/events)


def test_a_service_taking_a_method_is_listed_in_allow(h: Harness) -> None:
    from minisip.sip.message import make_response, new_tag
    phone = h.phone("100")
    assert "REFER" in (raw(h, phone, "OPTIONS").headers.get("Allow") or "")  # transfers
    h.pbx.route_method("REFER", lambda req, peer, now: make_response(req, 202,
                                                                     to_tag=new_tag()))
    assert raw(h, phone, "REFER").status == 202
    assert "REFER" in (raw(h, phone, "OPTIONS").headers.get("Allow") or "")


def test_requests_naming_no_dialog_get_481_but_options_200(h: Harness) -> None:
    phone = h.phone("100")
    for method in ("INFO", "BYE", "INVITE"):
        assert raw(h, phone, method, to_tag="gone").status == 481
    assert raw(h, phone, "OPTIONS", to_tag="gone").status == 200


def test_supported_says_100rel_replaces_path_and_require_of_anything_else_is_420(
        h: Harness) -> None:
    phone = h.phone("100")
    ok = raw(h, phone, "OPTIONS")
    # replaces: pbx/pickup.py; path: the registrar (RFC 3327)
    assert ok.headers.get("Supported") == "100rel, replaces, path"
    refused = raw(h, phone, "INFO", headers=[("Require", "timer, 100rel")])
    assert refused.status == 420 and refused.headers.get("Unsupported") == "timer"


def test_a_sips_or_tel_request_uri_passes_other_schemes_get_416(h: Harness) -> None:
    phone = h.phone("100")
    req = Request("OPTIONS", "mailto:x@y", [
        ("Via", phone.via()), ("From", "<sip:100@minisip>;tag=1"), ("To", "<sip:x@y>"),
        ("Call-ID", "scheme"), ("CSeq", "1 OPTIONS")])
    phone.send(req)
    assert statuses(phone.responses("scheme")) in ([416], [400])


def test_crlf_keepalives_over_udp_are_not_bad_messages(h: Harness) -> None:
    phone = h.phone("100")
    for ping in (b"\r\n\r\n", b"\r\n", b""):
        h.deliver(ping, phone.peer)
    assert h.driver.keepalives == 3 and h.driver.bad_messages == 0
    assert not phone.inbox


def test_scanners_get_nothing(h: Harness) -> None:
    phone = h.phone("100")
    req = Request("OPTIONS", "sip:minisip", [
        ("Via", phone.via()), ("From", "<sip:100@minisip>;tag=1"), ("To", "<sip:minisip>"),
        ("Call-ID", "scan"), ("CSeq", "1 OPTIONS"), ("User-Agent", "friendly-scanner")])
    phone.send(req)
    assert not phone.inbox and h.pbx.scanners_dropped == 1


def test_a_password_guesser_is_blocked(h: Harness) -> None:
    guesser = h.phone("100", password="guess")
    for _ in range(10):
        assert guesser.register().status == 401
    assert guesser.register().status == 403
    assert h.server.guard.blocked >= 1
