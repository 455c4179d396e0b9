"""The RFC 6665 notifier without sockets: subscriptions, NOTIFY pacing, the end, restarts."""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from minisip.config.schema import Subscriptions, specs
from minisip.pbx.events.framework import (
    MAX_NOTIFY_RATE,
    DelayHistogram,
    Notifier,
    SubState,
    SubscriptionPolicy,
    parse_event_untrusted,
)
from minisip.pbx.events.service import may_watch
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response

from tests.pbx.events_helpers import PEER, FakeCore, subscribe, users


class Board:
    """A test package: one number per resource."""
    event = "board"
    content_type = "text/plain"

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def body(self, resource: str, version: int) -> bytes:
        return f"{resource}={self.values.get(resource, 0)} v{version}".encode()


class World:
    def __init__(self, policy: SubscriptionPolicy = SubscriptionPolicy(),
                 db: sqlite3.Connection | None = None, **user_fields: dict[str, Any]) -> None:
        self.core = FakeCore(users(**user_fields))
        self.policy = policy
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.board = Board()
        self.wall = 5000.0
        self.n = self.notifier(db)

    def notifier(self, db: sqlite3.Connection | None) -> Notifier:
        n = Notifier(self.core, self.core.identity, lambda: self.policy,
                     lambda w, r, e: may_watch(self.core.users, w, r, e),
                     lambda w: self.core.users[w].subscribe_all_presence, db,
                     lambda topic, event, data: self.events.append((event, data)),
                     wall=lambda: self.wall + (self.core.t - 1000.0))
        n.add_package(self.board)
        return n

    def subscribe(self, req: Request) -> Response:
        """The response to ``req``: returned, or sent before its NOTIFY."""
        answered = self.n.on_subscribe(req, PEER, self.core.t)
        if answered is not None:
            return answered
        resp = self.core.log[-2] if isinstance(self.core.log[-1], Request) else self.core.log[-1]
        assert isinstance(resp, Response)
        return resp

    def change(self, resource: str, value: int) -> None:
        self.board.values[resource] = value
        self.n.changed("board", resource)

    def notifies(self) -> list[Request]:
        return self.core.requests("NOTIFY")

    def answer_last(self, status: int = 200) -> None:
        self.core.sent[-1].answer(status)


def test_a_subscription_is_answered_200_then_notified_with_the_full_state() -> None:
    w = World()
    w.board.values["101"] = 7
    resp = w.subscribe(subscribe("102", "101", "board", 600))
    assert resp.status == 200 and resp.to_tag and resp.headers.get("Expires") == "600"
    assert resp.headers.get("Contact") == "<sip:101@192.0.2.1:5060>"
    assert [type(m).__name__ for m in w.core.log] == ["Response", "Request"]  # 200 first
    (notify,) = w.notifies()
    assert notify.uri == "sip:102@192.0.2.10:5062" and notify.body == b"101=7 v1"
    assert notify.headers.get("Event") == "board"
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.from_tag == resp.to_tag and notify.call_id == resp.call_id
    assert w.events[-1] == ("subscribed", {"watcher": "102", "user": "101", "event": "board",
                                           "users": ["102", "101"], "expires": 600})


@pytest.mark.parametrize(("asked", "status", "granted"), [
    (None, 200, "3600"), (30, 423, None), (60, 200, "60"), (99999, 200, "3600")])
def test_expires_is_negotiated_within_the_limits(asked: int | None, status: int,
                                                 granted: str | None) -> None:
    resp = World().subscribe(subscribe("102", "101", "board", asked))
    assert resp.status == status and resp.headers.get("Expires") == granted
    if status == 423:
        assert resp.headers.get("Min-Expires") == "60"


def test_an_unknown_package_gets_489_with_the_packages_served() -> None:
    w = World()
    resp = w.n.on_subscribe(subscribe("102", "101", "presence.winfo"), PEER, 0)
    assert resp is not None and resp.status == 489
    assert resp.headers.get("Allow-Events") == "board"


def test_the_event_header_is_read_strictly() -> None:
    assert parse_event_untrusted("Dialog ;id=7") == ("dialog", "7")
    for bad in (None, "", " ;id=1", "a b"):
        with pytest.raises(BadMessage):
            parse_event_untrusted(bad)


def test_a_notify_echoes_the_event_id() -> None:
    w = World()
    w.subscribe(subscribe("102", "101", "board;id=42"))
    assert w.notifies()[0].headers.get("Event") == "board;id=42"


def test_accept_without_the_package_body_type_gets_406() -> None:
    w = World()
    resp = w.n.on_subscribe(subscribe("102", "101", "board",
                                      headers=[("Accept", "application/pidf+xml")]), PEER, 0)
    assert resp is not None and resp.status == 406 and resp.headers.get("Accept") == "text/plain"
    assert w.subscribe(subscribe("102", "101", "board",
                                 headers=[("Accept", "text/*")])).status == 200


