"""Registration, CDR and events writes survive a refusing disk: rolled back, kept, written
later."""
from __future__ import annotations

import csv
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from minisip.config.schema import SystemConfig
from minisip.pbx.cdr import CdrRecord, CdrStore
from minisip.pbx.events import EventService
from minisip.pbx.location import Binding, LocationService
from minisip.sip.peer import Peer
from tests.pbx.events_helpers import PEER, FakeCore, request


def record(i: int) -> CdrRecord:
    now = time.time()
    return CdrRecord(call_id=f"c{i}", kind="O", caller="100", dialed="101", final="101",
                     route="local_user:101", setup_time=now, answer_time=now, end_time=now,
                     duration=0.0, status=200, cause="normal", released_by="caller")


def binding(aor: str, contact: str, expires: float = 3600) -> Binding:
    now = time.time()
    return Binding(aor, contact, now + expires, None, "cid", 1, Peer("udp", "192.0.2.1", 5060),
                   registered_at=now)


class Locked:
    """Another process's write lock on a database (a backup tool, a long query)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()


class FailingCommit:
    """A connection whose COMMIT fails with an I/O error while ``failing`` is set."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.failing = db, True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.failing and sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def csv_rows(store: CdrStore) -> list[list[str]]:
    rows: list[list[str]] = []
    for path in sorted(store.dir.glob("*.csv")):
        with open(path, newline="") as f:
            rows += list(csv.reader(f))[1:]
    return rows


def test_cdrs_written_while_the_database_is_locked_are_kept_and_written_later(
        tmp_path: Path) -> None:
    store = CdrStore(tmp_path, timeout=0)
    store.add([record(0)])
    assert store.commit()
    lock = Locked(tmp_path / "cdr.db")
    t0 = time.perf_counter()
    store.add([record(1), record(2)])
    assert store.commit() is False  # at once: the event loop is not held for seconds
    assert time.perf_counter() - t0 < 0.5
    store.add([record(3)])
    assert store.commit() is False and store.pending == 3
    assert store.get_timer() is not None  # the timer loop tries again
    lock.release()
    store.handle_timer(store.get_timer() or 0)
    assert store.pending == 0 and store.get_timer() is None
    ids = [r["call_id"] for r in store.query(limit=10)]
    assert sorted(ids) == ["c0", "c1", "c2", "c3"]
    assert sorted(r[0] for r in csv_rows(store)) == ["c0", "c1", "c2", "c3"]  # once each
    store.close()


def test_an_io_error_at_commit_is_rolled_back_and_retried(tmp_path: Path) -> None:
    store = CdrStore(tmp_path, timeout=0)
    faulty = FailingCommit(store.db)
    store.db = faulty  # type: ignore[assignment]
    store.add([record(1)])
    assert not store.commit(force=True)
    assert not store.db.in_transaction and store.retry.errors == 1
    faulty.failing = False
    assert store.commit(force=True)
    assert [r["call_id"] for r in store.query()] == ["c1"]


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    store = CdrStore(tmp_path, timeout=0)
    lock = Locked(tmp_path / "cdr.db")
    store.add([record(1)])
    assert not store.commit()
    lock.release()
    store.close()  # force: no waiting for the retry delay
    again = CdrStore(tmp_path)
    assert [r["call_id"] for r in again.query()] == ["c1"]


def test_registrations_survive_a_locked_database(tmp_path: Path) -> None:
    db = tmp_path / "registrations.db"
    loc = LocationService(db)
    loc.put(binding("100", "sip:100@a"))
    assert loc.commit()
    lock = Locked(db)
    loc.put(binding("101", "sip:101@b"))
    loc.remove("100", "sip:100@a")
    assert loc.commit() is False
    loc.put(binding("102", "sip:102@c"))  # changes keep coming while the disk refuses
    assert loc.commit() is False
    retry = loc.get_timer()
    assert retry is not None and retry < time.time() + 5
    lock.release()
    loc.handle_timer(retry)
    assert loc.get_timer() is not None and loc.get_timer() > time.time() + 3000  # expiry only
    loc.close()
    again = LocationService(db)
    assert sorted(again.aors()) == ["101", "102"]
    again.close()


def test_refreshing_bindings_does_not_grow_the_expiry_heap(tmp_path: Path) -> None:
    loc = LocationService(None)
    for i in range(10_000):
        loc.put(binding(str(i % 100), f"sip:{i % 100}@x", expires=3600 + i))
    assert loc.count() == 100
    assert loc.heap_entries <= 2 * 100 + 1024 + 1
    loc.handle_timer(time.time() + 20_000)
    assert loc.count() == 0


def test_messages_kept_for_offline_users_survive_a_locked_database(tmp_path: Path) -> None:
    core = FakeCore()
    snap = SimpleNamespace(users=core.users, system=SystemConfig())
    calls = SimpleNamespace(display_for=lambda u: "", on_change=None)
    svc = EventService(core, calls, LocationService(None), lambda: snap,
                       tmp_path / "events.db", lambda *e: None)
    lock = Locked(tmp_path / "events.db")
    req = request("MESSAGE", "102", "101", body=b"call me",
                  headers=[("Content-Type", "text/plain")])
    resp = svc.messages.on_message(req, PEER, core.t)
    assert resp is not None and resp.status == 202  # 101 is offline: kept for later
    t0 = time.perf_counter()
    svc.commit()  # refused at once: the event loop is not held
    assert time.perf_counter() - t0 < 0.5
    assert svc.messages.pending == 1 and svc.get_timer() is not None
    lock.release()
    svc.handle_timer(svc.get_timer() or 0)
    assert svc.messages.pending == 0 and svc.get_timer() is None
    svc.close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute("SELECT recipient, body FROM messages").fetchall() == [
            ("101", b"call me")]
