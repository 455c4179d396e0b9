"""Voicemail: leaving a message, listening to one's messages, keeping the mailbox.

One app, two uses, told apart by the plan's argument:

* ``voicemail(101)`` -- a call to 101 nobody took (local_user's treatment), or a
  ``voicemail:101`` dial-plan route: the caller hears "not available, please
  leave a message after the tone" (a key skips it), a beep, and is recorded
  until hang-up, ``#``, ``silence_seconds`` without voice or
  ``max_message_seconds``. A recording with no voice at all (a caller who hung
  up or kept silent) is not kept. The message is committed before the BYE's
  200 leaves (mailbox.py), queued for mail when the user has a
  ``mail_address`` and an SMTP server is set, and the lamp changes.
* ``voicemail()`` -- the voicemail feature code (``*97``) or a ``voicemail``
  route, dialled from a user's own phone (authenticated: no PIN): "you have N
  new messages (and M saved messages)", then each message, new ones first and
  oldest first, with its caller and time. During or after a message ``7``
  deletes it, ``9`` keeps it, ``#`` goes to the next (kept); a message that
  started playing counts as heard.

The service also runs the mail queue and deletes messages older than
``keep_days`` (at start and every hour), and gives the message-summary
package its ``mailbox_counts`` and change listeners.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import trio

from ...config.schema import Snapshot
from ...media.prompts import number_prompts, time_prompts
from .mail import MailQueue
from .mailbox import Mailbox, Message
from .session import AppSession, Recording

log = logging.getLogger(__name__)

EXPIRE_EVERY = 3600.0
MENU_WAIT = 5.0  #: seconds to wait for a key after the menu before the next message
_KEEP, _DELETE, _NEXT = "9", "7", "#"


class VoicemailService:
    def __init__(self, data_dir: Path, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot
        self.mailbox = Mailbox(data_dir)
        self.mailbox.recover()
        self.mail = MailQueue(self.mailbox, snapshot)
        self._settings = snapshot().services.voicemail
        #: sends what the SIP layers queued (set by the server): lamp NOTIFYs leave at once
        self.flush: Callable[[], None] = lambda: None

    # -- what the server and the message-summary package use ----------------------------
    def mailbox_counts(self, user: str) -> tuple[int, int]:
        """(new, old) messages of ``user``: RFC 3842's Voice-Message counts."""
        return self.mailbox.counts(user)

    @property
    def changed(self) -> list[Callable[[str], None]]:
        """Listeners told the user whose counts changed (``mwi_changed``)."""
        return self.mailbox.changed

    def commit(self) -> None:
        self.mailbox.commit()

    def _stored(self) -> None:
        """Commit a change made outside a receive batch and send what it queued (the
        NOTIFYs of the lamps; flushing commits first, so they confirm stored state)."""
        self.mailbox.commit()
        self.flush()

    def close(self) -> None:
        self.mailbox.close()

    def reloaded(self, snap: Snapshot) -> None:
        settings = snap.services.voicemail
        if settings != self._settings:  # perhaps the SMTP settings were what failed
            self._settings = settings
            self.mail.retry_all()
            self.mailbox.expire(settings.keep_days)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.mail.run)
            task_status.started()
            while True:
                gone = self.mailbox.expire(self.snapshot().services.voicemail.keep_days)
                self._stored()
                if gone:
                    log.info("voicemail: %d messages older than keep_days deleted", gone)
                await trio.sleep(EXPIRE_EVERY)

    # -- the app ------------------------------------------------------------------------------
    async def __call__(self, session: AppSession) -> None:
        await session.confirmed()
        if session.argument:
            await self.deposit(session, session.argument)
        else:
            await self.access(session, session.call.caller)

    async def deposit(self, session: AppSession, user: str) -> None:
        snap = self.snapshot()
        settings = snap.services.voicemail
        u = snap.users.get(user)
        mail_to = u.mail_address if u is not None and settings.smtp_server else ""
        await session.prompt("not_available", "leave_message")  # a key skips the greeting
        await session.play("beep")
        message = self.mailbox.start(user, session.call.caller, mail_to)

        def stored(rec: Recording) -> None:  # also on hang-up: synchronously, before the 200
            if rec.voiced:
                self.mailbox.finish(message, rec.seconds)
                self.mail.wake()
                log.info("voicemail %d for %s from %s: %.1f s (%s)", message.id, user,
                         message.caller, rec.seconds, rec.ended_by)
            else:
                self.mailbox.discard(message)
        rec = await session.record(message.path, max_seconds=settings.max_message_seconds,
                                   silence_seconds=settings.silence_seconds, stop_keys="#",
                                   on_end=stored)
        self._stored()
        await session.play(*(["message_saved"] if rec.voiced else []), "goodbye")
        session.hangup()

    async def access(self, session: AppSession, user: str) -> None:
        lang = session.language
        messages = self.mailbox.messages(user)
        new = [m for m in messages if not m.heard]
        old = [m for m in messages if m.heard]
        intro = ["you_have", *number_prompts(lang, len(new)),
                 "new_message" if len(new) == 1 else "new_messages"]
        if old:
            intro += ["and", *number_prompts(lang, len(old)),
                      "saved_message" if len(old) == 1 else "saved_messages"]
        await session.prompt(*intro)  # a key starts the first message at once
        for m in [*new, *old]:
            if await self._listen(session, m) == _DELETE:
                self.mailbox.delete(m.id)
                self._stored()
                await session.play("message_deleted")
        await session.play("no_more_messages", "goodbye")
        session.hangup()

    async def _listen(self, session: AppSession, m: Message) -> str | None:
        """Play one message with its caller and time; the key that ended it."""
        self.mailbox.mark_heard(m)
        self._stored()
        when = time.localtime(m.received)
        head = ["message_from", *(f"digits/{c}" for c in m.caller if c.isdigit()),
                "received_at", *time_prompts(session.language, when.tm_hour, when.tm_min)]
        key = await session.prompt(*head, m.path, "voicemail_menu", timeout=MENU_WAIT)
        while key is not None and key not in (_KEEP, _DELETE, _NEXT):
            key = await session.prompt("voicemail_menu", timeout=MENU_WAIT)
        return key
