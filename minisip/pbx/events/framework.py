"""The RFC 6665 notifier: subscriptions as dialogs, NOTIFYs paced per subscription.

Theory of operation
-------------------
A SUBSCRIBE without a To tag asks for a new subscription. The checks, in order:
the event package is known (else 489 with Allow-Events), the sender is
authenticated like a caller (407, 403), the watched user exists and the
watcher may see it (404, 403: the service decides), the watcher accepts the
package's body type (406), Expires is within the limits (423), and the
per-user and global limits leave room (403, 503). Then 200 with our To tag:
the dialog it makes carries every NOTIFY. A SUBSCRIBE with a To tag refreshes
its subscription (481 when there is none); Expires: 0 ends it, and on a new
SUBSCRIBE is a fetch: one NOTIFY, no subscription. Every accepted SUBSCRIBE is
followed at once by a NOTIFY with the full state (RFC 6665 4.2.1.2).

State changes reach subscriptions through ``changed()``. At most one NOTIFY of
a subscription is in flight: a change meanwhile marks it dirty, and the NOTIFY
sent when the response comes carries the latest state (two NOTIFYs in flight
on UDP could arrive swapped, and the phone would refuse the older CSeq). A
token bucket per subscription bounds the rate: ``notify_rate`` per second,
bursts of as many; out of tokens, the NOTIFY waits for the next token and again
carries the latest state. A NOTIFY answered with a failure, or not at all, ends
the subscription without another word (RFC 6665 4.2.2). Every other end
(expiry, Expires: 0, the user or the right to see it gone) is told with a last
NOTIFY: ``terminated;reason=...``.

A subscription's states and their legal moves are the table ``_TRANSITIONS``;
it moves only through ``_set_state``.

Subscriptions live in data_dir/registrations.db beside the bindings: written
when made, refreshed or ended, committed with the batch before its 200 leaves,
so they survive a restart. CSeqs and document versions are not written per
NOTIFY: the rate limit bounds how many NOTIFYs can have left since a row was
saved, so a restarted server resumes above that bound (CSeqs jump, never
repeat). After a restart each subscription gets a NOTIFY with the current state.
"""
from __future__ import annotations

import enum
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ...dialog.dialog import Dialog, DialogId
from ...sip.errors import BadMessage
from ...sip.message import Request, Response, make_response, new_tag
from ...sip.peer import Peer
from ..durable import transaction
from ..identity import Identity
from ..timers import Timer

log = logging.getLogger(__name__)

