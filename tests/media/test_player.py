"""Player pacing and numbering, recorder output, the media endpoint, prompt lookup."""
from __future__ import annotations

import functools
import math
import random
import socket
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from minisip.media import g711
from minisip.media.dtmf import DtmfDigit, event_packets
from minisip.media.endpoint import MediaEndpoint
from minisip.media.player import Player, load_audio, read_wav_pcm
from minisip.media.prompts import LANGUAGES, PROMPTS, digit_paths, prompt_path
from minisip.media.recorder import Recorder
from minisip.media.relay import MediaIO, PortPool
from minisip.media.rtp import RtpPacket, RtpStream, make_rtp, parse_rtp_untrusted
from minisip.media.sdp_media import answer_offer_untrusted

HOST = "127.0.0.1"


def write_wav(path: Path, samples: list[int]) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path


def tone(seconds: float, freq: float = 440.0) -> list[int]:
    n = int(seconds * 8000)
    return [int(10000 * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)]


def samples_of(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


async def udp_pair() -> tuple[trio.socket.SocketType, socket.socket]:
    rx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await rx.bind((HOST, 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    return rx, tx


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_player_streams_a_wav_at_20ms_with_correct_rtp_headers(tmp_path: Path,
                                                                    codec: str) -> None:
    wav = write_wav(tmp_path / "t.wav", tone(0.5) + tone(0.01))  # 25.5 frames: last one padded
    rx, tx = await udp_pair()
    dest = rx.getsockname()
    player = Player(lambda d: tx.sendto(d, dest), codec=codec, stream=RtpStream(ssrc=77))
    got: list[tuple[float, RtpPacket]] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(player.play, wav)
            for _ in range(26):
                data, _ = await rx.recvfrom(2048)
                got.append((trio.current_time(), parse_rtp_untrusted(data)))
    pkts = [p for _, p in got]
    assert {p.ssrc for p in pkts} == {77}
    assert {p.payload_type for p in pkts} == {0 if codec == "PCMU" else 8}
    assert [p.marker for p in pkts] == [True] + [False] * 25
    assert all(((b.sequence - a.sequence) & 0xFFFF) == 1 for a, b in zip(pkts, pkts[1:]))
    assert all(((b.timestamp - a.timestamp) & 0xFFFFFFFF) == 160 for a, b in zip(pkts, pkts[1:]))
    assert all(len(p.payload) == 160 for p in pkts)
    span = got[-1][0] - got[0][0]
    assert 0.45 <= span <= 0.75  # 25 intervals of 20 ms, loosely bounded
    gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.020, abs=0.006)
    decoded = samples_of(g711.decoder_for(codec)(b"".join(p.payload for p in pkts)))
    original = samples_of(read_wav_pcm(wav))
    assert all(abs(x - y) <= max(16, abs(x) // 16) for x, y in zip(original, decoded))
    assert decoded[len(original):] == [0] * (len(decoded) - len(original)) or codec == "PCMA"


async def test_looping_player_runs_until_cancelled_and_continues_the_stream(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "moh.wav", tone(0.06))  # 3 frames, looped
    rx, tx = await udp_pair()
    dest = rx.getsockname()
    player = Player(lambda d: tx.sendto(d, dest), stream=RtpStream(ssrc=1, sequence=65534))
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(functools.partial(player.play, wav, loop=True))
            pkts = [parse_rtp_untrusted((await rx.recvfrom(2048))[0]) for _ in range(8)]
            n.cancel_scope.cancel()
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1, 2, 3, 4, 5]
    assert [p.marker for p in pkts] == [True] + [False] * 7
    # a later prompt on the same stream: new talk spurt, sequence continues
    with trio.fail_after(5):
        await player.play(load_audio(wav, "PCMU"))
    more = []
    with trio.move_on_after(0.5):
        while True:
            more.append(parse_rtp_untrusted((await rx.recvfrom(2048))[0]))
    seqs = [p.sequence for p in pkts + more]
    assert all(((b - a) & 0xFFFF) == 1 for a, b in zip(seqs, seqs[1:]))  # one sequence space
    assert [p.marker for p in more[-3:]] == [True, False, False]  # the new prompt: a new spurt
    assert {p.ssrc for p in more} == {1}


async def test_player_sends_dtmf_on_the_shared_stream() -> None:
    rx, tx = await udp_pair()
    dest = rx.getsockname()
    player = Player(lambda d: tx.sendto(d, dest), stream=RtpStream(ssrc=5, sequence=10))
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(player.send_dtmf, "7", 60)
            pkts = [parse_rtp_untrusted((await rx.recvfrom(2048))[0]) for _ in range(5)]
    assert [p.payload_type for p in pkts] == [101] * 5
    assert [p.sequence for p in pkts] == list(range(10, 15))
    assert len({p.timestamp for p in pkts}) == 1 and pkts[0].marker


def test_recorder_fills_gaps_by_timestamp_and_drops_late_packets(tmp_path: Path) -> None:
    codes = g711.ulaw_encode(struct.pack("<160h", *([1000] * 160)))
    path = tmp_path / "rec.wav"
    with Recorder(path) as rec:
        for seq in [0, 1, 3, 4]:                  # 2 lost: 20 ms of silence in its place
            rec.feed(RtpPacket(0, seq, 1000 + 160 * seq, 9, codes))
        rec.feed(RtpPacket(0, 2, 1000 + 320, 9, codes))  # arrives late: dropped
        rec.feed(RtpPacket(101, 5, 1800, 9, b"\x01\x00\x00\xa0"))  # DTMF: not audio
        rec.feed(RtpPacket(8, 6, 1800, 9, g711.alaw_encode(struct.pack("<160h", *([-500] * 160)))))
    assert rec.late == 1 and rec.filled == 160
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        s = samples_of(w.readframes(w.getnframes()))
    assert len(s) == 6 * 160
    assert s[2 * 160:3 * 160] == [0] * 160
    assert all(abs(x - 1000) < 64 for x in s[:320] + s[480:800])
    assert all(abs(x + 500) < 32 for x in s[800:])


def test_recorder_stops_at_max_seconds(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r.wav", max_seconds=0.05) as rec:
        for seq in range(10):
            rec.feed(RtpPacket(0, seq, 160 * seq, 1, b"\xff" * 160))
    assert rec.samples == 400 and rec.full


@pytest.fixture
async def io() -> AsyncIterator[MediaIO]:
    media = MediaIO()
    async with trio.open_nursery() as nursery:
        await nursery.start(media.run)
        yield media
        nursery.cancel_scope.cancel()


async def test_endpoint_records_reports_digits_and_plays_back_to_the_latched_source(
        io: MediaIO, tmp_path: Path) -> None:
    base = random.randrange(20000, 32000, 100)
    pool = PortPool(base, base + 9)
    phone = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await phone.bind((HOST, 0))
    offer = ("v=0\r\no=p 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n").encode()
    with trio.fail_after(5), MediaEndpoint(io, pool, HOST) as ep:
        _, neg = answer_offer_untrusted(offer, HOST, ep.rtp_port, session_id=1)
        ep.configure(neg)  # SDP says 192.0.2.1 (wrong, "NAT"): latching must win
        rec = Recorder(tmp_path / "vm.wav")
        ep.consumers.append(rec.feed)
        for seq in range(5):
            await phone.sendto(make_rtp(0, seq, seq * 160, 3, b"\xff" * 160), (HOST, ep.rtp_port))
        for i, p in enumerate(event_packets("4", 800, 60)):
            await phone.sendto(make_rtp(101, 5 + i, p.timestamp, 3, p.payload, p.marker),
                               (HOST, ep.rtp_port))
        assert await ep.digits.receive() == DtmfDigit("4", 60)
        ep.inject_digit(DtmfDigit("#", 250))  # as if it came in a SIP INFO
        assert (await ep.digits.receive()).digit == "#"
        assert ep.remote == phone.getsockname()
        await ep.player().play(b"\xff" * 320)
        data, src = await phone.recvfrom(2048)
        assert src == (HOST, ep.rtp_port) and parse_rtp_untrusted(data).payload_type == 0
        rec.close()
        assert ep.stats.packets == 5 + 5 and ep.stats.lost == 0
    assert pool.in_use == 0
    assert rec.samples == 5 * 160


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_prompt_exists_as_8khz_mono_16bit(language: str) -> None:
    names = list(PROMPTS) + [f"digits/{d}" for d in range(10)] + ["hold_music", "beep"]
    for name in names:
        path = prompt_path(language, name)
        assert path.is_file()
        with wave.open(str(path)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000), path
            assert 0.2 < w.getnframes() / 8000 < 40, path
        if name in PROMPTS:
            assert path.parent.name == language


def test_prompt_lookup_falls_back_to_english_and_refuses_escapes(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    write_wav(tmp_path / "en" / "busy.wav", tone(0.3))
    assert prompt_path("fr", "busy", root=tmp_path) == tmp_path / "en" / "busy.wav"
    with pytest.raises(FileNotFoundError):
        prompt_path("en", "nothing", root=tmp_path)
    with pytest.raises(ValueError):
        prompt_path("en", "../secret", root=tmp_path)
    assert [p.name for p in digit_paths("zh", 42)] == ["4.wav", "2.wav"]


def test_total_prompt_size_stays_small() -> None:
    root = prompt_path("en", "busy").parents[1]
    total = sum(p.stat().st_size for p in root.rglob("*.wav"))
    assert total < 4 * 1024 * 1024
