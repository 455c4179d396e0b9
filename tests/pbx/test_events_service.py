"""The events service wired to a fake PBX: calls and registrations become NOTIFYs."""
from __future__ import annotations

import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from minisip.config.schema import SystemConfig
from minisip.pbx.call import CallState
from minisip.pbx.events import EventService
from minisip.pbx.location import Binding, LocationService
from minisip.sip.message import Request, Response
from minisip.sip.peer import Peer

from tests.pbx.events_helpers import PEER, FakeCore, make_call, subscribe


class World:
    def __init__(self) -> None:
        self.core = FakeCore()
        self.snap = SimpleNamespace(users=self.core.users, system=SystemConfig())
        self.location = LocationService(None, on_state=lambda u, on: self.svc.user_state(u, on))
        self.calls = SimpleNamespace(display_for=lambda u: "", on_change=None, calls={})
        self.bus: list[tuple[str, str, dict[str, Any]]] = []
        self.svc = EventService(self.core, self.calls, self.location, lambda: self.snap, None,
                                lambda *e: self.bus.append(e))

    def watch(self, watcher: str, user: str, event: str) -> str:
        resp = self.svc.notifier.on_subscribe(subscribe(watcher, user, event), PEER, self.core.t)
        assert resp is None, resp
        self.ok()
        return self.core.requests("NOTIFY")[-1].call_id

    def ok(self) -> None:
        for s in self.core.sent:
            if s.req.method == "NOTIFY" and s.key is not None:
                s.answer(200)
                s.key = None

    def notifies(self, call_id: str) -> list[Request]:
        return [n for n in self.core.requests("NOTIFY") if n.call_id == call_id]

    def register(self, user: str) -> None:
        self.location.put(Binding(user, f"sip:{user}@192.0.2.30", time.time() + 600, None,
                                  "r", 1, Peer("udp", "192.0.2.30", 5060)))


def test_the_service_routes_its_methods_and_lists_its_packages() -> None:
    w = World()
    assert set(w.core.methods) == {"SUBSCRIBE", "PUBLISH", "MESSAGE"}
    owns = w.core.dialog_owners["SUBSCRIBE"]  # its refreshes come to it, not to the calls
    ok = w.svc.notifier.on_subscribe(subscribe("102", "101", "dialog"), PEER, 0)
    assert ok is None
    resp = w.core.log[0]
    assert isinstance(resp, Response) and resp.to_tag
    assert owns(subscribe("102", "101", "dialog", call_id=resp.call_id, from_tag=resp.from_tag,
                          to_tag=resp.to_tag, cseq=2))
    assert not owns(subscribe("102", "101", "dialog", call_id="in-a-call", to_tag="t"))
    assert w.core.allow_events == "dialog, presence, message-summary"
    assert w.calls.on_change == w.svc.call_changed


def test_a_call_and_a_registration_reach_dialog_and_presence_watchers_in_order() -> None:
    w = World()
    w.register("101")
    dialog, presence = w.watch("102", "101", "dialog"), w.watch("102", "101", "presence")
    for state in (CallState.RINGING, CallState.ANSWERED, CallState.TALKING, CallState.ENDED):
        w.calls.on_change(make_call(state))
        w.svc.commit()  # calls are read at the end of the batch
        w.ok()
    w.location.remove_all("101")
    w.ok()
    states = [n.body.split(b"<state>")[1][:5] if b"<state>" in n.body else b"idle"
              for n in w.notifies(dialog)]
    assert states == [b"idle", b"early", b"confi", b"termi"]
    basics = [(b"closed" if b"closed" in n.body else b"open",
               b"on-the-phone" in n.body) for n in w.notifies(presence)]
    assert basics == [(b"open", False), (b"open", True), (b"open", False), (b"closed", False)]


def test_the_event_stream_tells_user_states_and_subscriptions() -> None:
    w = World()
    w.register("101")
    w.watch("102", "101", "presence")
    w.calls.on_change(make_call(CallState.ANSWERED))
    w.svc.commit()
    told = [(e, d.get("user"), d.get("state")) for _, e, d in w.bus]
    assert ("user_presence", "101", "idle") in told
    assert ("subscribed", "101", None) in told
    assert ("user_presence", "101", "talking") in told
    assert all(topic == "presence" for topic, _, _ in w.bus)


def test_the_overview_shows_states_and_who_watches_whom() -> None:
    w = World()
    w.register("101")
    w.watch("102", "101", "dialog")
    w.watch("102", "102", "message-summary")
    w.calls.on_change(make_call(CallState.RINGING))
    w.svc.commit()
    view = {u["user"]: u for u in w.svc.overview()}
    assert view["101"]["state"] == "ringing" and view["101"]["presence"] == "open"
    assert view["100"]["state"] == "offline"
    assert [x["user"] for x in view["101"]["watched_by"]] == ["102"]
    assert sorted(x["event"] for x in view["102"]["watches"]) == ["dialog", "message-summary"]
    assert [u["user"] for u in w.svc.overview("101")] == ["101"]


def test_mwi_changes_reach_the_mailbox_watchers() -> None:
    w = World()
    mwi = w.watch("101", "101", "message-summary")
    w.svc.mailbox_counts = lambda user: (1, 0)
    w.svc.mwi_changed("101")
    assert w.notifies(mwi)[-1].body.startswith(b"Messages-Waiting: yes")


