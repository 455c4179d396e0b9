"""The mailbox (SQLite + WAV files), the mail of a message and its queue against a
real SMTP server (aiosmtpd on loopback), numbers and times as prompts, and where
the attendant sends a keyed number."""
from __future__ import annotations

import shutil
import sqlite3
import wave
from pathlib import Path

import pytest
import trio

from minisip.config.loader import load_snapshot
from minisip.config.schema import Snapshot, Voicemail
from minisip.media.prompts import NUMBER_WORDS, number_prompts, prompt_path, time_prompts
from minisip.media.recorder import repair_wav
from minisip.pbx.apps import mail
from minisip.pbx.apps.attendant import destination
from minisip.pbx.apps.mailbox import Mailbox, Message
from tests.mailserver import MailServer

SHIPPED = Path(__file__).resolve().parents[2] / "configs"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def wav(path: Path, seconds: float) -> bytes:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * int(seconds * 8000 * 2 / 256))
    return path.read_bytes()


def leave(box: Mailbox, user: str, caller: str, seconds: float = 1.0,
          mail_to: str = "") -> Message:
    m = box.start(user, caller, mail_to)
    wav(m.path, seconds)
    box.finish(m, seconds)
    box.commit()
    return m


# -- the mailbox -------------------------------------------------------------------------

def test_messages_are_counted_new_and_old_and_listeners_hear_each_change(tmp_path: Path
                                                                        ) -> None:
    box = Mailbox(tmp_path)
    heard: list[str] = []
    box.changed.append(heard.append)
    a = leave(box, "101", "100")
    b = leave(box, "101", "102")
    leave(box, "102", "100")
    assert box.counts("101") == (2, 0) and box.counts("102") == (1, 0)
    assert box.counts("100") == (0, 0)
    box.mark_heard(box.get(a.id))  # type: ignore[arg-type]
    assert box.counts("101") == (1, 1)
    assert box.delete(b.id) is not None and not b.path.exists()
    assert box.counts("101") == (0, 1)
    assert heard == ["101", "101", "102", "101", "101"]
    assert [m.caller for m in box.messages("101")] == ["100"]
    assert box.delete(b.id) is None


def test_a_message_being_recorded_is_not_counted_and_files_sit_under_the_user(tmp_path: Path
                                                                             ) -> None:
    box = Mailbox(tmp_path)
    m = box.start("101", "100")
    assert m.path.parent == tmp_path / "voicemail" / "101" and m.path.suffix == ".wav"
    assert box.counts("101") == (0, 0) and box.messages() == []
    box.discard(m)
    box.commit()
    assert box.messages() == [] and box.get(m.id) is None


def test_commit_makes_a_message_visible_to_another_process(tmp_path: Path) -> None:
    box = Mailbox(tmp_path)
    m = box.start("101", "100")
    wav(m.path, 1)
    box.finish(m, 1.0)

    def others_see() -> int:
        with sqlite3.connect(tmp_path / "voicemail" / "voicemail.db") as db:
            return db.execute("SELECT COUNT(*) FROM messages WHERE state = 'ready'"
                              ).fetchone()[0]
    assert others_see() == 0
    box.commit()
    assert others_see() == 1


def test_a_recording_cut_by_a_crash_is_repaired_and_kept(tmp_path: Path) -> None:
    box = Mailbox(tmp_path)
    m = box.start("101", "100", "u@example.com")
    data = wav(m.path, 2.0)
    m.path.write_bytes(data[:4] + b"\0\0\0\0" + data[8:40] + b"\0\0\0\0" + data[44:] + b"x")
    lost = box.start("101", "102")  # a recording with nothing on disk: dropped
    box.db.close()  # the process dies here
    again = Mailbox(tmp_path)
    recovered = again.recover()
    assert [r.id for r in recovered] == [m.id]
    (kept,) = again.messages("101")
    assert kept.duration == pytest.approx(2.0) and kept.caller == "100"
    with wave.open(str(kept.path)) as w:
        assert w.getnframes() == 16000
    assert again.get(lost.id) is None
    assert list(again.pending_mail()) == [m.id]
    assert repair_wav(tmp_path / "nothing.wav") is None


def test_expire_deletes_messages_older_than_keep_days(tmp_path: Path) -> None:
    clock = Clock()
    box = Mailbox(tmp_path, now=clock)
    old = leave(box, "101", "100")
    clock.t += 2 * 86400
    new = leave(box, "101", "102")
    assert box.expire(0) == 0
    assert box.expire(3) == 0
    assert box.expire(1) == 1
    assert [m.id for m in box.messages()] == [new.id] and not old.path.exists()


