"""Location service: the bindings of each address of record, persisted.

Bindings live in memory (a dict per user) and in SQLite in the data dir, so a
restart, even after ``kill -9``, finds every phone still registered. Writes
are group-committed: changes collect during a receive batch and ``commit()``
writes them in one transaction *before* the batch's responses leave (the
driver calls it), so a 200 OK is never sent for a binding that a crash could
lose, and 5,000 registrations/s cost one commit per batch, not one each.
WAL with synchronous=NORMAL survives a killed process (not a power cut).

A commit the disk refuses is rolled back and its changes stay queued for the
next attempt (``durable.Retry``): the server keeps answering, and nothing is
lost once the disk is back.

Expiry is wall-clock (``time.time()``) because it must mean the same after a
restart; the heap of deadlines is pulled by the server's one timer loop. A
refreshed or removed binding leaves its old entry behind (lazy deletion); the
heap is rebuilt once those outnumber the bindings, so re-registrations cannot
grow it without bound.
"""
from __future__ import annotations

import heapq
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dialog.dialog import address_of
from ..sip.errors import BadMessage
from ..sip.peer import Peer
from ..sip.uri import parse_uri_untrusted
from .durable import Retry, transaction
from .storage import open_store

log = logging.getLogger(__name__)

#: rebuild the expiry heap when it holds this many more entries than twice the bindings
_HEAP_SLACK = 1024

_SCHEMA = """
CREATE TABLE bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    q REAL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    transport TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    instance TEXT NOT NULL DEFAULT '',
    registered_at REAL NOT NULL,
    path TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (aor, contact)
) WITHOUT ROWID
"""


@dataclass(slots=True)
class Binding:
    aor: str
    contact: str  #: the Contact URI as the phone sent it
    expires_at: float  #: wall-clock seconds
    q: float | None
    call_id: str
    cseq: int
    source: Peer  #: where its REGISTER came from: requests to it go there (NAT)
    user_agent: str = ""
    instance: str = ""  #: RFC 5626 +sip.instance, to replace a rebooted phone's old binding
    registered_at: float = 0.0
    #: RFC 3327 Path of its REGISTER (edge proxies, nearest to us first): requests to the
    #: device carry them as Route and go to the first
    path: tuple[str, ...] = ()

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def as_row(self) -> tuple[object, ...]:
        s = self.source
        return (self.aor, self.contact, self.expires_at, self.q, self.call_id, self.cseq,
                s.transport, s.host, s.port, self.user_agent, self.instance,
                self.registered_at, "\n".join(self.path))


def read_bindings(db_path: Path, now: float) -> list[Binding]:
    """The unexpired bindings stored in ``db_path``, read-only: what phones were
    registered when the server last ran (the CLI, when no server runs)."""
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT * FROM bindings WHERE expires_at > ? ORDER BY aor, contact",
                          (now,)).fetchall()
    finally:
        db.close()
    return [_binding(row) for row in rows]


def _binding(row: tuple[Any, ...]) -> Binding:
    (aor, contact, expires_at, q, call_id, cseq, transport, host, port, ua, instance,
     registered_at, path) = row
    return Binding(aor, contact, expires_at, q, call_id, cseq, Peer(transport, host, port),
                   ua, instance, registered_at, tuple(p for p in path.split("\n") if p))