#: The highest notify_rate the configuration allows: the restart bound uses it, so a
#: reload that raised the rate after a row was saved cannot break the bound.
MAX_NOTIFY_RATE = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    call_id TEXT NOT NULL,
    local_tag TEXT NOT NULL,
    remote_tag TEXT NOT NULL,
    event TEXT NOT NULL,
    event_id TEXT NOT NULL,
    watcher TEXT NOT NULL,
    resource TEXT NOT NULL,
    local_uri TEXT NOT NULL,
    remote_uri TEXT NOT NULL,
    remote_target TEXT NOT NULL,
    route_set TEXT NOT NULL,
    local_cseq INTEGER NOT NULL,
    remote_cseq INTEGER,
    contact TEXT NOT NULL,
    transport TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    version INTEGER NOT NULL,
    saved_at REAL NOT NULL,
    PRIMARY KEY (call_id, local_tag, remote_tag)
)
"""


class SubState(enum.Enum):
    ACTIVE = "active"  #: nothing in flight; a NOTIFY goes as soon as there is news
    NOTIFYING = "notifying"  #: a NOTIFY is in flight: news waits for its response
    WAITING = "waiting"  #: out of tokens: news waits for the next one (a timer)
    TERMINATED = "terminated"  #: ended; no NOTIFY but the last


_TRANSITIONS: dict[SubState, frozenset[SubState]] = {
    SubState.ACTIVE: frozenset({SubState.NOTIFYING, SubState.WAITING, SubState.TERMINATED}),
    SubState.NOTIFYING: frozenset({SubState.ACTIVE, SubState.TERMINATED}),
    SubState.WAITING: frozenset({SubState.ACTIVE, SubState.TERMINATED}),
    SubState.TERMINATED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class SubscriptionPolicy:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_per_user: int = 100
    max_total: int = 10000
    notify_rate: int = 10


class Package(Protocol):
    """An event package: its name, its body type, the full state of a resource."""
    event: str
    content_type: str

    def body(self, resource: str, version: int) -> bytes: ...


#: The service's verdict on (watcher, resource, event): None, or (status, reason).
Authorize = Callable[[str, str, str], "tuple[int, str] | None"]


@dataclass(eq=False, slots=True)
class Subscription:
    event: str
    event_id: str
    watcher: str  #: the authenticated user whose phone subscribed
    resource: str  #: the user watched
    dialog: Dialog
    expires_at: float  #: wall clock
    state: SubState = SubState.ACTIVE
    version: int = 0  #: bumped per NOTIFY (dialog-info's version)
    dirty: bool = True  #: news not yet sent (a new subscription owes its first NOTIFY)
    changed_at: float | None = None  #: when the oldest unsent news happened (stats)
    tokens: float = 0.0
    refilled: float = float("-inf")
    inflight: object = None  #: the key of the NOTIFY in flight
    ending: str | None = None  #: the reason of the last NOTIFY still to send
    expiry: Timer | None = None
    token: Timer | None = None  #: while WAITING: when the next token comes

    @property
    def id(self) -> DialogId:
        return self.dialog.id

    @property
    def event_header(self) -> str:
        return f"{self.event};id={self.event_id}" if self.event_id else self.event

    def as_row(self, saved_at: float) -> tuple[object, ...]:
        d = self.dialog
        peer = d.peer or Peer("udp", "0.0.0.0", 0)
        return (d.call_id, d.local_tag, d.remote_tag, self.event, self.event_id,
                self.watcher, self.resource, d.local_uri, d.remote_uri, d.remote_target,
                "\n".join(d.route_set), d.local_cseq, d.remote_cseq, d.contact,
                peer.transport, peer.host, peer.port, self.expires_at, self.version, saved_at)


class DelayHistogram:
    """Delays from a state change to its NOTIFY, in 0.1 ms bins."""

    BIN = 1e-4
    BINS = 20_000  #: 2 s; slower ones share the last bin (``max`` keeps the worst)

    def __init__(self) -> None:
        self.counts = [0] * (self.BINS + 1)
        self.n = 0
        self.max = 0.0

    def add(self, delay: float) -> None:
        self.counts[min(self.BINS, max(0, int(delay / self.BIN)))] += 1
        self.n += 1
        if delay > self.max:
            self.max = delay

    def quantile(self, q: float) -> float:
        """The upper edge of the bin holding the q-quantile (seconds)."""
        if not self.n:
            return 0.0
        rank, seen = q * self.n, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return self.max if i == self.BINS else min(self.max, (i + 1) * self.BIN)
        return self.max


def parse_event_untrusted(value: str | None) -> tuple[str, str]:
    """(package, id parameter) of an Event header. Raises only BadMessage."""
    if value is None:
        raise BadMessage("Missing Event header")
    name, _, params = value.partition(";")
    package = name.strip().lower()
    if not package or not package.isascii() or any(c in package for c in " \t<>\""):
        raise BadMessage("Bad Event header")
    event_id = ""
    for p in params.split(";"):
        key, _, v = p.partition("=")
        if key.strip().lower() == "id":
            event_id = v.strip()
    return package, event_id


def accepts(req: Request, content_type: str) -> bool:
    """Does the SUBSCRIBE's Accept (if any) admit ``content_type``?"""
    values = [v.partition(";")[0].strip().lower() for v in req.headers.values("Accept")]
    values = [v for v in values if v]
    if not values:
        return True  # no Accept (or an empty one): the package's default body type
    major = content_type.partition("/")[0]
    return any(v in (content_type, "*/*", f"{major}/*") for v in values)