def test_deleting_a_message_drops_its_mail(tmp_path: Path) -> None:
    box = Mailbox(tmp_path)
    m = leave(box, "101", "100", mail_to="u@example.com")
    assert [j.message.id for j in box.mail_due()] == [m.id]
    box.delete(m.id)
    box.commit()
    assert box.mail_due() == [] and box.next_mail() is None


# -- mail ----------------------------------------------------------------------------------

def settings(server: MailServer | None = None, **kw: object) -> Voicemail:
    base: dict[str, object] = dict(smtp_server="127.0.0.1", from_address="pbx@example.com",
                                   smtp_security="none")
    if server is not None:
        base.update(smtp_port=server.port, smtp_security=server.security)
    base.update(kw)
    return Voicemail(**base)  # type: ignore[arg-type]


def test_the_mail_tells_caller_time_and_duration_and_carries_the_wav(tmp_path: Path) -> None:
    box = Mailbox(tmp_path)
    m = box.start("101", "100", "bob@example.com")
    data = wav(m.path, 3.0)
    box.finish(m, 3.04)
    box.commit()
    (m,) = box.messages()
    mail_ = mail.compose(m, settings(), caller_name="Alice", wav=data)
    assert mail_["From"] == "pbx@example.com" and mail_["To"] == "bob@example.com"
    assert mail_["Subject"] == "Voice message from Alice <100> (3 s)"
    text = mail_.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Alice <100>" in text and "3 seconds" in text and "mailbox 101" in text
    (att,) = list(mail_.iter_attachments())
    assert att.get_content_type() == "audio/wav" and att.get_content() == data
    assert att.get_filename().startswith("voicemail-101-")


@pytest.mark.parametrize("security, login", [("none", None), ("starttls", ("vm", "s3cret")),
                                             ("tls", ("vm", "s3cret"))])
def test_mail_reaches_a_real_smtp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         security: str, login: tuple[str, str] | None) -> None:
    with MailServer(tmp_path, security=security, login=login) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))  # trust the test server
        box = Mailbox(tmp_path)
        m = leave(box, "101", "100", mail_to="bob@example.com")
        data = m.path.read_bytes()
        (m,) = box.messages()
        kw = dict(smtp_username=login[0], smtp_password=login[1]) if login else {}
        mail.send(mail.compose(m, settings(server), wav=data), settings(server, **kw))
        (got,) = server.wait(1)
        assert got["To"] == "bob@example.com" and got["From"] == "pbx@example.com"
        assert server.messages[0][:2] == ("pbx@example.com", ["bob@example.com"])  # envelope
        assert next(got.iter_attachments()).get_content() == data
        assert server.logins == ([login[0]] if login else [])


def test_only_a_5xx_refusal_ends_a_mail_job() -> None:
    smtplib = mail.smtplib
    assert mail.permanent(smtplib.SMTPDataError(554, b"rejected"))
    assert mail.permanent(smtplib.SMTPRecipientsRefused({"a@b": (550, b"no such user")}))
    assert not mail.permanent(smtplib.SMTPRecipientsRefused({"a@b": (450, b"try later")}))
    assert not mail.permanent(smtplib.SMTPDataError(451, b"try later"))
    assert not mail.permanent(ConnectionRefusedError())
    # a wrong login is fixed in services.yaml, and a reload retries at once
    assert not mail.permanent(smtplib.SMTPAuthenticationError(535, b"bad credentials"))


def test_retry_delay_doubles_up_to_its_cap() -> None:
    assert [mail.retry_delay(n) for n in range(4)] == [5.0, 10.0, 20.0, 40.0]
    assert mail.retry_delay(50) == mail.RETRY_MAX


def snapshot_with(tmp_path: Path, replace: dict[str, str] | None = None) -> Snapshot:
    """The shipped configuration with services.yaml lines replaced."""
    d = tmp_path / "cfg"
    shutil.copytree(SHIPPED, d)
    p = d / "services.yaml"
    text = p.read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    p.write_text(text)
    return load_snapshot(d)


async def test_the_queue_retries_while_smtp_is_down_and_loses_nothing_across_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "RETRY_FIRST", 0.2)
    server = MailServer(tmp_path)
    snap = _with_smtp(snapshot_with(tmp_path), server.port)
    box = Mailbox(tmp_path)
    m = leave(box, "101", "100", mail_to="bob@example.com")
    queue = mail.MailQueue(box, lambda: snap)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        with trio.fail_after(10):
            while queue.failures < 2:  # nobody listens: it fails, waits, fails again
                await trio.sleep(0.05)
        attempts, error = box.pending_mail()[m.id]
        assert attempts >= 2 and "Connection refused" in error
        nursery.cancel_scope.cancel()
    box.close()
    box = Mailbox(tmp_path)  # a restart: the job is still there
    assert list(box.pending_mail()) == [m.id]
    with server:
        queue = mail.MailQueue(box, lambda: snap)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            with trio.fail_after(10):
                while queue.sent < 1:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert len(server.wait(1)) == 1 and box.pending_mail() == {}


