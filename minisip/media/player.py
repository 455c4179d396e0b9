"""Stream prompts, music on hold and DTMF as RTP at 20 ms pacing (trio).

Pacing is by deadline: packet n is due at ``start + n * ptime``, so scheduling
delays do not accumulate into drift. If the player falls more than
``MAX_LATE_FRAMES`` behind (an overloaded process) it re-bases instead of
bursting the backlog. Sequence numbers, timestamps, the marker on the first
packet of each talk spurt and the SSRC come from one ``RtpStream`` per call,
shared with the DTMF sender, so the far end sees one continuous source.

Playback is cancelled like any trio work: cancel the scope around ``play``.
Given a shared :class:`~.pacer.Pacer`, a player sends through its one clock
instead of sleeping per packet (what the server does for every call).
"""
from __future__ import annotations

import functools
import wave
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from . import g711
from .dtmf import DEFAULT_PT, DEFAULT_VOLUME, event_packets
from .pacer import Pacer, Track
from .rtp import RtpStream

PTIME = 0.020
MAX_LATE_FRAMES = 10
RAW_SUFFIXES = {".ulaw": "PCMU", ".pcmu": "PCMU", ".mulaw": "PCMU",
                ".alaw": "PCMA", ".pcma": "PCMA"}

Send = Callable[[bytes], object]


def read_wav_pcm(path: str | Path) -> bytes:
    """16-bit little-endian PCM of an 8 kHz mono 16-bit WAV (the prompts' format)."""
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, 8000):
            raise ValueError(f"{path}: need 8 kHz mono 16-bit WAV, got {w.getframerate()} Hz, "
                             f"{w.getnchannels()} channel(s), {8 * w.getsampwidth()} bit")
        return w.readframes(w.getnframes())


@functools.lru_cache(maxsize=128)
def _load(path: str, mtime: float, codec: str) -> bytes:
    p = Path(path)
    raw_codec = RAW_SUFFIXES.get(p.suffix.lower())
    if raw_codec is not None:
        data = p.read_bytes()
        if raw_codec == codec:
            return data
        return g711.encoder_for(codec)(g711.decoder_for(raw_codec)(data))
    return g711.encoder_for(codec)(read_wav_pcm(p))


def load_audio(path: str | Path, codec: str) -> bytes:
    """A WAV or raw G.711 file as ``codec`` ("PCMU"/"PCMA") payload; cached per version."""
    p = Path(path)
    return _load(str(p), p.stat().st_mtime, codec.upper())


class Player:
    """Sends audio and DTMF toward one party. ``send(packet)`` puts bytes on the wire."""

    def __init__(self, send: Send, *, codec: str = "PCMU", payload_type: int | None = None,
                 stream: RtpStream | None = None, dtmf_payload_type: int | None = DEFAULT_PT,
                 ptime: float = PTIME, pacer: Pacer | None = None) -> None:
        self.send = send
        self.codec = codec.upper()
        self.payload_type = g711.CODECS[self.codec][0] if payload_type is None else payload_type
        self.stream = stream or RtpStream()
        self.dtmf_payload_type = dtmf_payload_type
        self.ptime = ptime
        self.frame = int(8000 * ptime)
        self._silence = bytes((g711.silence_for(self.codec),)) * self.frame
        self.late_rebases = 0
        self.pacer = pacer
        self._lock = trio.Lock()  # one sender at a time: prompt, MOH and DTMF don't interleave

    async def play(self, audio: bytes | str | Path, *, loop: bool = False) -> int:
        """Send ``audio`` (payload bytes in this codec, or a file path); returns packets sent.

        With ``loop`` it repeats until cancelled (music on hold).
        """
        if not isinstance(audio, bytes):
            audio = load_audio(audio, self.codec)
        if not audio:
            return 0
        async with self._lock:
            if self.pacer is not None:
                return await self.pacer.play(self.send, self.stream, self.payload_type, audio,
                                             loop=loop, silence=self._silence[0])
            return await self._play(audio, loop)

    def start_loop(self, path: str | Path) -> Track:
        """Loop a file on the shared pacer with no task of its own (music on hold);
        ``pacer.stop(track)`` ends it."""
        assert self.pacer is not None, "start_loop needs a pacer"
        return self.pacer.start(self.send, self.stream, self.payload_type,
                                load_audio(path, self.codec), loop=True,
                                silence=self._silence[0])

    async def play_files(self, paths: Iterable[str | Path]) -> int:
        """Several prompts back to back in one talk spurt ("parked at slot", "4", "2")."""
        audio = b"".join(load_audio(p, self.codec) for p in paths)
        return await self.play(audio)

    async def _play(self, audio: bytes, loop: bool) -> int:
        frame, ptime, pt = self.frame, self.ptime, self.payload_type
        stream, send = self.stream, self.send
        start = trio.current_time()
        stream.start_talkspurt(start)
        n = 0
        sent = 0
        while True:
            for off in range(0, len(audio), frame):
                due = start + n * ptime
                now = trio.current_time()
                if now - due > MAX_LATE_FRAMES * ptime:  # hopelessly late: re-base, don't burst
                    self.late_rebases += 1
                    start, n, due = now, 0, now
                await trio.sleep_until(due)
                chunk = audio[off:off + frame]
                if len(chunk) < frame:
                    chunk += self._silence[:frame - len(chunk)]
                send(stream.audio(pt, chunk, due))
                n += 1
                sent += 1
            if not loop:
                return sent

    async def play_silence(self, seconds: float) -> int:
        """Comfort: keep NAT bindings and the far end's jitter buffer alive."""
        frames = max(1, round(seconds / self.ptime))
        return await self.play(self._silence * frames)

    async def send_dtmf(self, digit: str, duration_ms: int = 100, *,
                        volume: int = DEFAULT_VOLUME) -> int:
        """One key press as RFC 4733 events (start, updates, three ends), paced."""
        if self.dtmf_payload_type is None:
            raise RuntimeError("the peer did not negotiate telephone-event")
        async with self._lock:
            start = trio.current_time()
            ts = self.stream.timestamp_at(start)
            packets = event_packets(digit, ts, duration_ms, volume=volume,
                                    ptime=self.ptime)
            for p in packets:
                await trio.sleep_until(start + p.offset)
                self.send(self.stream.packet(self.dtmf_payload_type, p.payload, p.timestamp,
                                             p.marker))
            end = trio.current_time()
            self.stream.skip_to(ts + max(int(8000 * duration_ms / 1000), self.frame), end)
            return len(packets)
