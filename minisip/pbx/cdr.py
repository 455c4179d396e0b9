"""Call detail records: the half-call model, in SQLite and one CSV file per day.

Each call leaves an O-CDR (the originating half, the caller's side) and, when
a callee was reached, a T-CDR (the terminating half). Records are written when
the call ends, in one committed transaction (WAL): a ``kill -9`` after the BYE
loses nothing. The day's CSV in ``<data_dir>/cdr/YYYY-MM-DD.csv`` gets the
same rows, as the manual's CDR files do.

A write the disk refuses (the database locked by another process, a full or
read-only disk) is rolled back and its records stay queued, separately for
SQLite and CSV so neither gets a row twice; ``durable.Retry`` tries again a
second later through the server's timer loop. Calls go on meanwhile.
"""
from __future__ import annotations

import csv
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any, TextIO

from .durable import Retry, transaction
from .storage import open_store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CdrRecord:
    call_id: str  #: the caller's Call-ID (the A-leg): both halves share it
    kind: str  #: "O" (originating, caller side) or "T" (terminating, callee side)
    caller: str
    dialed: str  #: the number as dialed
    final: str  #: the number after the dial plan (the callee reached)
    route: str  #: route type and target, e.g. "local_user:101"
    setup_time: float
    answer_time: float | None
    end_time: float
    duration: float  #: answer to end, 0 for unanswered calls
    status: int  #: final SIP status of the call (200 answered, 486, 487, 480...)
    cause: str  #: release cause: "normal", "busy", "no answer", "cancelled", ...
    released_by: str  #: "caller", "callee" or "pbx"
    #: the plan steps the call ran, in order: who rang, forwarded from whom, which group
    steps: str = ""
    transferred_by: str = ""  #: the user whose phone transferred the call (REFER)
    transferred_to: str = ""  #: the number (or user) its party was transferred to
    # Relayed media, as the relay counted it (0 when media went direct):
    a_packets: int = 0  #: RTP packets the caller sent
    b_packets: int = 0  #: RTP packets the callee sent
    a_lost: int = 0
    b_lost: int = 0
    a_jitter_ms: float = 0.0
    b_jitter_ms: float = 0.0
    # The outside world (added later: older cdr.db files gain these columns on open):
    line_in: str = ""  #: the line or trunk the call came in on ("" = from a local user)
    line_out: str = ""  #: the line or trunk it left on (a T-CDR: the one it tried)
    caller_number: str = ""  #: the caller number after the dial plan, as presented
    reason: str = ""  #: why it failed, as the caller was told ("Line x offline: ...")

    @property
    def answered(self) -> bool:
        return self.answer_time is not None


_COLUMNS = [f.name for f in fields(CdrRecord)]
_row = attrgetter(*_COLUMNS)  #: a record's values in column order, in one C call
_INSERT = f"INSERT INTO cdr ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})"
_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL"}


