"""SIP MESSAGE between users (RFC 3428), with store-and-forward for offline users.

A MESSAGE to a user is authenticated like an INVITE, then sent to each of the
recipient's registered devices with the sender's identity in From; the first
2xx from a device is the answer, or the best failure when every device failed
(a 4xx over a 408 or 5xx). A recipient with no device online gets the message
stored (202 Accepted), up to ``store_per_user`` messages each for
``keep_seconds``; when one of its devices registers, the stored messages go to
it one at a time, oldest first, each carrying its original Date, and each is
deleted only once a device took it with a 2xx (a failure leaves the rest for
the next registration). Stored messages live in data_dir/registrations.db,
committed with the batch before the 202 leaves. A MESSAGE whose Request-URI
names no user is a keep-alive (FEATURES.md): 200, as before.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from ...sip.message import Request, Response, make_response, new_call_id, new_tag
from ...sip.peer import Peer
from ..durable import transaction
from ..identity import Identity
from ..location import LocationService, device_peer, route_headers

log = logging.getLogger(__name__)

MAX_BODY = 16384  #: bytes; RFC 3428 keeps MESSAGEs under 1300 bytes on UDP anyway

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    expires_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class MessagePolicy:
    store_per_user: int = 20
    keep_seconds: int = 604800


@dataclass(frozen=True, slots=True)
class Stored:
    id: int
    recipient: str
    sender: str
    content_type: str
    body: bytes
    received_at: float  #: wall clock
    expires_at: float


class Delivery:
    """One MESSAGE forked to a user's devices: the first 2xx answers it."""

    __slots__ = ("pending", "done", "failure", "on_done")

    def __init__(self, pending: int, on_done: Callable[[Response], None]) -> None:
        self.pending = pending
        self.done = False
        self.failure: Response | None = None
        self.on_done = on_done


def _worse(a: Response | None, b: Response) -> bool:
    """Is failure ``a`` less telling than ``b`` (timeouts and 5xx tell least)?"""
    if a is None:
        return True
    rank = lambda r: (r.status >= 500 or r.status == 408, r.status)  # noqa: E731
    return rank(b) < rank(a)


