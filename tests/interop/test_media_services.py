"""What minisip adds to relayed media: music on hold and DTMF conversion.

Two scripted phones (tests/interop/pyphone.py) register as 100 and 101; 100
calls 101 through a server with ``relay_media: always``. The phones see only
the relay: each one's RTP socket is what its SDP names, and everything it
receives comes from the relay port named in the SDP it got.

* Music on hold: 100 holds (re-INVITE sendonly); 101 must hear hold_music from
  the relay (minisip's own SSRC, 20 ms pacing) while 100 is silent, and 100
  again once it resumes. A holder without ``music_on_hold`` gives silence.
* DTMF: a party with telephone-event in its SDP talks RFC 4733, one without it
  SIP INFO (application/dtmf-relay). Between the two minisip converts each key
  exactly once; between two parties of the same kind it passes keys unchanged.

Two tests pin bugs found and fixed: INFOs converted from RFC 4733 must leave
at once (not when other SIP work next wakes the server), and the converted
RFC 4733 packets must not also be forwarded to the INFO party.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest


from minisip.media import g711
from minisip.media.dtmf import DtmfReceiver
from minisip.media.player import load_audio
from minisip.media.prompts import prompt_path
from tests.helpers import ServerProcess, make_server, options_ping
from tests.helpers import free_port_range as shared_free_port_range
from tests.interop.pyphone import EVENT_PT, PyPhone, Received

pytestmark = pytest.mark.interop

DIGITS = "0123456789*#"
PAIRS = 4  #: RTP port pairs for the relay


def free_port_range(pairs: int = PAIRS) -> tuple[int, int]:
    return shared_free_port_range(pairs, start=30000)


def start_server(tmp_path: Path, stack: ExitStack, **users: dict[str, object]) -> ServerProcess:
    """minisip relaying every call's media on a free port range, challenging with both
    digest algorithms (100 answers MD5, 101 SHA-256); ``users``: users.yaml additions."""
    server = make_server(tmp_path)
    lo, hi = free_port_range()
    system = server.config_dir / "system.yaml"
    text = system.read_text()
    for key, value in (("relay_media", "always"), ("rtp_port_min", lo), ("rtp_port_max", hi),
                       ("digest_algorithms", "[SHA-256, MD5]")):
        text, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        if n == 0:
            text += f"\n{key}: {value}\n"
    system.write_text(text)
    path = server.config_dir / "users.yaml"
    text = path.read_text()
    for user, items in users.items():
        marker = f'"{user}":\n'
        text = text.replace(marker, marker + "".join(f"    {k}: {v}\n" for k, v in items.items()))
    path.write_text(text)
    server.start()
    stack.callback(server.stop)
    return server


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def connect(stack: ExitStack, server: ServerProcess, dtmf_100: bool = True,
            dtmf_101: bool = True) -> tuple[PyPhone, PyPhone]:
    """Register 100 and 101; 100 calls 101, which answers: both in the call."""
    a = stack.enter_context(PyPhone(server.port, "100", "100"))
    b = stack.enter_context(PyPhone(server.port, "101", "101"))
    stack.callback(server.stop)  # before the phones close: they answer its shutdown's BYEs
    assert a.register(algorithm="MD5").status == 200, server.log()
    assert b.register(algorithm="SHA-256").status == 200, server.log()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(a.call("101", sdp_dtmf=dtmf_100)))
    t.start()
    b.answer_incoming(sdp_dtmf=dtmf_101)
    t.join(10)
    assert result and result[0].status == 200, server.log()  # type: ignore[attr-defined]
    time.sleep(0.1)  # the ACK reaches minisip: the call is talking
    return a, b


def decode(r: Received) -> memoryview:
    pcm = (g711.ulaw_decode if r.packet.payload_type == 0 else g711.alaw_decode)(r.packet.payload)
    return memoryview(pcm).cast("h")


def rms(packets: list[Received]) -> float:
    samples = [s for r in packets for s in decode(r)]
    return (sum(s * s for s in samples) / max(1, len(samples))) ** 0.5


def relay_address(phone: PyPhone) -> tuple[str, int]:
    assert phone.remote_sdp is not None and phone.remote_sdp.rtp_address is not None
    return phone.remote_sdp.rtp_address


# -- music on hold ----------------------------------------------------------------------

def test_music_on_hold_plays_while_held_and_stops_on_resume(tmp_path: Path,
                                                             stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server)
    a.send_audio(0.5)
    talk = [r for r in b.rtp_log if r.packet.ssrc == a.ssrc]
    assert len(talk) >= 20, f"100's audio did not reach 101: {len(talk)} packets\n{server.log()}"

    assert a.reinvite("sendonly").status == 200, server.log()
    held = b.received_rtp(2.0)  # 100 sends nothing now
    assert held, f"101 heard nothing on hold\n{server.log()}"
    assert {r.source for r in held} == {relay_address(b)}
    ssrcs = {r.packet.ssrc for r in held}
    assert len(ssrcs) == 1 and a.ssrc not in ssrcs, ssrcs
    assert {r.packet.payload_type for r in held} <= {0, 8}
    assert 90 <= len(held) <= 110, f"{len(held)} packets in 2 s, not ~50/s"
    seqs = [r.packet.sequence for r in held]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:])), "sequence gaps"
    assert max(y.at - x.at for x, y in zip(held, held[1:])) < 0.1, "not steady"
    level = rms(held)
    assert level > 500, f"music on hold is silent (RMS {level:.0f})"
    # it is hold_music itself: every 20 ms frame is a frame of the (looped) file
    (pt,) = {r.packet.payload_type for r in held}
    music = load_audio(prompt_path("en", "hold_music"), "PCMU" if pt == 0 else "PCMA")
    music += music[:160]
    first = music.find(held[0].packet.payload)
    assert first >= 0 and first % 160 == 0, "not hold_music"
    for i, r in enumerate(held):
        off = (first + 160 * i) % (len(music) - 160)
        assert r.packet.payload == music[off:off + 160], f"frame {i} is not the next of the file"

    # 100 talks while holding: minisip mutes it, 101 still hears only the music
    a.send_audio(0.5)
    time.sleep(0.1)
    assert not [r for r in b.rtp_log if r.packet.ssrc == a.ssrc and r.at > held[-1].at], \
        "100's audio reached 101 while 101 was on hold"

    (player,) = ssrcs
    resumed_at = time.monotonic()
    assert a.reinvite("sendrecv").status == 200, server.log()
    a.send_audio(1.0)
    after = [r for r in b.rtp_log if r.at >= resumed_at]
    late_music = [r for r in after if r.packet.ssrc == player]
    assert not late_music or late_music[-1].at - resumed_at < 0.5, \
        f"music went on {late_music[-1].at - resumed_at:.2f} s after the resume"
    talk = [r for r in after if r.packet.ssrc == a.ssrc]
    assert len(talk) >= 40, f"100's audio after the resume: {len(talk)} packets\n{server.log()}"
    assert a.bye().status == 200


def test_no_music_on_hold_when_the_holder_has_it_off(tmp_path: Path, stack: ExitStack) -> None:
    server = start_server(tmp_path, stack, **{"100": {"music_on_hold": "false"}})
    a, b = connect(stack, server)
    assert a.reinvite("sendonly").status == 200, server.log()
    held = b.received_rtp(1.5)
    assert held == [], f"101 got {len(held)} RTP packets on hold\n{server.log()}"
    assert a.bye().status == 200


# -- DTMF -------------------------------------------------------------------------------

def info_signals(phone: PyPhone, count: int, timeout: float = 5.0,
                 nudge: ServerProcess | None = None) -> list[str]:
    """The Signal= of the INFOs ``phone`` received, once ``count`` came (and a grace period).

    ``nudge``: OPTIONS-ping that server meanwhile (see test_rfc4733_to_info_is_prompt)."""
    deadline = time.monotonic() + timeout
    while len(phone.received_infos()) < count and time.monotonic() < deadline:
        if nudge is not None:
            options_ping(nudge.port, timeout=0.1)
        time.sleep(0.1)
    time.sleep(0.5)  # anything extra would come now
    out = []
    for req in phone.received_infos():
        assert (req.headers.get("Content-Type") or "").startswith("application/dtmf-relay")
        fields = dict(line.split("=", 1) for line in req.body.decode().splitlines() if "=" in line)
        out.append(fields.get("Signal", "").strip())
    return out


def rtp_digits(packets: list[Received]) -> list[str]:
    receiver = DtmfReceiver(payload_type=EVENT_PT)
    return [d.digit for r in packets for d in receiver.feed(r.packet, r.at)]


def press_rfc4733(phone: PyPhone, digits: str = DIGITS) -> list[float]:
    """Each key as RFC 4733 with a 60 ms pause after it; when each one's last end packet left."""
    ends = []
    for digit in digits:
        phone.send_rtp_events(digit)
        ends.append(time.monotonic())
        time.sleep(0.06)
    return ends


