"""The event packages without sockets: dialog-info from calls, PIDF and PUBLISH, MWI."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisip.pbx.call import CallState
from minisip.pbx.events.dialog import DialogPackage
from minisip.pbx.events.framework import SubscriptionPolicy
from minisip.pbx.events.message_summary import MessageSummaryPackage
from minisip.pbx.events.presence import PresencePackage, Published, parse_pidf_untrusted
from minisip.sip.errors import BadMessage
from minisip.sip.message import Response

from tests.pbx.events_helpers import PEER, FakeCore, make_call, request

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}


def dialogs(pkg: DialogPackage, user: str, version: int = 1) -> list[dict[str, Any]]:
    root = ET.fromstring(pkg.body(user, version))
    assert root.get("state") == "full" and root.get("version") == str(version)
    assert root.get("entity") == f"sip:{user}@minisip"
    out = []
    for d in root.findall("d:dialog", NS):
        remote = d.find("d:remote/d:identity", NS)
        out.append({"state": d.findtext("d:state", namespaces=NS),
                    "direction": d.get("direction"), "call-id": d.get("call-id"),
                    "local-tag": d.get("local-tag"), "remote-tag": d.get("remote-tag"),
                    "remote": remote.text if remote is not None else None,
                    "display": remote.get("display") if remote is not None else None,
                    "held_here": d.find("d:local/d:target/d:param", NS) is not None,
                    "held_there": d.find("d:remote/d:target/d:param", NS) is not None})
    return out


def package() -> DialogPackage:
    return DialogPackage(lambda: "minisip", lambda u: {"100": "Alice"}.get(u, ""))


# (call state, the caller's dialog state, the callee's dialog state; None: no dialog)
DIALOG_STATES = [
    (CallState.ROUTING, "trying", None),
    (CallState.RINGING, "early", "early"),
    (CallState.ANSWERED, "confirmed", "confirmed"),
    (CallState.TALKING, "confirmed", "confirmed"),
]


@pytest.mark.parametrize(("state", "caller", "callee"), DIALOG_STATES)
def test_each_side_sees_the_call_state_as_rfc_4235_states(state: CallState, caller: str,
                                                          callee: str | None) -> None:
    pkg = package()
    pkg.update(make_call(state))
    assert [d["state"] for d in dialogs(pkg, "100")] == [caller]
    assert [d["state"] for d in dialogs(pkg, "101")] == ([callee] if callee else [])


def test_a_ringing_dialog_carries_what_directed_pickup_needs() -> None:
    pkg = package()
    assert pkg.update(make_call(CallState.RINGING)) == {"100", "101"}
    (d,) = dialogs(pkg, "101")
    assert d == {"state": "early", "direction": "recipient", "call-id": "call-1",
                 "local-tag": "our-tag", "remote-tag": "caller-tag", "remote": "sip:100@minisip",
                 "display": "Alice", "held_here": False, "held_there": False}
    (v,) = pkg.ringing("101")
    assert (v.call_id, v.local_tag, v.remote_tag, v.remote_user) == (
        "call-1", "our-tag", "caller-tag", "100")
    assert dialogs(pkg, "100")[0]["local-tag"] == "caller-tag"


def test_an_ended_call_is_reported_once_as_terminated_then_dropped() -> None:
    pkg = package()
    pkg.update(make_call(CallState.TALKING))
    assert pkg.update(make_call(CallState.ENDED)) == {"100", "101"}
    assert [d["state"] for d in dialogs(pkg, "101", 2)] == ["terminated"]
    pkg.prune()
    assert dialogs(pkg, "101", 3) == [] and pkg.activity("101") == "idle"
    assert not pkg.views


def test_a_call_that_ends_before_ringing_shows_the_callee_nothing() -> None:
    pkg = package()
    pkg.update(make_call(CallState.ROUTING))
    assert pkg.update(make_call(CallState.ENDED, answered="")) == {"100"}
    assert dialogs(pkg, "101") == []
    pkg.prune()
    assert not pkg.views and not pkg._users_of  # nothing of the call is left behind


def test_an_unchanged_view_is_no_news() -> None:
    pkg = package()
    pkg.update(make_call(CallState.ANSWERED))
    assert pkg.update(make_call(CallState.TALKING)) == set()


def test_users_rung_together_end_when_another_answers() -> None:
    pkg = package()
    pkg.update(make_call(CallState.RINGING, ringing=("101", "102")))
    assert [d["state"] for d in dialogs(pkg, "102")] == ["early"]
    changed = pkg.update(make_call(CallState.ANSWERED, answered="101"))
    assert changed == {"100", "101", "102"}
    assert [d["state"] for d in dialogs(pkg, "102", 2)] == ["terminated"]
    assert [d["state"] for d in dialogs(pkg, "101", 2)] == ["confirmed"]


def test_a_plan_step_that_moves_on_moves_the_lamps() -> None:
    """Follow-me, hunting: the call keeps ringing, the users rung change."""
    pkg = package()
    pkg.update(make_call(CallState.RINGING, ringing=("101",)))
    assert pkg.update(make_call(CallState.RINGING, ringing=("102",))) == {"101", "102"}
    assert [d["state"] for d in dialogs(pkg, "101")] == ["terminated"]
    assert [d["state"] for d in dialogs(pkg, "102")] == ["early"]
    pkg.prune()
    assert dialogs(pkg, "101") == [] and pkg.activity("102") == "ringing"


@pytest.mark.parametrize(("held_by", "user", "here", "there", "activity"), [
    ("A", "100", True, False, "on hold"), ("A", "101", False, True, "on hold"),
    ("", "101", False, False, "talking")])
def test_hold_shows_as_rendering_no_on_the_holders_target(held_by: str, user: str, here: bool,
                                                          there: bool, activity: str) -> None:
    pkg = package()
    pkg.update(make_call(CallState.TALKING, held_by=held_by))
    (d,) = dialogs(pkg, user)
    assert (d["state"], d["held_here"], d["held_there"]) == ("confirmed", here, there)
    assert pkg.activity(user) == activity


def test_activity_is_the_busiest_call() -> None:
    pkg = package()
    pkg.update(make_call(CallState.ROUTING))
    assert (pkg.activity("100"), pkg.activity("101")) == ("calling", "idle")
    pkg.update(make_call(CallState.RINGING))
    assert (pkg.activity("100"), pkg.activity("101")) == ("calling", "ringing")


# -- presence ----------------------------------------------------------------------------------
class PresenceWorld:
    def __init__(self) -> None:
        self.core = FakeCore()
        self.online: set[str] = {"101"}
        self.calls: dict[str, str] = {}
        self.changes: list[str] = []
        self.dnd: set[str] = set()
        self.pkg = PresencePackage(self.core, self.core.identity, lambda: "minisip",
                                   lambda: SubscriptionPolicy(),
                                   self.online.__contains__,
                                   lambda u: self.calls.get(u, "idle"), self.dnd.__contains__,
                                   self.changes.append)

    def publish(self, user: str = "101", body: bytes | None = None, *, etag: str | None = None,
                expires: int | None = 600, ctype: str = "application/pidf+xml",
                event: str = "presence", sender: str | None = None) -> Response:
        headers = [("Event", event)]
        if etag:
            headers.append(("SIP-If-Match", etag))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if body:
            headers.append(("Content-Type", ctype))
        resp = self.pkg.on_publish(request("PUBLISH", sender or user, user, headers=headers,
                                           body=body or b""), PEER, self.core.t)
        assert resp is not None
        return resp


def pidf(basic: str = "open", activities: str = "", note: str = "") -> bytes:
    return (f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:101@minisip">'
            f'<tuple id="a"><status><basic>{basic}</basic></status></tuple>'
            f'<person xmlns="urn:ietf:params:xml:ns:pidf:data-model"><rpid:activities>'
            f'{activities}</rpid:activities><note>{note}</note></person></presence>').encode()


COMPOSED = [
    # online, calls, published, expected (basic, activities, note)
    (False, "idle", None, ("closed", (), "Offline")),
    (True, "idle", None, ("open", (), "Available")),
    (True, "ringing", None, ("open", (), "Available")),
    (True, "talking", None, ("open", ("on-the-phone",), "On the phone")),
    (True, "on hold", None, ("open", ("on-the-phone",), "On hold")),
    (True, "idle", pidf("open", "<rpid:away/>", "Lunch"), ("open", ("away",), "Lunch")),
    (True, "talking", pidf("open", "<rpid:busy/>"), ("open", ("busy", "on-the-phone"),
                                                    "On the phone")),
    (True, "idle", pidf("closed", "", "Do not disturb"), ("closed", (), "Do not disturb")),
    (False, "idle", pidf("open", "<rpid:away/>"), ("closed", (), "Offline")),
]


def test_do_not_disturb_shows_as_busy() -> None:
    w = PresenceWorld()
    w.dnd.add("101")
    assert w.pkg.state("101") == ("open", ("busy",), "Do not disturb")
    w.calls["101"] = "talking"
    assert w.pkg.state("101") == ("open", ("busy", "on-the-phone"), "Do not disturb")


@pytest.mark.parametrize(("online", "calls", "published", "expected"), COMPOSED)
def test_presence_is_composed_from_registration_calls_and_publications(
        online: bool, calls: str, published: bytes | None,
        expected: tuple[str, tuple[str, ...], str]) -> None:
    w = PresenceWorld()
    if not online:
        w.online.clear()
    w.calls["101"] = calls
    if published is not None:
        w.online.add("101")
        assert w.publish(body=published).status == 200
        if not online:
            w.online.clear()
    assert w.pkg.state("101") == expected


def test_the_pidf_document_says_it_in_the_words_phones_read() -> None:
    w = PresenceWorld()
    w.calls["101"] = "talking"
    body = w.pkg.body("101", 1)
    root = ET.fromstring(body)
    assert root.get("entity") == "sip:101@minisip"
    assert root.findtext(".//{urn:ietf:params:xml:ns:pidf}basic") == "open"
    assert b"<rpid:on-the-phone/>" in body  # baresip matches this very text


def test_refresh_reports_only_real_changes() -> None:
    w = PresenceWorld()
    assert w.pkg.refresh("101") is True
    assert w.pkg.refresh("101") is False
    w.calls["101"] = "ringing"
    assert w.pkg.refresh("101") is False
    w.calls["101"] = "talking"
    assert w.pkg.refresh("101") is True


def test_publish_lifecycle_refresh_modify_remove() -> None:
    w = PresenceWorld()
    ok = w.publish(body=pidf("open", "<rpid:away/>"))
    etag = ok.headers.get("SIP-ETag")
    assert ok.status == 200 and etag and ok.headers.get("Expires") == "600"
    assert w.pkg.state("101")[1] == ("away",) and w.changes == ["101"]
    refreshed = w.publish(etag=etag, expires=300)  # no body: the same state, a new tag
    new = refreshed.headers.get("SIP-ETag")
    assert refreshed.status == 200 and new and new != etag
    assert w.publish(etag=etag).status == 412  # the old tag is gone
    assert w.publish(body=pidf("open", "<rpid:busy/>"), etag=new).status == 200
    assert w.pkg.state("101")[1] == ("busy",)
    etag = w.pkg.publications["101"].popitem()[0]
    w.pkg.publications["101"] = {}
    assert w.publish(etag=etag, expires=0).status == 412


def test_publish_removal_and_expiry() -> None:
    w = PresenceWorld()
    etag = w.publish(body=pidf("closed")).headers.get("SIP-ETag")
    assert w.pkg.state("101")[0] == "closed"
    assert w.publish(etag=etag, expires=0).status == 200
    assert w.pkg.state("101")[0] == "open" and not w.pkg.publications
    w.publish(body=pidf("closed"), expires=60)
    w.core.advance(61)
    assert w.pkg.state("101")[0] == "open"


@pytest.mark.parametrize(("kw", "status"), [
    ({"event": "dialog"}, 489), ({"sender": "102"}, 403), ({"user": "999", "sender": "101"}, 403),
    ({"ctype": "text/plain", "body": b"hi"}, 415), ({"body": None}, 400),
    ({"expires": 5}, 423), ({"body": b"<html/>"}, 400)])
def test_publish_refusals(kw: dict[str, Any], status: int) -> None:
    w = PresenceWorld()
    kw.setdefault("body", pidf())
    user = kw.pop("user", "101")
    try:
        assert w.publish(user, **kw).status == status
    except BadMessage as exc:
        assert (exc.status or 400) == status


def test_pidf_parsing_reads_what_phones_publish() -> None:
    assert parse_pidf_untrusted(pidf("closed", "<rpid:away/><rpid:meeting/>", "a &amp; b")) == \
        Published("closed", ("away", "meeting"), "a & b")
    assert parse_pidf_untrusted(b"<presence/>") == Published(None, (), "")


@given(st.binary(max_size=400))
def test_pidf_parsing_raises_only_badmessage(data: bytes) -> None:
    for body in (data, b"<presence>" + data, pidf().replace(b"open", data[:20])):
        try:
            parse_pidf_untrusted(body)
        except BadMessage:
            pass


def test_message_summary_reads_the_mailbox_counts() -> None:
    counts = {"101": (2, 5)}
    pkg = MessageSummaryPackage(lambda: "minisip", lambda u: counts.get(u, (0, 0)))
    assert pkg.body("101", 1) == (b"Messages-Waiting: yes\r\nMessage-Account: sip:101@minisip"
                                  b"\r\nVoice-Message: 2/5 (0/0)\r\n")
    assert pkg.body("102", 1).startswith(b"Messages-Waiting: no\r\n")


def test_activity_follows_many_calls_of_one_user() -> None:
    """A trunk or hunt-group user in hundreds of calls: the activity is kept per state
    as calls change (not found by walking them), and is idle once they are all gone."""
    pkg = package()
    calls = []
    for i in range(300):
        call = make_call(CallState.RINGING)
        call.a.invite = request("INVITE", "100", "101", from_tag=f"t{i}", call_id=f"c{i}")
        calls.append(call)
        pkg.update(call)
    assert (pkg.activity("100"), pkg.activity("101")) == ("calling", "ringing")
    for i, call in enumerate(calls):
        call.state, call.answered_user, call.ringing_users = CallState.TALKING, "101", set()
        call.holding = {"A"} if i % 2 else set()
        pkg.update(call)
    assert (pkg.activity("100"), pkg.activity("101")) == ("talking", "talking")
    for call in calls[::2]:  # the calls not on hold end: the others are
        call.state = CallState.ENDED
        pkg.update(call)
    pkg.prune()
    assert (pkg.activity("100"), pkg.activity("101")) == ("on hold", "on hold")
    for call in calls[1::2]:
        call.state = CallState.ENDED
        pkg.update(call)
    assert pkg.activity("101") == "idle"  # reported as terminated: no activity
    pkg.prune()
    assert pkg.views == {} and pkg._kinds == {} and pkg.activity("100") == "idle"