class MessageService:
    def __init__(self, core: Any, identity: Identity, location: LocationService,
                 users: Callable[[], Any], domain: Callable[[], str],
                 display: Callable[[str], str], policy: Callable[[], MessagePolicy],
                 db: sqlite3.Connection | None, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.core = core
        self.identity = identity
        self.location = location
        self.users = users
        self.domain = domain
        self.display = display  #: user -> '"Name" ' or ""
        self.policy = policy
        self.queues: dict[str, list[Stored]] = {}
        self._delivering: set[str] = set()
        self._dirty: dict[int, Stored | None] = {}
        self._next_id = 1
        self.relayed = self.stored = self.delivered = 0
        self.wall = wall  #: expiry is wall-clock time: it must mean the same after a restart
        self._db = db
        if db is not None:
            db.execute(_SCHEMA)
            self._load(db)

    # -- MESSAGE ----------------------------------------------------------------------
    def on_message(self, req: Request, peer: Peer, now: float) -> Response | None:
        recipient = req.request_uri.user
        if not recipient:
            return make_response(req, 200, to_tag=new_tag())  # a keep-alive to the server
        sender = self.identity.sender(req, peer, now)
        if isinstance(sender, Response):
            return sender
        if recipient not in self.users():
            return make_response(req, 404, to_tag=new_tag())
        if len(req.body) > MAX_BODY:
            return make_response(req, 513, to_tag=new_tag())
        ctype = req.content_type or "text/plain"
        if self.location.bindings(recipient):
            self.relayed += 1
            self._fork(recipient, sender, ctype, req.body, None, lambda resp: (
                self.core.send_response(make_response(req, resp.status, resp.reason,
                                                      to_tag=new_tag()))))
            return None
        policy = self.policy()
        queue = self._purge(recipient)
        if len(queue) >= policy.store_per_user:
            return make_response(req, 480, "User is offline and their message store is full",
                                 to_tag=new_tag())
        wall = self.wall()
        msg = Stored(self._next_id, recipient, sender, ctype, req.body, wall,
                     wall + policy.keep_seconds)
        self._next_id += 1
        queue.append(msg)
        self.queues[recipient] = queue
        self._dirty[msg.id] = msg
        self.stored += 1
        return make_response(req, 202, to_tag=new_tag())

    def _fork(self, recipient: str, sender: str, ctype: str, body: bytes, date: str | None,
              on_done: Callable[[Response], None]) -> None:
        bindings = self.location.bindings(recipient)
        delivery = Delivery(len(bindings), on_done)
        domain = self.domain()
        for b in bindings:
            peer = device_peer(b)
            headers = [("Via", self.core.via_for(peer)), ("Max-Forwards", "70"),
                       ("From", f"{self.display(sender)}<sip:{sender}@{domain}>;tag={new_tag()}"),
                       ("To", f"<sip:{recipient}@{domain}>"), ("Call-ID", new_call_id()),
                       ("CSeq", "1 MESSAGE"), ("Content-Type", ctype), *route_headers(b)]
            if date is not None:
                headers.append(("Date", date))
            self.core.send_request(Request("MESSAGE", b.contact, headers, body), peer,
                                   self._on_response, delivery)

    @staticmethod
    def _on_response(delivery: Delivery, resp: Response, key: object = None) -> None:
        if resp.status < 200 or delivery.done:
            return
        delivery.pending -= 1
        if resp.status < 300:
            delivery.done = True
            delivery.on_done(resp)
        else:
            if _worse(delivery.failure, resp):
                delivery.failure = resp
            if delivery.pending <= 0:
                delivery.done = True
                delivery.on_done(delivery.failure or resp)

    # -- stored messages ------------------------------------------------------------------
    def user_online(self, user: str) -> None:
        """A device of ``user`` registered: its stored messages follow (after the 200)."""
        if self.queues.get(user) and user not in self._delivering:
            self._delivering.add(user)
            self.core.timers.schedule(self.core.now(), self._deliver_next, user)

    def _deliver_next(self, user: str) -> None:
        queue = self._purge(user)
        if not queue or not self.location.bindings(user):
            self._delivering.discard(user)
            return
        msg = queue[0]
        self._fork(user, msg.sender, msg.content_type, msg.body,
                   formatdate(msg.received_at, usegmt=True),
                   lambda resp: self._delivered(msg, resp))

    def _delivered(self, msg: Stored, resp: Response) -> None:
        user = msg.recipient
        if resp.status >= 300:  # every device refused: keep it for the next registration
            log.info("stored message %d to %s not delivered: %d", msg.id, user, resp.status)
            self._delivering.discard(user)
            return
        queue = self.queues.get(user, [])
        if msg in queue:
            queue.remove(msg)
            self._dirty[msg.id] = None
            self.delivered += 1
        if not queue:
            self.queues.pop(user, None)
        self._deliver_next(user)

    def _purge(self, user: str) -> list[Stored]:
        """``user``'s stored messages, the expired ones deleted."""
        queue = self.queues.get(user, [])
        wall = self.wall()
        keep = [m for m in queue if m.expires_at > wall]
        for m in queue:
            if m.expires_at <= wall:
                self._dirty[m.id] = None
        if keep:
            self.queues[user] = keep
        else:
            self.queues.pop(user, None)
        return keep

    def resume(self) -> None:
        """After a restart: deliver to users already online."""
        for user in list(self.queues):
            if self.location.is_online(user):
                self.user_online(user)

    # -- storage -----------------------------------------------------------------------------
    def _load(self, db: sqlite3.Connection) -> None:
        wall = self.wall()
        for row in db.execute("SELECT * FROM messages ORDER BY id"):
            msg = Stored(*row)
            self._next_id = max(self._next_id, msg.id + 1)
            if msg.expires_at <= wall:
                self._dirty[msg.id] = None
            else:
                self.queues.setdefault(msg.recipient, []).append(msg)
        self.commit()

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
        dirty = self._dirty
        db.executemany("DELETE FROM messages WHERE id=?",
                       [(i,) for i, m in dirty.items() if m is None])
        db.executemany("INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?)",
                       [(m.id, m.recipient, m.sender, m.content_type, m.body, m.received_at,
                         m.expires_at) for m in dirty.values() if m is not None])

    def stats(self) -> dict[str, int]:
        return {"messages_relayed": self.relayed, "messages_stored": self.stored,
                "messages_delivered_later": self.delivered,
                "messages_waiting": sum(len(q) for q in self.queues.values())}
