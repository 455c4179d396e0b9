"""A real softphone leaves a voice message: baresip, whose microphone plays 440 Hz,
calls 101 (offline, with voicemail), hears the greeting, talks, hangs up. The
message minisip stored is that tone, and what baresip heard was the prompts."""
from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from minisip.media.player import read_wav_pcm
from tests.helpers import need
from tests.interop.apps import app_server
from tests.interop.baresip import (
    MODULES, Baresip, SipProxy, dominant_frequency, heard, loud_part, wait_online, write_tone,
)

pytestmark = pytest.mark.interop


def test_baresip_leaves_a_message_that_is_its_own_voice(tmp_path: Path) -> None:
    need("baresip")
    for module in ("g711", "aufile", "aubridge", "sndfile", "ctrl_tcp", "menu", "account"):
        if not (MODULES / f"{module}.so").exists():
            pytest.skip(f"baresip module {module} missing in {MODULES}")
    server = app_server(tmp_path, {"100": "", "101": "voicemail: true"})
    server.start()
    with ExitStack() as stack:
        stack.callback(server.stop)
        proxy = stack.enter_context(SipProxy(("127.0.0.1", server.port)))
        phone = Baresip(tmp_path, "100", "100", ("127.0.0.1", server.port),
                        source_wav=write_tone(tmp_path / "mic.wav", 440, 30),
                        proxy_port=proxy.port)
        stack.callback(phone.close)
        phone.start()
        wait_online(server.cli, ["100"], timeout=10)
        phone.dial("101")
        phone.wait_event("CALL_ESTABLISHED")
        time.sleep(8.0)  # about 5.5 s of greeting and beep, then it talks
        phone.hangup()
        phone.wait_event("CALL_CLOSED")
        deadline = time.monotonic() + 5
        listed: list[dict[str, object]] = []
        while not listed and time.monotonic() < deadline:
            listed = json.loads(server.cli("voicemail", "list", "--json").stdout or "[]")
            time.sleep(0.1)
        assert len(listed) == 1, server.log()
        (msg,) = listed
        assert msg["caller"] == "100" and 1.5 <= float(msg["duration"]) <= 4.0  # type: ignore[arg-type]
        raw = read_wav_pcm(str(msg["file"]))
        samples = list(memoryview(raw).cast("h"))
        voice = loud_part(samples, 8000)
        assert len(voice) >= 8000, "the message is silent"
        assert abs(dominant_frequency(voice[:4000], 8000) - 440) <= 20
        dec, _ = phone.recordings()
        heard_for, _ = heard(dec)
        assert heard_for >= 3.0, f"baresip heard {heard_for:.1f} s of prompts"