def test_rfc4733_is_converted_to_one_info_per_digit(tmp_path: Path, stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server, dtmf_100=True, dtmf_101=False)
    press_rfc4733(a)
    # minisip sends these INFOs only when other SIP work wakes it (see the next test):
    # OPTIONS pings make it flush what it queued, so this test checks the conversion itself.
    assert info_signals(b, len(DIGITS), nudge=server) == list(DIGITS), server.log()
    assert a.received_infos() == []
    assert a.bye().status == 200


def test_rfc4733_to_info_is_prompt(tmp_path: Path, stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server, dtmf_100=True, dtmf_101=False)
    time.sleep(1.0)  # past the call's own early timers: a quiet call, as most calls are
    delays = []
    for n, digit in enumerate("159", 1):
        end = press_rfc4733(a, digit)[0]
        deadline = end + 1.0
        while len(b.infos) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        delays.append(round(b.infos[n - 1][0] - end, 2) if len(b.infos) >= n else None)
        if len(b.infos) < n:
            break
    assert all(d is not None and d < 0.5 for d in delays), \
        f"seconds from each key's last RFC 4733 packet to its INFO (None: > 1 s): {delays}"


def test_rfc4733_is_not_forwarded_to_a_party_without_telephone_event(
        tmp_path: Path, stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server, dtmf_100=True, dtmf_101=False)
    press_rfc4733(a, "159")
    time.sleep(0.3)
    events = [r for r in b.rtp_log if r.packet.payload_type == EVENT_PT]
    assert events == [], f"101 (no telephone-event) got {len(events)} RFC 4733 packets"


