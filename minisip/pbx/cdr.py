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
from pathlib import Path
from typing import Any

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
_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL"}


class CdrStore:
    def __init__(self, data_dir: Path) -> None:
        self._pending: list[CdrRecord] = []
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
        rows = [tuple(getattr(r, c) for c in _COLUMNS) for r in records]
        marks = ",".join("?" * len(_COLUMNS))
        self.db.execute("BEGIN")
        self.db.executemany(f"INSERT INTO cdr ({','.join(_COLUMNS)}) VALUES ({marks})", rows)
        self.db.execute("COMMIT")
        by_day: dict[str, list[tuple[Any, ...]]] = {}
        for r, row in zip(records, rows):
            day = time.strftime("%Y-%m-%d", time.localtime(r.end_time))
            by_day.setdefault(day, []).append(row)
        for day, day_rows in by_day.items():
            path = self.dir / f"{day}.csv"
            new = not path.exists()
            with open(path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(_COLUMNS)
                w.writerows(day_rows)

    def query(self, *, user: str | None = None, since: float | None = None,
              limit: int = 100, line: str | None = None) -> list[dict[str, Any]]:
        return query(self.db, user=user, since=since, limit=limit, line=line)

    def close(self) -> None:
        self.commit()
        self.db.close()


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