# -- who may see whom -------------------------------------------------------------------------
WATCH_CASES = [
    # watcher fields, resource fields, event, verdict
    ({}, {}, "presence", None),  # group 0 sees group 0
    ({"presence_group": 5}, {"presence_group": 5}, "dialog", None),
    ({"presence_group": 5}, {}, "presence", 403),
    ({}, {"presence_group": 5}, "dialog", 403),  # a group is closed to outsiders too
    ({"presence_group": 5, "subscribe_all_presence": True}, {"presence_group": 6}, "dialog",
     None),
    ({"subscribe_all_presence": True}, {}, "message-summary", 403),  # mailboxes: own only
]


@pytest.mark.parametrize(("watcher", "resource", "event", "verdict"), WATCH_CASES)
def test_who_may_watch_whom(watcher: dict[str, Any], resource: dict[str, Any], event: str,
                            verdict: int | None) -> None:
    table = users(**{"102": watcher, "101": resource})
    got = may_watch(table, "102", "101", event)
    assert (got[0] if got else None) == verdict


def test_users_watch_themselves_and_unknown_users_are_404() -> None:
    table = users(**{"101": {"presence_group": 3}})
    assert may_watch(table, "101", "101", "message-summary") is None
    assert may_watch(table, "101", "999", "presence") == (404, "No such user")


def test_refused_subscriptions_get_403() -> None:
    w = World(**{"102": {"presence_group": 2}})
    resp = w.n.on_subscribe(subscribe("102", "101", "board"), PEER, 0)
    assert resp is not None and resp.status == 403 and not w.notifies()


# -- limits ---------------------------------------------------------------------------------
def test_the_per_user_limit_refuses_with_403_but_not_operators() -> None:
    w = World(SubscriptionPolicy(max_per_user=2), **{"104": {"subscribe_all_presence": True}})
    for target in ("100", "101"):
        assert w.subscribe(subscribe("102", target, "board")).status == 200
    resp = w.n.on_subscribe(subscribe("102", "103", "board"), PEER, 0)
    assert resp is not None and resp.status == 403
    for target in ("100", "101", "102", "103"):
        assert w.subscribe(subscribe("104", target, "board")).status == 200


def test_the_global_limit_refuses_with_503() -> None:
    w = World(SubscriptionPolicy(max_total=2))
    w.subscribe(subscribe("100", "101", "board"))
    w.subscribe(subscribe("102", "101", "board"))
    resp = w.n.on_subscribe(subscribe("103", "101", "board"), PEER, 0)
    assert resp is not None and resp.status == 503 and resp.headers.get("Retry-After")


# -- pacing -----------------------------------------------------------------------------------
def test_news_during_a_notify_in_flight_waits_and_only_the_latest_state_goes() -> None:
    w = World()
    w.subscribe(subscribe("102", "101", "board"))
    w.change("101", 1)
    w.change("101", 2)
    assert len(w.notifies()) == 1  # the first is still unanswered
    w.answer_last()
    assert [n.body for n in w.notifies()] == [b"101=0 v1", b"101=2 v2"]
    assert [n.cseq[0] for n in w.notifies()] == [1, 2]
    w.answer_last()
    assert w.n.by_resource[("board", "101")].popitem()[1].state is SubState.ACTIVE


def test_the_rate_limit_holds_news_until_the_next_token() -> None:
    w = World(SubscriptionPolicy(notify_rate=2))
    w.subscribe(subscribe("102", "101", "board"))
    w.answer_last()
    w.change("101", 1)
    w.answer_last()  # two tokens spent: initial state and the first change
    w.change("101", 2)
    w.change("101", 3)
    assert len(w.notifies()) == 2
    w.core.advance(0.49)
    assert len(w.notifies()) == 2
    w.core.advance(0.02)  # 2 per second: the next token after 0.5 s
    assert [n.body[:5] for n in w.notifies()] == [b"101=0", b"101=1", b"101=3"]


def test_a_failed_notify_ends_the_subscription_without_a_word() -> None:
    w = World()
    w.subscribe(subscribe("102", "101", "board"))
    w.answer_last(481)
    w.change("101", 1)
    assert len(w.notifies()) == 1 and not w.n.by_dialog
    assert w.events[-1][0] == "unsubscribed" and w.n.failed == 1


# -- refresh and the end ------------------------------------------------------------------------
def _dialog(resp: Response) -> dict[str, Any]:
    return {"call_id": resp.call_id, "from_tag": resp.from_tag, "to_tag": resp.to_tag}