def test_a_reload_ends_subscriptions_to_deleted_users_and_lost_rights() -> None:
    w = World()
    gone = w.watch("102", "101", "presence")
    moved = w.watch("103", "100", "dialog")
    kept = w.watch("104", "100", "dialog")
    users = dict(w.core.users)
    del users["101"]
    users["103"] = replace(users["103"], presence_group=4)
    w.svc.reloaded(SimpleNamespace(users=users))
    assert w.notifies(gone)[-1].headers.get("Subscription-State") == \
        "terminated;reason=noresource"
    assert w.notifies(moved)[-1].headers.get("Subscription-State") == \
        "terminated;reason=rejected"
    assert len(w.notifies(kept)) == 1


def test_a_batch_shows_where_a_call_ends_up_not_the_steps_between() -> None:
    """Answering unrings everyone first, then records who answered: one message."""
    w = World()
    lamp = w.watch("102", "101", "dialog")
    call = make_call(CallState.RINGING)
    w.calls.on_change(call)
    w.svc.commit()
    w.ok()
    call.ringing_users.clear()  # unrung...
    w.calls.on_change(call)
    call.answered_user, call.state = "101", CallState.ANSWERED  # ...and answered: one batch
    w.calls.on_change(call)
    w.svc.commit()
    states = [n.body.split(b"<state>")[1][:5] for n in w.notifies(lamp)[1:]]
    assert states == [b"early", b"confi"]


def test_do_not_disturb_set_by_a_reload_is_presence_news() -> None:
    w = World()
    w.register("101")
    sub = w.watch("102", "101", "presence")
    users = dict(w.core.users)
    users["101"] = replace(users["101"], do_not_disturb=True)
    w.snap.users = users
    w.svc.reloaded(w.snap)
    assert b"<rpid:busy/>" in w.notifies(sub)[-1].body


def unwatched_world() -> World:
    """No listener on the control socket's presence topic: only watchers count."""
    w = World()
    w.svc.wants = lambda topic: False
    return w


def test_the_calls_of_users_nobody_watches_are_not_kept() -> None:
    w = unwatched_world()
    w.register("101")
    call = make_call(CallState.RINGING)
    w.calls.calls[call.key] = call
    w.calls.on_change(call)
    w.svc.commit()
    assert w.svc.dialogs.views == {} and not w.svc.dialogs.kept
    # ...yet whoever asks sees them, found from the live calls
    view = {u["user"]: u for u in w.svc.overview()}
    assert view["101"]["state"] == "ringing"
    assert [c["state"] for c in view["101"]["calls"]] == ["early"]
    assert w.svc.dialogs.views == {}


def test_a_watcher_arriving_mid_call_sees_the_call_then_its_changes() -> None:
    w = unwatched_world()
    call = make_call(CallState.RINGING)
    w.calls.calls[call.key] = call
    w.calls.on_change(call)
    w.svc.commit()
    lamp = w.watch("102", "101", "dialog")
    call.state, call.answered_user, call.ringing_users = CallState.TALKING, "101", set()
    w.calls.on_change(call)
    w.svc.commit()
    states = [n.body.split(b"<state>")[1][:5] for n in w.notifies(lamp)]
    assert states == [b"early", b"confi"]
    assert w.svc.dialogs.kept == {"101"}  # the caller, 100, is still watched by nobody


def test_a_user_no_longer_watched_is_dropped_and_found_afresh_later() -> None:
    w = unwatched_world()
    w.register("101")
    sub = w.watch("102", "101", "presence")
    call = make_call(CallState.RINGING)
    w.calls.calls[call.key] = call
    w.calls.on_change(call)
    w.svc.commit()
    w.svc.notifier.on_subscribe(subscribe("102", "101", "presence", call_id=sub,
                                          from_tag=w.notifies(sub)[0].to_tag,
                                          to_tag=w.notifies(sub)[0].from_tag, cseq=2,
                                          expires=0), PEER, w.core.t)
    assert w.notifies(sub)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    w.core.sent[-1].key = None  # (a last NOTIFY is not waited for)
    call.state, call.answered_user, call.ringing_users = CallState.TALKING, "101", set()
    w.calls.on_change(call)
    w.svc.commit()
    assert w.svc.dialogs.views == {} and not w.svc.presence._docs  # nothing kept
    again = w.watch("102", "101", "presence")
    assert b"on-the-phone" in w.notifies(again)[0].body  # not the document of before


def test_a_listener_on_the_presence_topic_hears_every_user() -> None:
    w = unwatched_world()
    w.register("101")
    listening = False
    w.svc.wants = lambda topic: listening
    call = make_call(CallState.RINGING)
    w.calls.calls[call.key] = call
    w.calls.on_change(call)
    w.svc.commit()
    assert not [e for e in w.bus if e[1] == "user_presence"]
    listening = True
    call.state, call.answered_user, call.ringing_users = CallState.TALKING, "101", set()
    w.calls.on_change(call)
    w.svc.commit()
    told = {(d["user"], d["state"]) for _, e, d in w.bus if e == "user_presence"}
    assert ("101", "talking") in told
