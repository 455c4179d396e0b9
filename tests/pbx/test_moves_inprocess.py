"""Moving calls on the in-process harness (no sockets but the relay's): the messages a
transfer and a pick-up exchange, who the PBX counts as talking at each moment, and
that nothing is left behind (dialogs, branches, counters, timers) when all hang up."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from minisip.sip.message import Request
from minisip.sip.sdp import parse_sdp_untrusted
from tests.pbx.harness import Harness, Phone, UacCall, UasCall
from tests.pbx.test_calls_inprocess import registered


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, relay=True)
    yield harness
    harness.close()


def talk(h: Harness, caller: Phone, callee: Phone) -> tuple[UacCall, UasCall]:
    call = caller.call(callee.user)
    leg = callee.incoming()
    assert leg is not None
    leg.ring()
    leg.answer()
    call.ack()
    return call, leg


def new_requests(phone: Phone, method: str, seen: int = 0) -> list[Request]:
    return [r for r in phone.requests(method)[seen:]]


def sipfrags(phone: Phone) -> list[tuple[str, str]]:
    return [(r.body.decode().strip(), r.headers.get("Subscription-State") or "")
            for r in phone.requests("NOTIFY")]


def answer_reinvites(phone: Phone) -> list[Request]:
    """200 with the phone's SDP to every re-INVITE the PBX sent it; those re-INVITEs."""
    out = [r for r in phone.requests("INVITE") if r.to_tag]
    for r in out:
        phone.answer(r, 200, body=phone.sdp())
    return out


async def test_a_blind_transfer_moves_the_caller_and_releases_the_transferor(
        h: Harness) -> None:
    alice, bob, carol = registered(h, "100", "101", "102")
    call, leg = talk(h, alice, bob)
    assert h.calls.talking == {"100": 1, "101": 1}
    refer = leg.request("REFER", headers=[("Refer-To", "<sip:102@minisip>")])
    assert refer is not None
    assert [r.status for r in bob.responses(refer.call_id, "REFER")] == [202]
    assert sipfrags(bob) == [("SIP/2.0 100 Trying", "active;expires=60")]
    (reinvite,) = answer_reinvites(alice)  # alice to the new call's relay, one codec
    offer = parse_sdp_untrusted(reinvite.body).audio()
    assert offer is not None and offer.direction == "sendrecv"
    assert [offer.encoding(pt) for pt in offer.payload_types()] == [
        ("PCMU", 8000), ("telephone-event", 8000)]
    ring = carol.incoming()
    assert ring is not None and ring.invite.from_addr.uri.user == "100"
    assert h.calls.talking == {"100": 1, "101": 1}  # bob until he is released
    ring.answer()
    assert sipfrags(bob)[-1] == ("SIP/2.0 200 OK", "terminated;reason=noresource")
    assert h.calls.talking == {"100": 1, "101": 1, "102": 1}
    h.advance(3.0)  # the transferor's grace
    assert bob.requests("BYE"), "minisip releases the transferor"
    bob.answer(bob.requests("BYE")[-1])
    h.pump()
    assert h.calls.talking == {"100": 1, "102": 1}
    call.bye()
    h.settle()
    assert h.leftovers() == {}
    rows = sorted(h.server.cdr.query(), key=lambda r: r["id"])
    o_rows = [(r["caller"], r["final"], r["transferred_by"], r["transferred_to"])
              for r in rows if r["kind"] == "O"]
    assert o_rows == [("100", "101", "101", "102"), ("100", "102", "101", "")]


async def test_a_blind_transfer_refused_by_the_target_goes_back_to_the_transferor(
        h: Harness) -> None:
    alice, bob, carol = registered(h, "100", "101", "102")
    call, leg = talk(h, alice, bob)
    assert leg.request("REFER", headers=[("Refer-To", "<sip:102@minisip>")]) is not None
    answer_reinvites(alice)
    ring = carol.incoming()
    assert ring is not None
    ring.respond(486)
    assert sipfrags(bob)[-1] == ("SIP/2.0 486 Busy Here", "terminated;reason=noresource")
    assert answer_reinvites(bob), "bob is re-INVITEd to alice's new relay"
    h.pump()
    assert h.calls.talking == {"100": 1, "101": 1}
    assert len(h.calls.calls) == 1 and not bob.requests("BYE")
    call.bye()
    h.settle()
    assert h.leftovers() == {}


async def test_directed_pickup_answers_the_caller_and_cancels_the_ringing_device(
        h: Harness) -> None:
    alice, bob, carol = registered(h, "100", "101", "102")
    call = alice.call("101")
    ring = bob.incoming()
    assert ring is not None
    ring.ring()
    assert h.calls.ringing == {"101": 1}
    picker = carol.call("*40*101")
    assert picker.final() is not None and picker.final().status == 200  # type: ignore[union-attr]
    assert call.final() is not None and call.final().status == 200  # type: ignore[union-attr]
    cancel = bob.requests("CANCEL")
    assert cancel and "Call completed elsewhere" in (cancel[-1].headers.get("Reason") or "")
    bob.answer(cancel[-1])
    ring.respond(487)
    picker.ack()
    call.ack()
    assert h.calls.talking == {"100": 1, "102": 1} and h.calls.ringing == {}
    assert len(h.calls.calls) == 1  # the picker's own call joined alice's
    picker.bye()
    h.settle()
    assert h.leftovers() == {}
    (o_row,) = [r for r in h.server.cdr.query() if r["kind"] == "O"]
    assert o_row["final"] == "102" and "picked up by 102" in o_row["steps"]
