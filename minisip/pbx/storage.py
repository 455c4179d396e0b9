"""SQLite as the PBX's stores use it: WAL, and checkpoints off the loop.

Registrations, CDRs, subscriptions and voicemail are committed on the trio
thread before the responses that confirm them leave (WAL with
synchronous=NORMAL: a commit is a write to the log, no fsync, and survives a
killed process). What used to make such a commit slow now and then is the
checkpoint SQLite runs inside it every 1,000 pages: copying the log into the
database and fsyncing both, milliseconds to hundreds of milliseconds on a busy
disk, with every phone waiting. So the loop's connections never checkpoint
(``wal_autocheckpoint=0``), and ``checkpoint_forever`` does it from a worker
thread with a connection of its own; a PASSIVE checkpoint takes no lock a
writer waits for, so the loop's next commit goes ahead meanwhile.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import trio

log = logging.getLogger(__name__)

#: seconds between checkpoints of each database
CHECKPOINT_PERIOD = 2.0


def open_store(path: Path, *, timeout: float = 0.0) -> sqlite3.Connection:
    """A connection for the loop: autocommit (explicit BEGIN/COMMIT), WAL, no fsync per
    commit, no checkpoint inside a commit. Timeout 0: a lock held by another process
    fails the commit at once (``durable.Retry`` tries again) instead of stalling the loop."""
    db = sqlite3.connect(path, isolation_level=None, timeout=timeout,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def checkpoint(path: Path) -> tuple[int, int]:
    """Copy what the log holds into ``path``; (log frames, frames copied). PASSIVE
    never makes a writer wait (FULL and TRUNCATE would block the loop's next commit);
    once all is copied, the next commit starts the log over from its top, so it stays
    the size of what is written between two checkpoints. Blocking: run it in a thread."""
    db = sqlite3.connect(path, timeout=1.0)
    try:
        _, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied
    finally:
        db.close()


async def checkpoint_forever(paths: Iterable[Path], *,
                             period: float = CHECKPOINT_PERIOD) -> None:
    """Checkpoint each database every ``period`` seconds, in a worker thread."""
    paths = list(paths)
    while True:
        await trio.sleep(period)
        for path in paths:
            if not path.exists():
                continue
            try:
                await trio.to_thread.run_sync(checkpoint, path)
            except sqlite3.Error as exc:  # busy or locked: the next round tries again
                log.debug("checkpoint of %s: %s", path, exc)
