"""Writes that must not be lost and must not stop the server: the retry policy.

The registration, CDR and events stores commit at the end of each receive batch. When
the disk fails them (locked by another process, full, read-only), the store
rolls back, keeps its rows in memory and tries again ``RETRY_DELAY`` later
through the server's timer loop, without trying on every batch meanwhile.
The log says so once when the fault starts and once when it clears.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

log = logging.getLogger("minisip.storage")

RETRY_DELAY = 1.0  #: seconds between attempts while writes fail


class Retry:
    """The failure state of one store (wall-clock times)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing_since: float | None = None
        self.retry_at: float | None = None  #: next attempt while failing, else None
        self.errors = 0  #: failed attempts, for status

    def may_try(self, now: float) -> bool:
        return self.retry_at is None or now >= self.retry_at

    def failed(self, exc: Exception, now: float, pending: int) -> None:
        self.errors += 1
        self.retry_at = now + RETRY_DELAY
        if self.failing_since is None:
            self.failing_since = now
            log.error("%s not written (%s): %d kept in memory, trying again every %g s",
                      self.what, exc, pending, RETRY_DELAY)

    def succeeded(self, now: float) -> None:
        if self.failing_since is not None:
            log.warning("%s written again after %.1f s of failures", self.what,
                        now - self.failing_since)
        self.failing_since = self.retry_at = None


def transaction(db: sqlite3.Connection, write: Callable[[sqlite3.Connection], object]) -> None:
    """``write`` in one transaction; when the disk refuses, rolled back and raised."""
    try:
        db.execute("BEGIN")
        write(db)
        db.execute("COMMIT")
    except sqlite3.Error:
        rollback(db)
        raise


def rollback(db: sqlite3.Connection) -> None:
    """End a failed transaction so the next attempt can BEGIN again."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the connection itself is broken: say so
            log.error("rollback failed: %s", exc)
