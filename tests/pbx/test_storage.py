"""The stores' SQLite (minisip/pbx/storage.py): commits on the loop never checkpoint;
a worker thread does, and the log then starts over instead of growing."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from minisip.pbx.storage import checkpoint, checkpoint_forever, open_store


def _commit_rows(db: sqlite3.Connection, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i % 50, "x" * 200))
        db.execute("COMMIT")


def _store(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    path = tmp_path / "s.db"
    db = open_store(path)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    return path, db


def test_commits_on_the_loop_never_checkpoint(tmp_path: Path) -> None:
    path, db = _store(tmp_path)
    assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _commit_rows(db, 1500)  # past the 1,000 pages SQLite would checkpoint at
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 1000 * 4096
    frames, copied = checkpoint(path)
    assert frames >= 1500 and copied == frames
    size = wal.stat().st_size
    _commit_rows(db, 100, 1500)  # the log starts over from its top: no growth
    assert wal.stat().st_size == size
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    db.close()


async def test_checkpoints_run_in_a_thread_while_the_loop_commits(tmp_path: Path) -> None:
    path, db = _store(tmp_path)
    with trio.move_on_after(1.0):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: checkpoint_forever([path, tmp_path / "absent.db"],
                                                          period=0.05))
            for i in range(40):
                _commit_rows(db, 50, 50 * i)
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    # everything committed went through the checkpoints: the log holds only the tail
    assert Path(f"{path}-wal").stat().st_size < 2000 * 4096
    frames, copied = checkpoint(path)
    assert copied == frames
    db.close()
