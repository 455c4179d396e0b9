"""Voicemail end to end: scripted phones (pyphone) leave and hear messages through a
running minisip; a real SMTP server (aiosmtpd) receives the mails.

The caller's audio is known sample by sample, so the recording is compared with
it exactly, and so is what the user hears when listening to the message.
"""
from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
import wave
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, free_port
from tests.interop.apps import (
    app_server, heard, pcm, prompt_pcm, sent_pcm, smtp_settings, wait_heard, wait_playing,
    wait_quiet,
)
from tests.interop.pyphone import PyPhone
from tests.mailserver import MailServer

pytestmark = pytest.mark.interop

MAILBOX = 'voicemail: true, mail_address: "bob@example.com"'


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def start(stack: ExitStack, server: ServerProcess) -> ServerProcess:
    server.start()
    stack.callback(server.stop)
    return server


def phone(stack: ExitStack, server: ServerProcess, user: str) -> PyPhone:
    return stack.enter_context(PyPhone(server.port, user, user))


def messages(server: ServerProcess, *args: str) -> list[dict[str, object]]:
    r = server.cli("voicemail", "list", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def wav_pcm(path: str | Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        return w.readframes(w.getnframes())


def after_the_beep(caller: PyPhone, server: ServerProcess, number: str = "101") -> float:
    """Call ``number``, skip the greeting with a key (it is heard in full in the first
    test), wait for the end of the beep; returns when the beep ended."""
    assert caller.call(number).status == 200, server.log()
    wait_playing(caller)  # the greeting began
    caller.send_rtp_events("1")
    return wait_quiet(caller)


def leave_message(caller: PyPhone, server: ServerProcess, number: str = "101",
                  end: str = "#", greeting: bool = False) -> float:
    """Call ``number``, hear the greeting (or skip it) and the beep, speak three tones,
    end with ``end`` ("#", or "bye": hang up); returns when the speaking ended."""
    if greeting:
        assert caller.call(number).status == 200, server.log()
        wait_quiet(caller)
        assert pcm(heard(caller)) == prompt_pcm("en", "not_available", "leave_message") \
            + prompt_pcm("en", "beep"), "not the greeting and the beep"
    else:
        after_the_beep(caller, server, number)
    for freq in (440, 660, 880):
        caller.send_audio(0.6, freq)
    said = time.monotonic()
    if end == "#":
        caller.send_rtp_events("#")
    else:
        assert caller.bye().status == 200
    return said


class Lamp:
    """The message-summary NOTIFYs a phone gets for its subscription, one after another."""

    def __init__(self, phone: PyPhone, call_id: str) -> None:
        self.phone, self.call_id, self.seen = phone, call_id, 0

    def next(self, timeout: float = 10.0) -> tuple[bytes, bytes]:
        """(Messages-Waiting, Voice-Message counts) of the next NOTIFY."""
        self.seen += 1
        n = self.phone.wait_requests("NOTIFY", self.seen, call_id=self.call_id,
                                     timeout=timeout)[-1]
        waiting = re.search(rb"Messages-Waiting: (\w+)", n.body)
        counts = re.search(rb"Voice-Message: (\d+/\d+)", n.body)
        assert waiting and counts, n.body
        return waiting.group(1), counts.group(1)


# -- leave, mail, listen, delete -----------------------------------------------------------

def test_a_message_is_recorded_mailed_heard_and_deleted(tmp_path: Path,
                                                        stack: ExitStack) -> None:
    smtp = stack.enter_context(MailServer(tmp_path))
    server = start(stack, app_server(tmp_path, {"100": "", "101": MAILBOX},
                                     smtp_settings(smtp.port)))
    user = phone(stack, server, "101")  # 101's phone watches its mailbox: the lamp
    sub = user.subscribe("101", "message-summary")
    assert sub.status == 200, server.log()
    lamp = Lamp(user, sub.call_id)
    assert lamp.next() == (b"no", b"0/0")
    caller = phone(stack, server, "100")
    said = leave_message(caller, server, greeting=True)
    assert lamp.next() == (b"yes", b"1/0"), "the lamp did not go on"
    caller.wait_requests("BYE", 1, timeout=15)  # "message saved, goodbye", and hung up
    after = pcm(heard(caller, said))
    assert prompt_pcm("en", "message_saved", "goodbye")[:8000] in after

    (msg,) = messages(server)
    assert (msg["user"], msg["caller"], msg["heard"]) == ("101", "100", False)
    assert msg["duration"] == pytest.approx(1.8, abs=0.1)
    recorded = wav_pcm(str(msg["file"]))
    assert recorded == sent_pcm(caller), "the recording is not what the caller said"

    (mail,) = smtp.wait(1)
    assert mail["To"] == "bob@example.com" and mail["From"] == "minisip@localhost"
    assert "100" in mail["Subject"] and "(2 s)" in mail["Subject"]
    (wav,) = list(mail.iter_attachments())
    assert wav.get_content_type() == "audio/wav"
    assert wav.get_content() == Path(str(msg["file"])).read_bytes()

    assert user.call("*97").status == 200, server.log()
    wait_heard(user, prompt_pcm("en", "you_have", "digits/1", "new_message"), timeout=15)
    wait_heard(user, recorded, timeout=20)  # the message itself, sample for sample
    assert messages(server)[0]["heard"] is True
    assert lamp.next() == (b"no", b"0/1"), "heard: the lamp goes off, one old message"
    user.send_rtp_events("7")
    wait_heard(user, prompt_pcm("en", "message_deleted")[:8000])
    assert messages(server) == [] and not Path(str(msg["file"])).exists()
    assert lamp.next() == (b"no", b"0/0")
    assert user.bye().status == 200


def test_a_hang_up_ends_the_message_and_it_is_on_disk_before_the_bye_is_answered(
        tmp_path: Path, stack: ExitStack) -> None:
    """kill -9 right after the 200 to the BYE: the message is there after a restart, and
    its mail, which SMTP could not take yet, leaves once SMTP is up."""
    port = free_port()
    server = start(stack, app_server(tmp_path, {"100": "", "101": MAILBOX},
                                     smtp_settings(port)))
    caller = phone(stack, server, "100")
    leave_message(caller, server, end="bye")
    server.stop(signal.SIGKILL)
    with sqlite3.connect(server.data_dir / "voicemail" / "voicemail.db") as db:
        rows = db.execute("SELECT caller, state, duration FROM messages").fetchall()
        jobs = db.execute("SELECT COUNT(*) FROM mail_queue").fetchone()[0]
    assert len(rows) == 1 and rows[0][:2] == ("100", "ready")
    assert rows[0][2] == pytest.approx(1.8, abs=0.15) and jobs == 1
    with MailServer(tmp_path, port=port) as smtp:
        server.start()
        (msg,) = messages(server)
        # the BYE may overtake the last packets of audio (another socket): a few frames
        recorded, sent = wav_pcm(str(msg["file"])), sent_pcm(caller)
        assert sent.startswith(recorded) and len(sent) - len(recorded) <= 5 * 320
        assert next(smtp.wait(1)[0].iter_attachments()).get_content() == \
            Path(str(msg["file"])).read_bytes()


def test_smtp_down_during_the_message_mails_it_once_smtp_is_up(tmp_path: Path,
                                                               stack: ExitStack) -> None:
    port = free_port()
    server = start(stack, app_server(tmp_path, {"100": "", "101": MAILBOX},
                                     smtp_settings(port)))
    leave_message(phone(stack, server, "100"), server)
    deadline = time.monotonic() + 10
    while "not mailed yet" not in server.log():  # the first try failed
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    with MailServer(tmp_path, port=port) as smtp:  # the back-off retries within seconds
        (mail,) = smtp.wait(1, timeout=20)
        assert mail["To"] == "bob@example.com"


# -- how a message ends ------------------------------------------------------------------

@pytest.mark.parametrize("setting, speak, duration, ends_after", [
    # one second of voice, then nothing: the message ends two seconds later
    ("silence_seconds: 2", 1.0, (0.9, 1.1), 3.0),
    # the caller talks on: cut five seconds after the beep (the caller began a moment later)
    ("max_message_seconds: 5", 7.0, (4.4, 5.0), 5.0),
])
def test_silence_and_max_message_seconds_end_a_message(
        tmp_path: Path, stack: ExitStack, setting: str, speak: float,
        duration: tuple[float, float], ends_after: float) -> None:
    old = {"silence_seconds: 2": "silence_seconds: 5",
           "max_message_seconds: 5": "max_message_seconds: 120"}[setting]
    server = start(stack, app_server(tmp_path, {"100": "", "101": "voicemail: true"},
                                     {old: setting}))
    caller = phone(stack, server, "100")
    beep = after_the_beep(caller, server)
    caller.send_audio(speak)
    wait_heard(caller, prompt_pcm("en", "message_saved")[:1600], since=beep + 0.1)
    saved = [r.at for r in heard(caller, beep + 0.1)]  # "message saved, goodbye"
    assert saved[0] - beep == pytest.approx(ends_after, abs=0.4), (
        server.log(), server.cli("status", "--json").stdout)  # the loop's lag, if late
    assert caller.bye().status == 200
    (msg,) = messages(server)
    assert duration[0] <= float(msg["duration"]) <= duration[1]  # type: ignore[arg-type]


def test_a_message_without_voice_is_not_kept(tmp_path: Path, stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": "", "101": "voicemail: true"},
                                     {"silence_seconds: 5": "silence_seconds: 1"}))
    caller = phone(stack, server, "100")
    after_the_beep(caller, server)
    caller.wait_requests("BYE", 1, timeout=20)  # a second of silence, goodbye, and hung up
    assert messages(server) == []
    assert list((server.data_dir / "voicemail").glob("101/*.wav")) == []


# -- keep_days and the command line ---------------------------------------------------------

def test_keep_days_expires_old_messages_and_the_cli_shows_plays_and_deletes(
        tmp_path: Path, stack: ExitStack) -> None:
    server = app_server(tmp_path, {"100": "", "101": "voicemail: true", "102": "voicemail: true"},
                        {"keep_days: 30": "keep_days: 2"})
    from minisip.pbx.apps.mailbox import Mailbox
    box = Mailbox(server.data_dir)
    for user, age_days in (("101", 3), ("101", 1), ("102", 0)):
        m = box.start(user, "100")
        with wave.open(str(m.path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x10\x20" * 8000)
        box.finish(m, 1.0)
        box.db.execute("UPDATE messages SET received = received - ? WHERE id = ?",
                       (age_days * 86400 + 60, m.id))
        box.commit()
    box.close()
    start(stack, server)
    listed = messages(server)
    assert [(m["user"], m["id"]) for m in listed] == [("101", 2), ("102", 3)]
    assert [m["id"] for m in messages(server, "--user", "102")] == [3]

    text = server.cli("voicemail", "list").stdout
    assert "101" in text and "102" in text and "100" in text
    show = server.cli("voicemail", "show", "2")
    assert show.returncode == 0 and "caller" in show.stdout and "100" in show.stdout
    out = tmp_path / "copy.wav"
    assert server.cli("voicemail", "play", "2", "--output", str(out)).returncode == 0
    assert wav_pcm(out) == b"\x10\x20" * 8000
    assert server.cli("voicemail", "delete", "2").returncode == 0
    assert [m["id"] for m in messages(server)] == [3]
    missing = server.cli("voicemail", "show", "2")
    assert missing.returncode != 0 and "no message 2" in missing.stderr