class Notifier:
    def __init__(self, core: Any, identity: Identity, policy: Callable[[], SubscriptionPolicy],
                 authorize: Authorize, unlimited: Callable[[str], bool],
                 db: sqlite3.Connection | None,
                 publish: Callable[[str, str, dict[str, Any]], None], *,
                 wall: Callable[[], float] = time.time) -> None:
        self.core = core
        self.identity = identity
        self.policy = policy
        self.authorize = authorize
        self.unlimited = unlimited  #: watchers exempt from max_per_user (operators)
        self.publish = publish
        self.packages: dict[str, Package] = {}
        self.by_dialog: dict[DialogId, Subscription] = {}
        self.by_resource: dict[tuple[str, str], dict[DialogId, Subscription]] = {}
        self.per_watcher: dict[str, int] = {}
        #: seconds the news waited before we saw it (the SIP socket's queue): set by the server
        self.lag: Callable[[], float] = lambda: 0.0
        #: told (event, resource) when the resource's last subscription to event ends
        self.unwatched: Callable[[str, str], None] = lambda event, resource: None
        self.delays = DelayHistogram()
        self.wall = wall  #: expiry is wall-clock time: it must mean the same after a restart
        self.sent = 0
        self.failed = 0
        self._dirty: dict[DialogId, Subscription | None] = {}
        self._db = db
        if db is not None:
            db.execute(_SCHEMA)
            self._load(db)

    def add_package(self, package: Package) -> None:
        self.packages[package.event] = package

    @property
    def allow_events(self) -> str:
        return ", ".join(self.packages)

    # -- state --------------------------------------------------------------------
    def _set_state(self, sub: Subscription, new: SubState) -> None:
        old = sub.state
        if new not in _TRANSITIONS[old]:
            raise RuntimeError(f"subscription {sub.id}: {old.name} -> {new.name}")
        log.debug("subscription %s %s/%s: %s -> %s", sub.watcher, sub.event, sub.resource,
                  old.name, new.name)
        sub.state = new

    # -- SUBSCRIBE ------------------------------------------------------------------
    def owns(self, req: Request) -> bool:
        """Is this request with a To tag in one of our subscriptions' dialogs?"""
        return (req.call_id, req.to_tag or "", req.from_tag or "") in self.by_dialog

    def on_subscribe(self, req: Request, peer: Peer, now: float) -> Response | None:
        if req.to_tag is not None:
            return self._refresh(req, peer, now)
        event, event_id = parse_event_untrusted(req.headers.get("Event"))
        package = self.packages.get(event)
        if package is None:
            return make_response(req, 489, to_tag=new_tag(),
                                 headers=[("Allow-Events", self.allow_events)])
        watcher = self.identity.sender(req, peer, now)
        if isinstance(watcher, Response):
            return watcher
        resource = req.request_uri.user or ""
        refusal = self.authorize(watcher, resource, event)
        if refusal is not None:
            return make_response(req, refusal[0], refusal[1], to_tag=new_tag())
        if not accepts(req, package.content_type):
            return make_response(req, 406, to_tag=new_tag(),
                                 headers=[("Accept", package.content_type)])
        policy = self.policy()
        expires = self._expires(req, policy)
        if isinstance(expires, Response):
            return expires
        if expires:
            if (self.per_watcher.get(watcher, 0) >= policy.max_per_user
                    and not self.unlimited(watcher)):
                return make_response(req, 403, "Subscription limit reached", to_tag=new_tag())
            if len(self.by_dialog) >= policy.max_total:
                return make_response(req, 503, "Too many subscriptions", to_tag=new_tag(),
                                     headers=[("Retry-After", "60")])
        contact = self.core.contact_for(peer, resource)
        resp = make_response(req, 200, to_tag=new_tag(),
                             headers=[("Expires", str(expires)), ("Contact", contact)])
        sub = Subscription(event, event_id, watcher, resource,
                           Dialog.as_uas(req, resp, peer, contact), self.wall() + expires,
                           tokens=float(policy.notify_rate), refilled=now)
        self.core.send_response(resp)  # the 200 leaves before the first NOTIFY
        if not expires:
            self._final(sub, "timeout")  # a fetch: the state once, no subscription
            return None
        self._add(sub)
        self._pump(sub)
        return None

    def _refresh(self, req: Request, peer: Peer, now: float) -> Response | None:
        sub = self.by_dialog.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if sub is None:
            return make_response(req, 481)
        event, _ = parse_event_untrusted(req.headers.get("Event"))
        if event != sub.event:
            return make_response(req, 489, headers=[("Allow-Events", self.allow_events)])
        policy = self.policy()
        expires = self._expires(req, policy)
        if isinstance(expires, Response):
            return expires
        if not sub.dialog.accept_request(req):
            return make_response(req, 500, "CSeq out of order", headers=[("Retry-After", "1")])
        if req.contacts:  # SUBSCRIBE is a target refresh request (RFC 6665 4.1.2.1)
            sub.dialog.remote_target = str(req.contacts[0].uri)
        sub.dialog.peer = peer
        self.core.send_response(make_response(req, 200, headers=[
            ("Expires", str(expires)), ("Contact", sub.dialog.contact)]))
        if not expires:
            self._end(sub, "timeout")
            return None
        sub.expires_at = self.wall() + expires
        self._arm_expiry(sub, now)
        self._save(sub)
        if not sub.dirty:
            sub.dirty, sub.changed_at = True, None
        self._pump(sub)
        return None

    @staticmethod
    def _expires(req: Request, policy: SubscriptionPolicy) -> int | Response:
        asked = req.expires
        if asked is None:
            return policy.default_expires
        if 0 < asked < policy.min_expires:
            return make_response(req, 423, to_tag=new_tag(),
                                 headers=[("Min-Expires", str(policy.min_expires))])
        return min(asked, policy.max_expires)

    # -- news ------------------------------------------------------------------------
    def changed(self, event: str, resource: str, at: float | None = None) -> None:
        """``resource``'s state in ``event`` changed (at ``at``, default now): its
        watchers are owed a NOTIFY."""
        subs = self.by_resource.get((event, resource))
        if not subs:
            return
        if at is None:
            at = self.core.now() - self.lag()
        for sub in list(subs.values()):
            if not sub.dirty:
                sub.dirty, sub.changed_at = True, at
            self._pump(sub)

    def _pump(self, sub: Subscription) -> None:
        """Send the NOTIFY a dirty subscription owes, when the rate allows."""
        if sub.state is not SubState.ACTIVE or not sub.dirty:
            return  # NOTIFYING: its response pumps again; WAITING: its token timer does
        now = self.core.now()
        rate = self.policy().notify_rate
        sub.tokens = min(float(rate), sub.tokens + (now - sub.refilled) * rate)
        sub.refilled = now
        if sub.tokens < 1.0:
            self._set_state(sub, SubState.WAITING)
            sub.token = self.core.timers.schedule(now + (1.0 - sub.tokens) / rate,
                                                  self._on_token, sub)
            return
        sub.tokens -= 1.0
        remaining = max(0, int(sub.expires_at - self.wall() + 0.5))
        sub.inflight = self._send(sub, f"active;expires={remaining}", self._on_response)
        self._set_state(sub, SubState.NOTIFYING)
        if sub.changed_at is not None:
            self.delays.add(now - sub.changed_at)
        sub.dirty, sub.changed_at = False, None

    def _on_token(self, sub: Subscription) -> None:
        sub.token = None
        if sub.state is SubState.WAITING:
            self._set_state(sub, SubState.ACTIVE)
            self._pump(sub)

    def _send(self, sub: Subscription, state: str, on_response: Any) -> object:
        package = self.packages[sub.event]
        sub.version += 1
        d = sub.dialog
        assert d.peer is not None
        req = d.new_request("NOTIFY", via=self.core.via_for(d.peer),
                            body=package.body(sub.resource, sub.version),
                            headers=[("Event", sub.event_header),
                                     ("Subscription-State", state),
                                     ("Content-Type", package.content_type)])
        self.sent += 1
        return self.core.send_request(req, d.peer, on_response, sub)

    def _on_response(self, sub: Subscription, resp: Response, key: object = None) -> None:
        if resp.status < 200 or key is not sub.inflight or sub.state is not SubState.NOTIFYING:
            return
        sub.inflight = None
        if resp.status >= 300:  # RFC 6665 4.2.2: the subscriber is gone or refuses
            self.failed += 1
            if sub.ending is None:
                self._remove(sub, f"NOTIFY answered {resp.status}")
            self._set_state(sub, SubState.TERMINATED)
            return
        if sub.ending is not None:
            self._final(sub, sub.ending)
            return
        self._set_state(sub, SubState.ACTIVE)
        self._pump(sub)

    # -- the end ---------------------------------------------------------------------
    def _end(self, sub: Subscription, reason: str) -> None:
        """End a subscription, telling the subscriber (the NOTIFY in flight first)."""
        if sub.ending is not None or sub.state is SubState.TERMINATED:
            return
        self._remove(sub, reason)
        sub.ending = reason
        if sub.state is not SubState.NOTIFYING:
            self._final(sub, reason)

    def _final(self, sub: Subscription, reason: str) -> None:
        sub.ending = reason
        if sub.state is not SubState.TERMINATED:
            self._set_state(sub, SubState.TERMINATED)
        self._send(sub, f"terminated;reason={reason}", None)

    def _expired(self, sub: Subscription) -> None:
        sub.expiry = None
        self._end(sub, "timeout")

    def end_where(self, reason_for: Callable[[Subscription], str | None]) -> None:
        """End every subscription ``reason_for`` gives a reason (after a reload)."""
        for sub in list(self.by_dialog.values()):
            reason = reason_for(sub)
            if reason is not None:
                self._end(sub, reason)

    # -- indexes and storage ----------------------------------------------------------
    def _add(self, sub: Subscription) -> None:
        self.by_dialog[sub.id] = sub
        self.by_resource.setdefault((sub.event, sub.resource), {})[sub.id] = sub
        self.per_watcher[sub.watcher] = self.per_watcher.get(sub.watcher, 0) + 1
        self._arm_expiry(sub, self.core.now())
        self._save(sub)
        self.publish("presence", "subscribed", self._summary(sub))

    def _remove(self, sub: Subscription, reason: str) -> None:
        for t in (sub.expiry, sub.token):
            if t is not None:
                t.cancel()
        sub.expiry = sub.token = None
        if self.by_dialog.pop(sub.id, None) is None:
            return
        peers = self.by_resource.get((sub.event, sub.resource))
        if peers is not None:
            peers.pop(sub.id, None)
            if not peers:
                del self.by_resource[(sub.event, sub.resource)]
                self.unwatched(sub.event, sub.resource)
        n = self.per_watcher.get(sub.watcher, 0) - 1
        if n > 0:
            self.per_watcher[sub.watcher] = n
        else:
            self.per_watcher.pop(sub.watcher, None)
        self._dirty[sub.id] = None
        self.publish("presence", "unsubscribed", self._summary(sub) | {"reason": reason})

    def _arm_expiry(self, sub: Subscription, now: float) -> None:
        if sub.expiry is not None:
            sub.expiry.cancel()
        sub.expiry = self.core.timers.schedule(now + max(0.0, sub.expires_at - self.wall()),
                                               self._expired, sub)

    def _save(self, sub: Subscription) -> None:
        self._dirty[sub.id] = sub

    @property
    def pending(self) -> int:
        """Changes not written yet."""
        return len(self._dirty)

    def commit(self) -> None:
        """Write the changes since the last commit in one transaction. A disk that
        refuses raises sqlite3.Error (rolled back): the changes stay for the next one."""
        if self._dirty and self._db is not None:
            transaction(self._db, self._write)
        self._dirty = {}

    def _write(self, db: sqlite3.Connection) -> None:
        dirty, wall = self._dirty, self.wall()
        db.executemany("DELETE FROM subscriptions WHERE call_id=? AND local_tag=? "
                       "AND remote_tag=?", [k for k, s in dirty.items() if s is None])
        db.executemany("INSERT OR REPLACE INTO subscriptions VALUES "
                       "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       [s.as_row(wall) for s in dirty.values() if s is not None])

    def _load(self, db: sqlite3.Connection) -> None:
        wall = self.wall()
        for (call_id, local_tag, remote_tag, event, event_id, watcher, resource, local_uri,
             remote_uri, target, routes, local_cseq, remote_cseq, contact, transport, host,
             port, expires_at, version, saved_at) in db.execute("SELECT * FROM subscriptions"):
            if expires_at <= wall:
                self._dirty[(call_id, local_tag, remote_tag)] = None
                continue
            # No more NOTIFYs than the fastest rate allows can have left since the save.
            sent = int(MAX_NOTIFY_RATE * max(0.0, wall - saved_at)) + MAX_NOTIFY_RATE + 1
            dialog = Dialog(call_id, local_tag, remote_tag, local_uri, remote_uri, target,
                            [r for r in routes.split("\n") if r], local_cseq + sent,
                            remote_cseq, Peer(transport, host, port), contact)
            sub = Subscription(event, event_id, watcher, resource, dialog, expires_at,
                               version=version + sent, tokens=float(MAX_NOTIFY_RATE))
            self.by_dialog[sub.id] = sub
            self.by_resource.setdefault((event, resource), {})[sub.id] = sub
            self.per_watcher[watcher] = self.per_watcher.get(watcher, 0) + 1
            self._dirty[sub.id] = sub  # the new CSeq base is saved at once
        self.commit()
        if self.by_dialog:
            log.info("%d subscriptions restored", len(self.by_dialog))
            # Timers and NOTIFYs need the running clock: due at the timer loop's first pass.
            self.core.timers.schedule(float("-inf"), self._resume)

    def _resume(self) -> None:
        now = self.core.now()
        for sub in list(self.by_dialog.values()):
            if sub.event not in self.packages:
                self._remove(sub, "no such event package")
                continue
            self._arm_expiry(sub, now)
            refusal = self.authorize(sub.watcher, sub.resource, sub.event)
            if refusal is not None:  # the configuration changed while we were down
                self._end(sub, "noresource" if refusal[0] == 404 else "rejected")
            else:
                self._pump(sub)

    def close(self) -> None:
        self.commit()

    # -- views ----------------------------------------------------------------------------
    def _summary(self, sub: Subscription) -> dict[str, Any]:
        return {"watcher": sub.watcher, "user": sub.resource, "event": sub.event,
                "users": [sub.watcher, sub.resource],
                "expires": max(0, int(sub.expires_at - self.wall() + 0.5))}

    def subscriptions(self) -> list[dict[str, Any]]:
        return [self._summary(s) | {"state": s.state.value} for s in self.by_dialog.values()]

    def stats(self) -> dict[str, Any]:
        d = self.delays
        return {"subscriptions": len(self.by_dialog), "notifies_sent": self.sent,
                "notifies_failed": self.failed, "delays_measured": d.n,
                "delay_p50_ms": round(1000 * d.quantile(0.5), 2),
                "delay_p99_ms": round(1000 * d.quantile(0.99), 2),
                "delay_max_ms": round(1000 * d.max, 2)}