def _with_smtp(snap: Snapshot, port: int) -> Snapshot:
    import dataclasses
    vm = dataclasses.replace(snap.services.voicemail, smtp_server="127.0.0.1", smtp_port=port,
                             smtp_security="none")
    return dataclasses.replace(snap, services=dataclasses.replace(snap.services, voicemail=vm))


# -- numbers and times as prompts -----------------------------------------------------------

@pytest.mark.parametrize("language, n, words", [
    ("en", 0, "0"), ("en", 7, "7"), ("en", 13, "13"), ("en", 20, "20"), ("en", 42, "40 2"),
    ("en", 100, "1 hundred"), ("en", 305, "3 hundred 5"), ("en", 999, "9 hundred 90 9"),
    ("en", 1234, "1 2 3 4"),
    ("zh", 7, "7"), ("zh", 10, "10"), ("zh", 12, "10 2"), ("zh", 20, "2 10"),
    ("zh", 42, "4 10 2"), ("zh", 100, "1 hundred"), ("zh", 105, "1 hundred 0 5"),
    ("zh", 110, "1 hundred 1 10"), ("zh", 342, "3 hundred 4 10 2"),
])
def test_numbers_are_said_in_words(language: str, n: int, words: str) -> None:
    assert number_prompts(language, n) == [f"digits/{w}" for w in words.split()]


@pytest.mark.parametrize("language, hour, minute, said", [
    ("en", 14, 30, "digits/14 digits/30"), ("en", 9, 5, "digits/9 digits/oh digits/5"),
    ("en", 14, 0, "digits/14 digits/hundred"), ("en", 23, 47, "digits/20 digits/3 digits/40 "
                                                              "digits/7"),
    ("zh", 14, 30, "digits/10 digits/4 o_clock digits/3 digits/10 minutes"),
    ("zh", 9, 5, "digits/9 o_clock digits/0 digits/5 minutes"),
    ("zh", 8, 0, "digits/8 o_clock"),
])
def test_times_are_said_as_the_language_does(language: str, hour: int, minute: int,
                                             said: str) -> None:
    assert time_prompts(language, hour, minute) == said.split()


@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_word_numbers_use_exists_in_its_language(language: str) -> None:
    for name in NUMBER_WORDS[language]:
        assert prompt_path(language, name).parent.parts[-2:][-1] in (language, "digits")
        assert language in prompt_path(language, name).parts


# -- the attendant's destinations -------------------------------------------------------------

@pytest.mark.parametrize("keyed, where", [
    ("101", "101"),  # an extension
    ("1", "700"),  # a menu entry wins over the extension it might start
    ("0", "102"),  # the operator
    ("555", None),  # no such number
    ("", None),  # nothing keyed
    ("9123", None),  # outside, and no line: the dial plan refuses it
    ("*78", "*78"),  # a feature code is a number like any other
    ("*97", None),  # ... with its right: 100 has no voicemail
])
def test_the_attendant_sends_a_keyed_number_where_the_caller_could_dial(
        tmp_path: Path, keyed: str, where: str | None) -> None:
    snap = snapshot_with(tmp_path, {
        '  operator: ""': '  operator: "102"',
        "  menu: {}": '  menu:\n    "1": {number: "700"}',
        "hunt_groups: {}": 'hunt_groups:\n  sales: {number: "700", members: ["101"]}'})
    assert destination(snap, "100", keyed) == where


# -- what the message-summary package (MWI) gets --------------------------------------------

def test_the_service_gives_mailbox_counts_and_tells_every_change(tmp_path: Path) -> None:
    from minisip.pbx.apps.voicemail import VoicemailService
    snap = snapshot_with(tmp_path)
    (tmp_path / "data").mkdir()
    vm = VoicemailService(tmp_path / "data", lambda: snap)
    told: list[str] = []
    vm.changed.append(told.append)  # what EventService.mwi_changed is wired to
    assert vm.mailbox_counts("101") == (0, 0)
    m = leave(vm.mailbox, "101", "100")
    assert vm.mailbox_counts("101") == (1, 0) and told == ["101"]
    vm.mailbox.mark_heard(vm.mailbox.get(m.id))  # type: ignore[arg-type]
    assert vm.mailbox_counts("101") == (0, 1) and told == ["101", "101"]
    vm.mailbox.delete(m.id)
    assert vm.mailbox_counts("101") == (0, 0) and told == ["101"] * 3
    vm.close()
