"""Busy lamps through the whole server wiring (tests/pbx/harness.py): the dialog
package keeps the calls of watched users only, and a watcher arriving mid-call is
shown the call from the controller's live calls."""
from __future__ import annotations

from pathlib import Path

from tests.pbx.harness import Harness, Phone
from tests.pbx.test_calls_inprocess import registered


def subscribe_dialog(watcher: Phone, user: str) -> str:
    """``watcher`` subscribes to ``user``'s dialog state (answering the 407); its Call-ID."""
    resp = watcher.out_of_dialog("SUBSCRIBE", f"sip:{user}@{watcher.domain}", [
        ("Contact", watcher.contact), ("Event", "dialog"), ("Expires", "600")])
    assert resp.status == 200, resp
    return resp.call_id


def lamp(watcher: Phone, call_id: str) -> list[bytes]:
    """The dialog states in the subscription's NOTIFYs since the last look (each
    answered 200, which lets the next one leave)."""
    notifies = [n for n in watcher.requests("NOTIFY") if n.call_id == call_id]
    watcher.inbox = [m for m in watcher.inbox if m not in notifies]
    for n in notifies:
        watcher.answer(n)
    return [n.body.split(b"<state>")[1][:5] if b"<state>" in n.body else b"idle"
            for n in notifies]


def test_a_watcher_arriving_mid_call_sees_it_then_its_changes(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    alice, bob, carol = registered(h, "100", "101", "102")
    call = alice.call("101")
    leg = bob.incoming()
    assert leg is not None
    leg.respond(180)
    events = h.server.events
    assert events.dialogs.views == {}  # nobody watches 100 or 101: nothing is kept
    assert {u["user"]: u["state"] for u in events.overview()}["101"] == "ringing"
    watch = subscribe_dialog(carol, "101")
    assert lamp(carol, watch) == [b"early"]  # the call, found among the live ones
    leg.answer()
    call.ack()
    assert lamp(carol, watch) == [b"confi"]
    assert set(events.dialogs.views) == {"101"}  # still nothing of 100's
    call.bye()
    assert lamp(carol, watch) == [b"termi"]
    h.settle()
    h.close()