def test_a_refresh_is_answered_and_followed_by_a_notify() -> None:
    w = World()
    ok = w.subscribe(subscribe("102", "101", "board", 600))
    w.answer_last()
    w.core.advance(500)
    resp = w.subscribe(subscribe("102", "101", "board", 300, cseq=2, **_dialog(ok)))
    assert resp.status == 200 and resp.headers.get("Expires") == "300"
    assert w.notifies()[-1].headers.get("Subscription-State") == "active;expires=300"
    w.answer_last()
    w.core.advance(299)  # the refresh moved the expiry: not at 600 s
    assert len(w.n.by_dialog) == 1
    w.core.advance(2)
    assert w.notifies()[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not w.n.by_dialog


def test_expires_zero_ends_the_subscription_with_a_last_notify() -> None:
    w = World()
    ok = w.subscribe(subscribe("102", "101", "board"))
    w.answer_last()
    resp = w.subscribe(subscribe("102", "101", "board", 0, cseq=2, **_dialog(ok)))
    assert resp.status == 200
    assert w.notifies()[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    gone = w.n.on_subscribe(subscribe("102", "101", "board", 600, cseq=3, **_dialog(ok)),
                            PEER, 0)
    assert gone is not None and gone.status == 481


def test_an_end_waits_for_the_notify_in_flight() -> None:
    w = World()
    ok = w.subscribe(subscribe("102", "101", "board"))
    w.subscribe(subscribe("102", "101", "board", 0, cseq=2, **_dialog(ok)))
    assert len(w.notifies()) == 1
    w.core.sent[0].answer(200)
    assert w.notifies()[-1].headers.get("Subscription-State") == "terminated;reason=timeout"


def test_a_refresh_out_of_order_gets_500_and_unknown_dialogs_481() -> None:
    w = World()
    ok = w.subscribe(subscribe("102", "101", "board", cseq=5))
    late = w.n.on_subscribe(subscribe("102", "101", "board", cseq=5, **_dialog(ok)), PEER, 0)
    assert late is not None and late.status == 500
    stray = w.n.on_subscribe(subscribe("102", "101", "board", cseq=9, call_id="x",
                                       from_tag="y", to_tag="z"), PEER, 0)
    assert stray is not None and stray.status == 481


def test_a_fetch_tells_the_state_once_and_keeps_nothing() -> None:
    w = World()
    w.board.values["101"] = 4
    resp = w.subscribe(subscribe("102", "101", "board", 0))
    assert resp.status == 200 and resp.headers.get("Expires") == "0"
    (n,) = w.notifies()
    assert n.body == b"101=4 v1"
    assert n.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not w.n.by_dialog


def test_a_reload_that_takes_the_right_away_ends_with_rejected() -> None:
    w = World()
    w.subscribe(subscribe("102", "101", "board"))
    w.answer_last()
    w.core.users["102"] = replace(w.core.users["102"], presence_group=9)
    w.n.end_where(lambda s: None if may_watch(w.core.users, s.watcher, s.resource, s.event)
                  is None else "rejected")
    assert w.notifies()[-1].headers.get("Subscription-State") == "terminated;reason=rejected"


# -- restarts ---------------------------------------------------------------------------------
def test_subscriptions_survive_a_restart_and_resume_above_any_cseq_sent(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    w = World(db=db)
    ok = w.subscribe(subscribe("102", "101", "board", 600))
    w.answer_last()
    w.n.commit()
    for i in range(5):  # NOTIFYs after the save: not written
        w.change("101", i)
        w.answer_last()
    last = w.notifies()[-1].cseq[0]
    w.core.advance(10)
    w2 = World()
    w2.core.t = w.core.t
    w2.n = w2.notifier(db)
    assert len(w2.n.by_dialog) == 1 and not w2.notifies()
    w2.board.values["101"] = 9
    w2.core.advance(0)  # the timer loop's first pass resumes them
    (n,) = w2.notifies()
    assert n.call_id == ok.call_id and n.from_tag == ok.to_tag and n.body.startswith(b"101=9")
    assert n.cseq[0] > last
    resp = w2.subscribe(subscribe("102", "101", "board", 600, cseq=2, **_dialog(ok)))
    assert resp.status == 200  # the restored dialog takes refreshes


def test_the_restart_bound_uses_the_highest_rate_the_schema_allows() -> None:
    assert specs(Subscriptions)["notify_rate"].check.max == MAX_NOTIFY_RATE  # type: ignore[attr-defined]


def test_delays_are_measured_from_the_change_to_the_notify() -> None:
    w = World(SubscriptionPolicy(notify_rate=1))
    w.subscribe(subscribe("102", "101", "board"))
    w.answer_last()
    w.change("101", 1)  # out of tokens: waits a second
    w.core.advance(1.0)
    assert w.n.delays.n == 1 and w.n.delays.max == pytest.approx(1.0)


def test_the_histogram_quantiles() -> None:
    h = DelayHistogram()
    for ms in range(1, 101):
        h.add(ms / 1000)
    assert h.quantile(0.5) == pytest.approx(0.0501, abs=2e-4)
    assert h.quantile(0.99) == pytest.approx(0.0991, abs=2e-4)
    h.add(30.0)
    assert h.quantile(1.0) == 30.0


def test_a_restored_subscription_the_configuration_no_longer_allows_ends(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    w = World(db=db)
    w.subscribe(subscribe("102", "101", "board", 600))
    w.n.commit()
    w2 = World(**{"102": {"presence_group": 3}})  # edited while the server was down
    w2.core.t = w.core.t
    w2.n = w2.notifier(db)
    w2.core.advance(0)
    (n,) = w2.notifies()
    assert n.headers.get("Subscription-State") == "terminated;reason=rejected"
    assert not w2.n.by_dialog
