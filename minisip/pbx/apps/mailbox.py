"""Voice messages: WAV files in data_dir/voicemail/<user>/, metadata and the mail
queue in data_dir/voicemail/voicemail.db (SQLite, WAL).

A message is a row from the moment its recording starts (``recording``), so a
server killed in the middle of a message still knows whose it was and who
left it: at the next start its WAV header is repaired from the file's size
and the message is kept (``recover``). A finished message becomes ``ready``;
only ready messages are listed, counted for the message-waiting lamp and
mailed. Changes are queued in one transaction that ``commit`` writes, which
the server does at the end of each receive batch, before the responses it
produced leave: the 200 to the caller's BYE confirms a message on disk.

The mail queue is a table too: a job per message to mail, with its attempts
and the time of its next try, so nothing is lost across restarts. Deleting a
message drops its job (a message deleted before it could be mailed is not
mailed). Listeners in ``changed`` hear the user whose counts changed (the
message-summary package's ``mwi_changed``).
"""
from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...media.recorder import repair_wav
from ..storage import open_store

log = logging.getLogger(__name__)

RECORDING, READY = "recording", "ready"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    caller TEXT NOT NULL,
    received REAL NOT NULL,
    duration REAL NOT NULL DEFAULT 0,
    heard INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    file TEXT NOT NULL,
    mail_to TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_user ON messages (user, state, heard);
CREATE TABLE IF NOT EXISTS mail_queue (
    message INTEGER PRIMARY KEY,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    user: str  #: whose mailbox
    caller: str  #: who left it (a user name or an outside number)
    received: float  #: when the recording started (Unix time)
    duration: float  #: seconds
    heard: bool
    state: str
    path: Path
    mail_to: str

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "user": self.user, "caller": self.caller,
                "received": self.received, "duration": round(self.duration, 1),
                "heard": self.heard, "file": str(self.path)}


@dataclass(frozen=True, slots=True)
class MailJob:
    message: Message
    attempts: int
    last_error: str


