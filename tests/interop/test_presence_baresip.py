"""A real softphone on the events service: baresip watches presence, publishes
its own, and sends and receives SIP MESSAGE through minisip.

baresip 1.0's presence module subscribes to each contact marked
``;presence=p2p`` and logs every change of a contact's status (Online, Busy,
Offline); with the stdio UI it prints each MESSAGE it receives. Those logs are
what these tests read. The calls that change 101's state come from a ``PyPhone``.
(Its mwi module is left out: in 1.0.0 it can loop forever re-subscribing when
the registration completes before its start-up timer; message-summary is tested
with a scripted phone in test_presence.py.)
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, make_server, need
from tests.interop.baresip import Baresip, wait_online, write_tone
from tests.interop.pyphone import PyPhone
from tests.interop.test_presence import GAP, stats, users, wait_watched

pytestmark = pytest.mark.interop


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[ServerProcess]:
    need("baresip")
    srv = make_server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def wait_log(phone: Baresip, pattern: str, timeout: float = 10.0) -> list[str]:
    """Every match of ``pattern`` in the phone's log, once there is at least one."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(pattern, phone.log_path.read_text(errors="replace"))
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in {phone.user}'s log:\n{phone.log()}")
        time.sleep(0.1)


def statuses(phone: Baresip, uri: str) -> list[tuple[str, str]]:
    text = re.sub(r"\x1b\[[0-9;]*m", "", phone.log_path.read_text(errors="replace"))
    return re.findall(rf"<{re.escape(uri)}> changed status from (\w+) to (\w+)", text)


def test_baresip_sees_101_busy_free_and_offline(pbx: ServerProcess, tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "tone.wav", 440, 2.0)
    reg = ("127.0.0.1", pbx.port)
    uri = f"sip:101@127.0.0.1:{pbx.port}"
    with Baresip(tmp_path, "101", "101", reg, source_wav=wav) as b101, \
            Baresip(tmp_path, "100", "100", reg, source_wav=wav,
                    modules=("contact.so", "presence.so"),
                    contacts=(f'"Bob" <{uri}>;presence=p2p',)) as b100, \
            PyPhone(pbx.port, "102", "102") as p102:
        b101.start()
        b100.start()
        wait_online(pbx.cli, ["100", "101"])
        wait_watched(pbx, "101", 1)
        deadline = time.monotonic() + 10
        while "Online" not in b100.command("contacts")["data"]:  # the first NOTIFY: open
            assert time.monotonic() < deadline, b100.log()
            time.sleep(0.1)
        assert p102.call("101").status == 200  # baresip answers by itself
        wait_log(b100, rf"<{re.escape(uri)}>\S* changed status from \S+ to \S*Busy")
        time.sleep(GAP)
        assert p102.bye().status == 200
        deadline = time.monotonic() + 10
        while len(statuses(b100, uri)) < 2:
            assert time.monotonic() < deadline, b100.log()
            time.sleep(0.1)
        b101.close()  # unregisters
        deadline = time.monotonic() + 10
        while len(statuses(b100, uri)) < 3:
            assert time.monotonic() < deadline, b100.log()
            time.sleep(0.1)
        assert statuses(b100, uri) == [("Online", "Busy"), ("Busy", "Online"),
                                       ("Online", "Offline")]


def test_baresip_messages_arrive_now_or_when_the_phone_registers(pbx: ServerProcess,
                                                                tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "tone.wav", 440, 2.0)
    reg = ("127.0.0.1", pbx.port)
    contacts = (f'"Bob" <sip:101@127.0.0.1:{pbx.port}>', f'"Carol" <sip:102@127.0.0.1:{pbx.port}>')
    with Baresip(tmp_path, "101", "101", reg, source_wav=wav, text_ui=True) as b101, \
            Baresip(tmp_path, "100", "100", reg, source_wav=wav, modules=("contact.so",),
                    contacts=contacts) as b100, \
            Baresip(tmp_path, "102", "102", reg, source_wav=wav, text_ui=True) as b102:
        b101.start()
        b100.start()
        wait_online(pbx.cli, ["100", "101"])
        assert b100.command("message", "hello 101")["ok"]  # to the current contact: Bob
        assert wait_log(b101, r'sip:100@minisip: "([^"]*)"') == ["hello 101"]
        assert "Carol" in b100.command("contact_next")["data"]
        assert b100.command("message", "for 102 later")["ok"]
        deadline = time.monotonic() + 10
        while stats(pbx)["messages_waiting"] != 1:  # 102 is offline: stored
            assert time.monotonic() < deadline, pbx.log()
            time.sleep(0.1)
        b102.start()
        assert wait_log(b102, r'sip:100@minisip: "([^"]*)"') == ["for 102 later"]



def test_baresip_publishes_its_own_presence(pbx: ServerProcess, tmp_path: Path) -> None:
    """PUBLISH (RFC 3903): 101 declares itself offline while registered, then online."""
    wav = write_tone(tmp_path / "tone.wav", 440, 2.0)
    reg = ("127.0.0.1", pbx.port)
    uri = f"sip:101@127.0.0.1:{pbx.port}"
    with Baresip(tmp_path, "101", "101", reg, source_wav=wav, modules=("presence.so",),
                 account_params=";pubint=60") as b101, \
            Baresip(tmp_path, "100", "100", reg, source_wav=wav,
                    modules=("contact.so", "presence.so"),
                    contacts=(f'"Bob" <{uri}>;presence=p2p',)) as b100:
        b101.start()
        b100.start()
        wait_online(pbx.cli, ["100", "101"])
        wait_watched(pbx, "101", 1)
        assert b101.command("presence_offline")["ok"]
        deadline = time.monotonic() + 10
        while statuses(b100, uri) != [("Online", "Offline")]:
            assert time.monotonic() < deadline, b100.log() + b101.log()
            time.sleep(0.1)
        me = users(pbx)["101"]
        assert (me["state"], me["presence"]) == ("idle", "closed")  # registered, yet closed
        assert b101.command("presence_online")["ok"]
        while statuses(b100, uri)[-1:] != [("Offline", "Online")]:
            assert time.monotonic() < deadline, b100.log() + b101.log()
            time.sleep(0.1)
