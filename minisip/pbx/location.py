"""Location service: the bindings of each address of record, persisted.

Bindings live in memory (a dict per user) and in SQLite in the data dir, so a
restart, even after ``kill -9``, finds every phone still registered. Writes
are group-committed: changes collect during a receive batch and ``commit()``
writes them in one transaction *before* the batch's responses leave (the
driver calls it), so a 200 OK is never sent for a binding that a crash could
lose, and 5,000 registrations/s cost one commit per batch, not one each.
WAL with synchronous=NORMAL survives a killed process (not a power cut).

Expiry is wall-clock (``time.time()``) because it must mean the same after a
restart; the heap of deadlines is pulled by the server's one timer loop.
"""
from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..sip.errors import BadMessage
from ..sip.peer import Peer
from ..sip.uri import parse_uri_untrusted
from .storage import open_store

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

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def as_row(self) -> tuple[object, ...]:
        s = self.source
        return (self.aor, self.contact, self.expires_at, self.q, self.call_id, self.cseq,
                s.transport, s.host, s.port, self.user_agent, self.instance,
                self.registered_at)


def read_bindings(db_path: Path, now: float) -> list[Binding]:
    """The unexpired bindings stored in ``db_path``, read-only: what phones were
    registered when the server last ran (the CLI, when no server runs)."""
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT * FROM bindings WHERE expires_at > ? ORDER BY aor, contact",
                          (now,)).fetchall()
    finally:
        db.close()
    return [Binding(aor, contact, expires_at, q, call_id, cseq, Peer(transport, host, port),
                    ua, instance, registered_at)
            for (aor, contact, expires_at, q, call_id, cseq, transport, host, port, ua,
                 instance, registered_at) in rows]
def _create(db: sqlite3.Connection) -> None:
    """The bindings table, clustered on its key (WITHOUT ROWID: a commit writes one
    b-tree page, not a table page and an index page); a table from an older minisip
    is copied over once."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'bindings'").fetchone()
    if row is not None and "WITHOUT ROWID" in row[0].upper():
        return
    db.execute("BEGIN")
    if row is not None:
        db.execute("ALTER TABLE bindings RENAME TO bindings_old")
    db.execute(_SCHEMA)
    if row is not None:
        db.execute("INSERT INTO bindings SELECT * FROM bindings_old")
        db.execute("DROP TABLE bindings_old")
    db.execute("COMMIT")


def device_peer(b: Binding) -> Peer:
    """Where requests to a registered device go.

    Over TCP/TLS: the connection it registered on. Over UDP: its Contact, unless
    the Contact's address differs from where the REGISTER came from, i.e. the
    phone is behind NAT and only the source address reaches it.
    """
    if b.source.reliable:
        return b.source
    try:
        uri = parse_uri_untrusted(b.contact)
    except BadMessage:
        return b.source
    if uri.host == b.source.host:
        return Peer("udp", uri.host, uri.port or 5060)
    return b.source


class LocationService:
    def __init__(self, db_path: Path | None,
                 on_state: Callable[[str, bool], None] | None = None,
                 on_binding: Callable[[str, Binding], None] | None = None) -> None:
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._expiry: list[tuple[float, str, str]] = []  # lazy deletion heap
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
        rows = self._db.execute("SELECT * FROM bindings").fetchall()
        for (aor, contact, expires_at, q, call_id, cseq, transport, host, port, ua,
             instance, registered_at) in rows:
            if expires_at <= now:
                self._dirty[(aor, contact)] = None
                continue
            b = Binding(aor, contact, expires_at, q, call_id, cseq,
                        Peer(transport, host, port), ua, instance, registered_at)
            self._bindings.setdefault(aor, {})[contact] = b
            heapq.heappush(self._expiry, (expires_at, aor, contact))
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
        return sum(len(v) for v in self._bindings.values())

    # -- updates ------------------------------------------------------------
    def put(self, b: Binding) -> None:
        per_user = self._bindings.get(b.aor)
        was_online = bool(per_user)
        if per_user is None:
            per_user = self._bindings[b.aor] = {}
        per_user[b.contact] = b
        self._dirty[(b.aor, b.contact)] = b
        heapq.heappush(self._expiry, (b.expires_at, b.aor, b.contact))
        if self._on_binding is not None:
            self._on_binding("registered", b)
        if not was_online:
            self._on_state(b.aor, True)

    def remove(self, aor: str, contact: str) -> None:
        per_user = self._bindings.get(aor)
        b = per_user.pop(contact, None) if per_user is not None else None
        if b is None:
            return
        self._dirty[(aor, contact)] = None
        if self._on_binding is not None:
            self._on_binding("unregistered", b)
        if not per_user:
            del self._bindings[aor]
            self._on_state(aor, False)

    def remove_all(self, aor: str) -> None:
        for contact in list(self._bindings.get(aor, ())):
            self.remove(aor, contact)

    def commit(self) -> None:
        """Write the changes since the last commit in one transaction."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        if self._db is None:
            return
        puts = [b.as_row() for b in dirty.values() if b is not None]
        dels = [k for k, b in dirty.items() if b is None]
        db = self._db
        db.execute("BEGIN")
        if dels:
            db.executemany("DELETE FROM bindings WHERE aor=? AND contact=?", dels)
        if puts:
            db.executemany("INSERT OR REPLACE INTO bindings VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           puts)
        db.execute("COMMIT")

    # -- expiry (pulled by the server's timer loop) ---------------------------
    def get_timer(self) -> float | None:
        """Next expiry as a wall-clock time, or None."""
        return self._expiry[0][0] if self._expiry else None

    def handle_timer(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires_at, aor, contact = heapq.heappop(heap)
            b = self._bindings.get(aor, {}).get(contact)
            if b is not None and b.expires_at <= now:  # not refreshed since
                self.remove(aor, contact)

    def close(self) -> None:
        self.commit()
        if self._db is not None:
            self._db.close()
            self._db = None