class Mailbox:
    def __init__(self, data_dir: Path, now: Callable[[], float] = time.time) -> None:
        self.dir = data_dir / "voicemail"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.now = now
        self.path = self.dir / "voicemail.db"
        self.db = open_store(self.path, timeout=5.0)  # the CLI writes it too
        self.db.executescript(_SCHEMA)
        self._dirty = False
        #: told the user whose (new, old) counts changed
        self.changed: list[Callable[[str], None]] = []

    # -- transactions -------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if not self._dirty:
            self.db.execute("BEGIN")
            self._dirty = True
        return self.db.execute(sql, args)

    def commit(self) -> None:
        if self._dirty:
            self._dirty = False
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self.db.close()

    def _changed(self, user: str) -> None:
        for listener in self.changed:
            listener(user)

    # -- messages -------------------------------------------------------------------------
    def start(self, user: str, caller: str, mail_to: str = "") -> Message:
        """A message is being recorded: its row (committed at once) and its file's path."""
        received = self.now()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(received))
        rel = Path(user) / f"{stamp}-{secrets.token_hex(3)}.wav"
        (self.dir / user).mkdir(parents=True, exist_ok=True)
        cur = self._write("INSERT INTO messages (user, caller, received, state, file, mail_to) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          (user, caller, received, RECORDING, str(rel), mail_to))
        self.commit()
        return Message(int(cur.lastrowid or 0), user, caller, received, 0.0, False, RECORDING,
                       self.dir / rel, mail_to)

    def finish(self, message: Message, seconds: float) -> None:
        """The recording ended: the message is ready (and queued for mail)."""
        self._write("UPDATE messages SET state = ?, duration = ? WHERE id = ?",
                    (READY, round(seconds, 3), message.id))
        if message.mail_to:
            self._write("INSERT OR IGNORE INTO mail_queue (message, next_try) VALUES (?, ?)",
                        (message.id, self.now()))
        self._changed(message.user)

    def discard(self, message: Message) -> None:
        """A recording that is no message (nothing was said): row and file go."""
        self._write("DELETE FROM messages WHERE id = ?", (message.id,))
        message.path.unlink(missing_ok=True)

    def recover(self) -> list[Message]:
        """Messages whose recording a crash interrupted: kept, with what reached the disk."""
        out = []
        for m in self._select("state = ?", (RECORDING,)):
            seconds = repair_wav(m.path)
            if seconds is None or seconds <= 0:
                self.discard(m)
                continue
            self.finish(m, seconds)
            out.append(m)
            log.info("voicemail %d for %s from %s recovered (%.1f s)", m.id, m.user, m.caller,
                     seconds)
        self.commit()
        return out

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, user, caller, received, duration, heard, state, file, mail_to "
            f"FROM messages WHERE {where} ORDER BY received, id", args).fetchall()
        return [Message(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], self.dir / r[7], r[8])
                for r in rows]

    def messages(self, user: str | None = None) -> list[Message]:
        """Ready messages, oldest first (of one user, or everyone's)."""
        if user is None:
            return self._select("state = ?", (READY,))
        return self._select("state = ? AND user = ?", (READY, user))

    def get(self, message_id: int) -> Message | None:
        found = self._select("id = ? AND state = ?", (message_id, READY))
        return found[0] if found else None

    def counts(self, user: str) -> tuple[int, int]:
        """(new, old): messages not heard yet and heard ones (RFC 3842's new/old)."""
        new = old = 0
        for heard, n in self.db.execute(
                "SELECT heard, COUNT(*) FROM messages WHERE user = ? AND state = ? "
                "GROUP BY heard", (user, READY)):
            if heard:
                old = n
            else:
                new = n
        return new, old

    def mark_heard(self, message: Message) -> None:
        if not message.heard:
            self._write("UPDATE messages SET heard = 1 WHERE id = ?", (message.id,))
            self._changed(message.user)

    def delete(self, message_id: int) -> Message | None:
        m = self.get(message_id)
        if m is None:
            return None
        self._write("DELETE FROM messages WHERE id = ?", (m.id,))
        self._write("DELETE FROM mail_queue WHERE message = ?", (m.id,))
        m.path.unlink(missing_ok=True)
        self._changed(m.user)
        return m

    def expire(self, keep_days: int) -> int:
        """Delete messages older than ``keep_days`` (0: keep them all); how many went."""
        if keep_days <= 0:
            return 0
        old = self._select("state = ? AND received < ?",
                           (READY, self.now() - keep_days * 86400.0))
        for m in old:
            self.delete(m.id)
        self.commit()
        return len(old)

    # -- the mail queue ---------------------------------------------------------------------
    def mail_due(self, limit: int = 50) -> list[MailJob]:
        rows = self.db.execute("SELECT message, attempts, last_error FROM mail_queue "
                               "WHERE next_try <= ? ORDER BY next_try LIMIT ?",
                               (self.now(), limit)).fetchall()
        out = []
        for message_id, attempts, error in rows:
            m = self.get(message_id)
            if m is None:  # its message is gone
                self._write("DELETE FROM mail_queue WHERE message = ?", (message_id,))
                continue
            out.append(MailJob(m, attempts, error))
        self.commit()
        return out

    def next_mail(self) -> float | None:
        """When the next job is due (Unix time), None when the queue is empty."""
        row = self.db.execute("SELECT MIN(next_try) FROM mail_queue").fetchone()
        return row[0] if row and row[0] is not None else None

    def mail_sent(self, job: MailJob) -> None:
        self._write("DELETE FROM mail_queue WHERE message = ?", (job.message.id,))
        self.commit()

    def mail_failed(self, job: MailJob, error: str, retry_in: float | None) -> None:
        """Try again in ``retry_in`` seconds; None: give up (the message stays)."""
        if retry_in is None:
            self._write("DELETE FROM mail_queue WHERE message = ?", (job.message.id,))
        else:
            self._write("UPDATE mail_queue SET attempts = attempts + 1, next_try = ?, "
                        "last_error = ? WHERE message = ?",
                        (self.now() + retry_in, error[:300], job.message.id))
        self.commit()

    def mail_now(self) -> None:
        """Every waiting job is due now (the SMTP settings changed)."""
        self._write("UPDATE mail_queue SET next_try = 0")
        self.commit()

    def pending_mail(self) -> dict[int, tuple[int, str]]:
        """message id -> (attempts, last error) of every job waiting."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            "SELECT message, attempts, last_error FROM mail_queue")}
