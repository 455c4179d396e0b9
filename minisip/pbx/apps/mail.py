"""Voicemail to e-mail: the message and its sending, from the mailbox's queue.

The mail is built with the standard library's ``email`` package (text with the
caller, time and duration; the WAV attached) and sent with ``smtplib`` in a
worker thread, so a slow or unreachable SMTP server never holds up calls. The
queue lives in the mailbox's database (mailbox.py): one job per message, tried
at once, then again after 5 s, 10 s, 20 s ... up to every 15 minutes while the
server is down or answers with a temporary (4xx) error; a permanent refusal
(5xx) ends the job with an error in the log, the message stays in the mailbox.
A configuration reload tries waiting jobs again at once (the SMTP settings may
be what was wrong). Jobs survive restarts: they are rows, not tasks.
"""
from __future__ import annotations

import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import trio

from ...config.schema import Snapshot, Voicemail
from .mailbox import Mailbox, MailJob, Message

log = logging.getLogger(__name__)

RETRY_FIRST = 5.0
RETRY_MAX = 900.0
SMTP_TIMEOUT = 30.0


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones (0 = the first failed)."""
    return min(RETRY_FIRST * 2 ** min(attempts, 20), RETRY_MAX)


def compose(message: Message, settings: Voicemail, *, caller_name: str = "",
            wav: bytes) -> EmailMessage:
    """The mail of one voice message: caller, time and duration in the text, the WAV attached."""
    when = time.localtime(message.received)
    who = f"{caller_name} <{message.caller}>" if caller_name else message.caller
    seconds = round(message.duration)
    mail = EmailMessage()
    mail["From"] = settings.from_address
    mail["To"] = message.mail_to
    mail["Subject"] = f"Voice message from {who} ({seconds} s)"
    mail["Date"] = formatdate(message.received, localtime=True)
    mail["Message-ID"] = make_msgid("voicemail")
    mail.set_content(
        f"You have a new voice message in mailbox {message.user}.\n\n"
        f"From:     {who}\n"
        f"Received: {time.strftime('%Y-%m-%d %H:%M:%S %z', when)}\n"
        f"Duration: {seconds} seconds\n\n"
        "The message is attached as a WAV file.\n")
    mail.add_attachment(wav, maintype="audio", subtype="wav",
                        filename=f"voicemail-{message.user}-"
                                 f"{time.strftime('%Y%m%d-%H%M%S', when)}.wav")
    return mail


def send(mail: EmailMessage, settings: Voicemail) -> None:
    """Hand one mail to the SMTP server (blocking: run it in a worker thread)."""
    host, port = settings.smtp_server, settings.smtp_port
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(mail)


def permanent(exc: BaseException) -> bool:
    """A refusal that no retry will change: 5xx from the server (TLS and login errors
    included, since a reload can fix those the job is retried on reload anyway)."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= c < 600 for c in codes)
    return isinstance(code, int) and 500 <= code < 600 \
        and not isinstance(exc, smtplib.SMTPAuthenticationError)


class MailQueue:
    """The task that works through the mailbox's queue (one mail at a time)."""

    def __init__(self, mailbox: Mailbox, snapshot: Callable[[], Snapshot]) -> None:
        self.mailbox = mailbox
        self.snapshot = snapshot
        self._wake = trio.Event()
        self.sent = 0
        self.failures = 0

    def wake(self) -> None:
        """A new job, or new settings: look at the queue now."""
        self._wake.set()

    def retry_all(self) -> None:
        """Settings changed: every waiting job is due now."""
        self.mailbox.mail_now()
        self.wake()

    async def run(self) -> None:
        while True:
            self._wake = trio.Event()
            for job in self.mailbox.mail_due():
                await self._send(job)
            due = self.mailbox.next_mail()
            if due is None:
                await self._wake.wait()
            else:
                with trio.move_on_after(max(0.0, due - self.mailbox.now())):
                    await self._wake.wait()

    async def _send(self, job: MailJob) -> None:
        snap = self.snapshot()
        settings = snap.services.voicemail
        if not settings.smtp_server:  # mail turned off meanwhile: wait for a reload
            self.mailbox.mail_failed(job, "smtp_server is empty", RETRY_MAX)
            return
        m = job.message
        user = snap.users.get(m.caller)
        name = user.display_name if user is not None else ""

        def build_and_send() -> None:
            send(compose(m, settings, caller_name=name, wav=m.path.read_bytes()), settings)
        try:
            await trio.to_thread.run_sync(build_and_send, abandon_on_cancel=True)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            self.failures += 1
            error = f"{type(exc).__name__}: {exc}"
            if permanent(exc) or isinstance(exc, FileNotFoundError):
                log.error("voicemail %d for %s not mailed to %s: %s", m.id, m.user, m.mail_to,
                          error)
                self.mailbox.mail_failed(job, error, None)
                return
            delay = retry_delay(job.attempts)
            log.warning("voicemail %d for %s not mailed yet (%s); next try in %.0f s",
                        m.id, m.user, error, delay)
            self.mailbox.mail_failed(job, error, delay)
            return
        self.sent += 1
        log.info("voicemail %d for %s mailed to %s", m.id, m.user, m.mail_to)
        self.mailbox.mail_sent(job)
