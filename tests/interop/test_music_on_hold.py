"""Music on hold on a call whose media goes direct (relay_media auto, no NAT):
the held party is moved to minisip's relay for the hold, hears the music, and
talks to the other phone directly again after the resume."""
from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from minisip.media.player import load_audio
from minisip.media.prompts import prompt_path
from tests.helpers import ServerProcess
from tests.interop.apps import app_server
from tests.interop.pyphone import HOST, PyPhone

pytestmark = pytest.mark.interop


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def direct_call(stack: ExitStack, server: ServerProcess) -> tuple[PyPhone, PyPhone]:
    a = stack.enter_context(PyPhone(server.port, "100", "100"))
    b = stack.enter_context(PyPhone(server.port, "101", "101"))
    assert b.register().status == 200, server.log()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(a.call("101")))
    t.start()
    b.answer_incoming()
    t.join(10)
    assert result and result[0].status == 200, server.log()  # type: ignore[attr-defined]
    return a, b


def media_of(server: ServerProcess) -> object:
    (call,) = json.loads(server.cli("calls", "--json").stdout)
    return call["media"]


def tone_wav(path: Path) -> None:
    import math
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(int(9000 * math.sin(2 * math.pi * 300 * i / 8000)).to_bytes(
            2, "little", signed=True) for i in range(8000)))


@pytest.mark.parametrize("music", ["", "custom.wav"])
def test_the_held_party_moves_to_the_relay_hears_music_and_comes_back(
        tmp_path: Path, stack: ExitStack, music: str) -> None:
    server = app_server(tmp_path, {"100": "", "101": ""},
                        {'music_on_hold_file: ""': f'music_on_hold_file: "{music}"'})
    if music:
        tone_wav(server.config_dir / music)
    server.start()
    stack.callback(server.stop)
    a, b = direct_call(stack, server)
    assert b.remote_sdp is not None and b.remote_sdp.rtp_address == (HOST, a.rtp_port), \
        "the call's media is not direct"
    assert media_of(server) is None

    assert a.reinvite("sendonly").status == 200, server.log()  # 100 holds 101
    relay = b.remote_sdp.rtp_address
    assert relay is not None and relay != (HOST, a.rtp_port), "101 was not moved to the relay"
    held = b.received_rtp(2.0)
    assert held and {r.source for r in held} == {relay}
    assert 90 <= len(held) <= 110, f"{len(held)} packets in 2 s, not ~50/s"
    seqs = [r.packet.sequence for r in held]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:])), "sequence gaps"
    (pt,) = {r.packet.payload_type for r in held}
    path = server.config_dir / music if music else prompt_path("en", "hold_music")
    audio = load_audio(path, "PCMU" if pt == 0 else "PCMA")
    audio += audio[:160]
    first = audio.find(held[0].packet.payload)
    assert first >= 0 and first % 160 == 0, "not the music on hold"
    for i, r in enumerate(held):
        off = (first + 160 * i) % (len(audio) - 160)
        assert r.packet.payload == audio[off:off + 160], f"frame {i} is not the music's next"
    assert media_of(server) is not None
    # the held phone refreshes its session: only the holder's resume ends the hold
    assert b.reinvite("sendrecv").status == 200, server.log()
    still = b.received_rtp(0.5)
    assert len(still) >= 20 and {r.source for r in still} == {relay}

    assert a.reinvite("sendrecv").status == 200, server.log()  # resume
    assert b.remote_sdp.rtp_address == (HOST, a.rtp_port), "media did not go direct again"
    assert a.remote_sdp is not None and a.remote_sdp.rtp_address == (HOST, b.rtp_port)
    time.sleep(0.1)
    since = time.monotonic()
    a.send_audio(0.4)
    time.sleep(0.1)
    after = [r for r in b.rtp_log if r.at >= since]
    assert after and {r.source for r in after} == {(HOST, a.rtp_port)}, "not direct"
    assert media_of(server) is None
    assert a.bye().status == 200


def test_a_holder_without_music_on_hold_leaves_the_media_direct(tmp_path: Path,
                                                                stack: ExitStack) -> None:
    server = app_server(tmp_path, {"100": "music_on_hold: false", "101": ""})
    server.start()
    stack.callback(server.stop)
    a, b = direct_call(stack, server)
    assert a.reinvite("sendonly").status == 200
    assert b.remote_sdp is not None and b.remote_sdp.rtp_address == (HOST, a.rtp_port)
    assert b.received_rtp(0.5) == [] and media_of(server) is None
    assert a.bye().status == 200
