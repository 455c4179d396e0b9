"""Helpers for the tests of minisip's apps (voicemail, the attendant, music on hold):
a configured server, what a phone heard from minisip, prompts as they sound."""
from __future__ import annotations

import time
from pathlib import Path

from minisip.media import g711
from minisip.media.player import load_audio
from minisip.media.prompts import prompt_path
from tests.helpers import ServerProcess, make_server
from tests.interop.pyphone import PyPhone, Received


def app_server(tmp_path: Path, users: dict[str, str], services: dict[str, str] | None = None,
               dialplan: str = "", system: dict[str, str] | None = None) -> ServerProcess:
    """A server (not started) with these users (name -> YAML flow items), services.yaml
    lines replaced (old -> new), analyze_called entries and system.yaml lines replaced."""
    server = make_server(tmp_path)
    lines = ["users:"]
    for name, extra in users.items():
        lines.append(f'  "{name}": {{password: "{name}"{", " + extra if extra else ""}}}')
    (server.config_dir / "users.yaml").write_text("\n".join(lines) + "\n")
    for file, changes in (("services.yaml", services), ("system.yaml", system)):
        path = server.config_dir / file
        text = path.read_text()
        for old, new in (changes or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path.write_text(text)
    if dialplan:
        path = server.config_dir / "dialplan.yaml"
        path.write_text(path.read_text().replace("analyze_called: {}",
                                                 "analyze_called:\n" + dialplan))
    return server


def smtp_settings(port: int, security: str = "none") -> dict[str, str]:
    return {'smtp_server: ""': "smtp_server: 127.0.0.1", "smtp_port: 587": f"smtp_port: {port}",
            "smtp_security: starttls": f"smtp_security: {security}"}


def heard(phone: PyPhone, since: float = 0.0) -> list[Received]:
    """Packets of audio (not events) received since ``since``, in sequence order."""
    got = [r for r in list(phone.rtp_log) if r.at >= since and r.packet.payload_type in (0, 8)]
    return sorted(got, key=lambda r: r.at)


def pcm(packets: list[Received]) -> bytes:
    return b"".join((g711.ulaw_decode if r.packet.payload_type == 0 else g711.alaw_decode)(
        r.packet.payload) for r in packets)


def sent_pcm(phone: PyPhone) -> bytes:
    return b"".join(g711.ulaw_decode(p) for p in phone.sent_audio)


def prompt_pcm(language: str, *names: str) -> bytes:
    """What prompts played together sound like on the wire, decoded (as minisip plays
    them in PCMU: back to back, the last frame filled with silence)."""
    audio = b"".join(load_audio(prompt_path(language, n), "PCMU") for n in names)
    audio += b"\xff" * (-len(audio) % 160)
    return g711.ulaw_decode(audio)


def wait_quiet(phone: PyPhone, gap: float = 0.3, timeout: float = 30.0) -> float:
    """Wait until minisip has sent audio and then nothing for ``gap`` seconds (a prompt
    ended); returns when the last packet came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = heard(phone)
        if got and time.monotonic() - got[-1].at >= gap:
            return got[-1].at
        time.sleep(0.05)
    raise TimeoutError("minisip kept playing (or never played)")


def wait_playing(phone: PyPhone, timeout: float = 10.0) -> None:
    """Wait until minisip sends audio."""
    deadline = time.monotonic() + timeout
    while not heard(phone):
        if time.monotonic() > deadline:
            raise TimeoutError("minisip never played")
        time.sleep(0.02)


def wait_heard(phone: PyPhone, audio: bytes, timeout: float = 30.0, since: float = 0.0) -> None:
    """Wait until the decoded audio received contains ``audio``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if audio in pcm(heard(phone, since)):
            return
        time.sleep(0.1)
    raise TimeoutError("the expected audio never came")