def _create(db: sqlite3.Connection) -> None:
    """The bindings table, clustered on its key (WITHOUT ROWID: a commit writes one
    b-tree page, not a table page and an index page); a table from an older minisip
    is copied over once."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'bindings'").fetchone()
    if row is not None and "WITHOUT ROWID" in row[0].upper():
        if "path" not in _columns(db, "bindings"):  # before Path support
            db.execute("ALTER TABLE bindings ADD COLUMN path TEXT NOT NULL DEFAULT ''")
        return
    db.execute("BEGIN")
    if row is not None:
        db.execute("ALTER TABLE bindings RENAME TO bindings_old")
    db.execute(_SCHEMA)
    if row is not None:
        cols = ", ".join(_columns(db, "bindings_old"))
        db.execute(f"INSERT INTO bindings ({cols}) SELECT {cols} FROM bindings_old")
        db.execute("DROP TABLE bindings_old")
    db.execute("COMMIT")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def device_peer(b: Binding) -> Peer:
    """Where requests to a registered device go.

    Registered through edge proxies (RFC 3327 Path): the first of them. Over TCP/TLS:
    the connection it registered on. Over UDP: its Contact, unless the Contact's
    address differs from where the REGISTER came from, i.e. the phone is behind NAT
    and only the source address reaches it.
    """
    if b.path:
        first = address_of(b.path[0])
        if first is not None:
            return first
    if b.source.reliable:
        return b.source
    try:
        uri = parse_uri_untrusted(b.contact)
    except BadMessage:
        return b.source
    if uri.host == b.source.host:
        port = uri.port or 5060
        # the same address nearly always: the one Peer then, not one more per call
        return b.source if port == b.source.port else Peer("udp", uri.host, port)
    return b.source


def route_headers(b: Binding) -> tuple[tuple[str, str], ...]:
    """The Route headers a request to the device carries: its Path, in order."""
    return tuple(("Route", p) for p in b.path)


class LocationService:
    def __init__(self, db_path: Path | None,
                 on_state: Callable[[str, bool], None] | None = None,
                 on_binding: Callable[[str, Binding], None] | None = None) -> None:
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._count = 0  #: bindings held
        self._expiry: list[tuple[float, str, str]] = []  # lazy deletion heap
        self.retry = Retry("registrations")
        self._dirty: dict[tuple[str, str], Binding | None] = {}
        self._on_state = on_state or (lambda aor, online: None)
        #: ("registered" | "unregistered", binding) for the control socket's event stream
        self._on_binding = on_binding
        self._db: sqlite3.Connection | None = None
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_store(db_path)
            _create(self._db)
            self._load()

    def _load(self) -> None:
        assert self._db is not None
        now = time.time()
        for row in self._db.execute("SELECT * FROM bindings").fetchall():
            b = _binding(row)
            if b.expires_at <= now:
                self._dirty[(b.aor, b.contact)] = None
                continue
            self._bindings.setdefault(b.aor, {})[b.contact] = b
            self._count += 1
            heapq.heappush(self._expiry, (b.expires_at, b.aor, b.contact))
        self.commit()

    # -- queries ------------------------------------------------------------
    def bindings(self, aor: str) -> list[Binding]:
        now = time.time()
        return [b for b in self._bindings.get(aor, {}).values() if b.expires_at > now]

    def is_online(self, aor: str) -> bool:
        return bool(self._bindings.get(aor))

    def aors(self) -> Iterator[str]:
        return iter(self._bindings)

    def count(self) -> int:
        return self._count

    @property
    def heap_entries(self) -> int:
        """Expiry entries held, stale ones included (for status and the flood tests)."""
        return len(self._expiry)

    # -- updates ------------------------------------------------------------
    def put(self, b: Binding) -> None:
        per_user = self._bindings.get(b.aor)
        was_online = bool(per_user)
        if per_user is None:
            per_user = self._bindings[b.aor] = {}
        if per_user.get(b.contact) is None:
            self._count += 1
        per_user[b.contact] = b
        self._dirty[(b.aor, b.contact)] = b
        heap = self._expiry
        heapq.heappush(heap, (b.expires_at, b.aor, b.contact))
        if len(heap) > 2 * self._count + _HEAP_SLACK:
            self._expiry = [(x.expires_at, x.aor, x.contact)
                            for per in self._bindings.values() for x in per.values()]
            heapq.heapify(self._expiry)
        if self._on_binding is not None:
            self._on_binding("registered", b)
        if not was_online:
            self._on_state(b.aor, True)

    def remove(self, aor: str, contact: str) -> None:
        per_user = self._bindings.get(aor)
        b = per_user.pop(contact, None) if per_user is not None else None
        if b is None:
            return
        self._count -= 1
        self._dirty[(aor, contact)] = None
        if self._on_binding is not None:
            self._on_binding("unregistered", b)
        if not per_user:
            del self._bindings[aor]
            self._on_state(aor, False)

    def remove_all(self, aor: str) -> None:
        for contact in list(self._bindings.get(aor, ())):
            self.remove(aor, contact)

    def commit(self, *, force: bool = False) -> bool:
        """Write the changes since the last commit in one transaction.

        False when the disk refused them: they stay queued for the next attempt,
        which comes after ``durable.RETRY_DELAY`` (or now with ``force``).
        """
        if not self._dirty:
            return True
        if self._db is None:
            self._dirty = {}
            return True
        now = time.time()
        if not (force or self.retry.may_try(now)):
            return False
        dirty = self._dirty
        puts = [b.as_row() for b in dirty.values() if b is not None]
        dels = [k for k, b in dirty.items() if b is None]
        def write(db: sqlite3.Connection) -> None:
            if dels:
                db.executemany("DELETE FROM bindings WHERE aor=? AND contact=?", dels)
            if puts:
                db.executemany("INSERT OR REPLACE INTO bindings "
                               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", puts)
        try:
            transaction(self._db, write)
        except sqlite3.Error as exc:
            self.retry.failed(exc, now, len(dirty))
            return False
        self._dirty = {}
        self.retry.succeeded(now)
        return True

    # -- expiry (pulled by the server's timer loop) ---------------------------
    def get_timer(self) -> float | None:
        """Next expiry (or retry of a failed commit) as a wall-clock time, or None."""
        t = self._expiry[0][0] if self._expiry else None
        retry = self.retry.retry_at
        if retry is not None and (t is None or retry < t):
            return retry
        return t

    def handle_timer(self, now: float) -> None:
        if self.retry.retry_at is not None and self.retry.retry_at <= now:
            self.commit(force=True)
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires_at, aor, contact = heapq.heappop(heap)
            b = self._bindings.get(aor, {}).get(contact)
            if b is not None and b.expires_at <= now:  # not refreshed since
                self.remove(aor, contact)

    def close(self) -> None:
        if not self.commit(force=True):
            log.error("%d registration changes could not be saved at exit", len(self._dirty))
        if self._db is not None:
            self._db.close()
            self._db = None