class CdrStore:
    def __init__(self, data_dir: Path, *, timeout: float = 5.0) -> None:
        self._pending: list[CdrRecord] = []  #: not yet in SQLite
        self._csv_pending: list[CdrRecord] = []  #: not yet in the CSV files
        self._csv: tuple[str, TextIO, Any] | None = None  #: (day, file, csv writer)
        self._minute, self._today = -1, ""
        self.retry = Retry("CDRs")
        self.dir = data_dir / "cdr"
        self.dir.mkdir(parents=True, exist_ok=True)
        # The server passes timeout 0: a lock held by another process fails the write
        # at once (it is retried) instead of stalling the event loop for seconds.
        self.db_path = data_dir / "cdr.db"
        self.db = open_store(self.db_path, timeout=timeout)
        cols = ", ".join(f"{f.name} {_SQL_TYPES[str(f.type).split(' ')[0]]}"
                         for f in fields(CdrRecord))
        self.db.execute(f"CREATE TABLE IF NOT EXISTS cdr (id INTEGER PRIMARY KEY, {cols})")
        have = {row[1] for row in self.db.execute("PRAGMA table_info(cdr)")}
        for f in fields(CdrRecord):  # a data dir from an older minisip gains new columns
            if f.name not in have:  # old rows read as the field's default, not NULL
                default = f" DEFAULT {f.default!r}" if isinstance(f.default, str | int | float) \
                    else ""
                self.db.execute(f"ALTER TABLE cdr ADD COLUMN {f.name} "
                                f"{_SQL_TYPES[str(f.type).split(' ')[0]]}{default}")
        self.db.execute("CREATE INDEX IF NOT EXISTS cdr_setup ON cdr (setup_time)")

    def add(self, records: list[CdrRecord]) -> None:
        """Queue a call's records; ``commit()`` writes them (before its BYE's 200 leaves)."""
        self._pending += records
        self._csv_pending += records

    @property
    def pending(self) -> int:
        """Records not yet in SQLite."""
        return len(self._pending)

    def commit(self, *, force: bool = False) -> bool:
        """Write what is queued; False when the disk refused some of it (kept for later)."""
        if not (self._pending or self._csv_pending):
            return True
        now = time.time()
        if not (force or self.retry.may_try(now)):
            return False
        try:
            if self._pending:
                self._write_db(self._pending)
                self._pending = []
            if self._csv_pending:
                self._write_csv()
        except (sqlite3.Error, OSError) as exc:
            self.retry.failed(exc, now, len(self._pending) + len(self._csv_pending))
            return False
        self.retry.succeeded(now)
        return True

    def write(self, records: list[CdrRecord]) -> None:
        """Write ``records`` now, past the queue (tools, tests); raises what the disk
        raises (the server queues with ``add`` and retries instead)."""
        self._write_db(records)
        self._csv_pending += records
        self._write_csv()

    def _write_db(self, records: list[CdrRecord]) -> None:
        transaction(self.db, lambda db: db.executemany(_INSERT, map(_row, records)))

    def _write_csv(self) -> None:
        """Append the queued records to their day's file; a day written leaves the queue."""
        by_day: dict[str, list[CdrRecord]] = {}
        for r in self._csv_pending:
            by_day.setdefault(self._day(r.end_time), []).append(r)
        for day, records in by_day.items():
            try:
                f, w = self._csv_for(day)
                w.writerows(map(_row, records))
                f.flush()  # in the kernel before the BYE's 200 leaves, as the row in SQLite
            except OSError:
                self._close_csv()  # opened again on the next attempt
                raise
            self._csv_pending = [r for r in self._csv_pending if self._day(r.end_time) != day]

    def _day(self, t: float) -> str:
        """The local date of ``t`` (the CSV it goes to), computed once a minute: no
        time zone moves midnight by less than a quarter of an hour."""
        minute = int(t // 60)
        if minute != self._minute:
            self._minute, self._today = minute, time.strftime("%Y-%m-%d", time.localtime(t))
        return self._today

    def _csv_for(self, day: str) -> tuple[TextIO, Any]:
        """The day's CSV, kept open while records of that day come. One written by a
        minisip with other columns (an upgrade mid-day) is moved aside to
        ``<day>.old.csv`` (``.old2``...), so every file's rows match its header."""
        if self._csv is None or self._csv[0] != day:
            self._close_csv()
            path = self.dir / f"{day}.csv"
            if path.exists() and _header(path) not in ([], _COLUMNS):
                n, aside = 1, self.dir / f"{day}.old.csv"
                while aside.exists():
                    n += 1
                    aside = self.dir / f"{day}.old{n}.csv"
                path.rename(aside)
                log.warning("CDR columns changed: %s moved to %s, %s starts again",
                            path.name, aside.name, path.name)
            new = not path.exists() or path.stat().st_size == 0
            f = open(path, "a", newline="")
            w = csv.writer(f)
            if new:
                w.writerow(_COLUMNS)
            self._csv = (day, f, w)
        return self._csv[1], self._csv[2]

    def _close_csv(self) -> None:
        if self._csv is not None:
            self._csv[1].close()
            self._csv = None

    # -- retry of a failed commit (a wall-clock timer source of the server) -----------------
    def get_timer(self) -> float | None:
        return self.retry.retry_at

    def handle_timer(self, now: float) -> None:
        if self.retry.retry_at is not None and self.retry.retry_at <= now:
            self.commit(force=True)

    def query(self, *, user: str | None = None, since: float | None = None,
              limit: int = 100, line: str | None = None) -> list[dict[str, Any]]:
        return query(self.db, user=user, since=since, limit=limit, line=line)

    def close(self) -> None:
        if not self.commit(force=True):
            log.error("%d CDRs could not be written to %s at exit", len(self._pending),
                      self.db_path)
        self.db.close()
        self._close_csv()


def _header(path: Path) -> list[str]:
    """The column names on a CSV file's first line."""
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def query(db: sqlite3.Connection, *, user: str | None = None, since: float | None = None,
          limit: int = 100, line: str | None = None) -> list[dict[str, Any]]:
    """Records newest first: a user's calls (either side), a line's or trunk's (in or
    out), since a time, at most ``limit`` (0 = all)."""
    sql, args = "SELECT * FROM cdr WHERE 1=1", list[Any]()
    if user:
        sql += " AND (caller = ? OR final = ?)"
        args += [user, user]
    if line:
        sql += " AND (line_in = ? OR line_out = ?)"
        args += [line, line]
    if since is not None:
        sql += " AND setup_time >= ?"
        args.append(since)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit if limit > 0 else -1)
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def read_cdrs(data_dir: Path, **filters: Any) -> list[dict[str, Any]] | None:
    """``query`` on ``data_dir``'s cdr.db opened read-only (the CLI: no server needed,
    nothing created or changed); None when there is no cdr.db."""
    path = data_dir / "cdr.db"
    if not path.exists():
        return None
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return query(db, **filters)
    finally:
        db.close()


def as_dict(record: CdrRecord) -> dict[str, Any]:
    return asdict(record)