def test_info_is_converted_to_rfc4733_once_per_digit(tmp_path: Path, stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server, dtmf_100=True, dtmf_101=False)
    start = time.monotonic()
    for digit in DIGITS:
        assert b.send_info_digit(digit).status == 200, server.log()
        time.sleep(0.2)
    deadline = time.monotonic() + 3
    while len(rtp_digits(a.rtp_log)) < len(DIGITS) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    events = [r for r in a.rtp_log if r.at >= start]
    assert rtp_digits(events) == list(DIGITS), server.log()
    assert {r.source for r in events} == {relay_address(a)}
    assert a.received_infos() == [], "the INFO was relayed as well as converted"
    assert b.bye().status == 200


def test_info_between_info_parties_is_relayed_unchanged(tmp_path: Path,
                                                        stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server, dtmf_100=False, dtmf_101=False)
    for digit in DIGITS:
        assert b.send_info_digit(digit, duration_ms=160).status == 200, server.log()
    for digit in "1#":
        assert a.send_info_digit(digit, duration_ms=160).status == 200, server.log()
    assert info_signals(a, len(DIGITS)) == list(DIGITS)
    assert info_signals(b, 2) == list("1#")
    for req, digit in zip(a.received_infos(), DIGITS):
        assert req.body == f"Signal={digit}\r\nDuration=160\r\n".encode()
        assert req.headers.get("Content-Type") == "application/dtmf-relay"
    assert not [r for r in a.rtp_log + b.rtp_log if r.packet.payload_type == EVENT_PT]
    assert a.bye().status == 200


def test_rfc4733_between_rfc4733_parties_passes_through(tmp_path: Path,
                                                        stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    a, b = connect(stack, server, dtmf_100=True, dtmf_101=True)
    for digit in DIGITS:
        a.send_rtp_events(digit)
    time.sleep(0.5)
    events = [r for r in b.rtp_log if r.packet.payload_type == EVENT_PT]
    assert {r.packet.ssrc for r in events} == {a.ssrc}, "not 100's own packets"
    assert len(events) == len(DIGITS) * 7  # 100 ms: 4 updates + 3 ends each
    assert rtp_digits(events) == list(DIGITS)
    assert b.received_infos() == [] and a.received_infos() == []
    assert a.bye().status == 200
