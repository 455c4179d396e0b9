"""Call detail records: the half-call model, in SQLite and one CSV file per day.

Each call leaves an O-CDR (the originating half, the caller's side) and, when
a callee was reached, a T-CDR (the terminating half). Records are written when
the call ends, in one committed transaction (WAL): a ``kill -9`` after the BYE
loses nothing. The day's CSV in ``<data_dir>/cdr/YYYY-MM-DD.csv`` gets the
same rows, as the manual's CDR files do.
"""
from __future__ import annotations

import csv
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any, TextIO

from .storage import open_store


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
    def __init__(self, data_dir: Path) -> None:
        self._pending: list[CdrRecord] = []
        self._csv: tuple[str, TextIO, Any] | None = None  #: (day, file, csv writer)
        self._minute, self._today = -1, ""
        self.dir = data_dir / "cdr"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "cdr.db"
        self.db = open_store(self.path)
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

    def commit(self) -> None:
        if self._pending:
            records, self._pending = self._pending, []
            self.write(records)

    def write(self, records: list[CdrRecord]) -> None:
        if not records:
            return
        rows = [_row(r) for r in records]
        self.db.execute("BEGIN")
        self.db.executemany(_INSERT, rows)
        self.db.execute("COMMIT")
        by_day: dict[str, list[tuple[Any, ...]]] = {}
        for r, row in zip(records, rows):
            by_day.setdefault(self._day(r.end_time), []).append(row)
        for day, day_rows in by_day.items():
            f, w = self._csv_for(day)
            w.writerows(day_rows)
            f.flush()  # in the kernel before the BYE's 200 leaves, as the row in SQLite

    def _day(self, t: float) -> str:
        """The local date of ``t`` (the CSV it goes to), computed once a minute: no
        time zone moves midnight by less than a quarter of an hour."""
        minute = int(t // 60)
        if minute != self._minute:
            self._minute, self._today = minute, time.strftime("%Y-%m-%d", time.localtime(t))
        return self._today

    def _csv_for(self, day: str) -> tuple[TextIO, Any]:
        """The day's CSV, kept open while records of that day come."""
        if self._csv is None or self._csv[0] != day:
            if self._csv is not None:
                self._csv[1].close()
            path = self.dir / f"{day}.csv"
            new = not path.exists()
            f = open(path, "a", newline="")
            w = csv.writer(f)
            if new:
                w.writerow(_COLUMNS)
            self._csv = (day, f, w)
        return self._csv[1], self._csv[2]

    def query(self, *, user: str | None = None, since: float | None = None,
              limit: int = 100, line: str | None = None) -> list[dict[str, Any]]:
        return query(self.db, user=user, since=since, limit=limit, line=line)

    def close(self) -> None:
        self.commit()
        self.db.close()
        if self._csv is not None:
            self._csv[1].close()
            self._csv = None


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
