"""Write what a party says (received PCMU/PCMA RTP) to an 8 kHz mono 16-bit WAV.

Sans-IO apart from the file: ``feed`` takes parsed packets. Lost packets and
silence-suppressed gaps are filled with silence by RTP timestamp, so the file
keeps real time; late or duplicate packets (timestamp already written) are
dropped. A new SSRC (re-INVITE, a transfer) continues the file without a gap.
Writes go through ``wave``'s buffered file: 320 bytes per packet, cheap enough
for the trio thread; close it when the call ends (or use ``with``).

Voice or silence: a packet with at least ``VOICE_SAMPLES`` samples louder
than ``VOICE_LEVEL`` is voice; ``voice_at`` is the arrival time of the last
one (voicemail ends a message after some seconds of silence). The test runs on
the G.711 codes through a 256-entry table, without decoding.
"""
from __future__ import annotations

import wave
from pathlib import Path

from .g711 import alaw_decode, decoder_for, ulaw_decode
from .rtp import PT_PCMA, PT_PCMU, RtpPacket

SAMPLE_RATE = 8000
MAX_GAP_SECONDS = 10.0
#: louder than this is voice (about -30 dBFS): line noise and comfort noise stay below
VOICE_LEVEL = 1000
VOICE_SAMPLES = 8  #: of a 20 ms frame's 160: one click is not voice


def _loud_table(codec: str) -> bytes:
    """code -> 1 when it decodes louder than VOICE_LEVEL, else 0."""
    samples = memoryview(decoder_for(codec)(bytes(range(256)))).cast("h")
    return bytes(1 if abs(s) > VOICE_LEVEL else 0 for s in samples)


_LOUD = {codec: _loud_table(codec) for codec in ("PCMU", "PCMA")}


class Recorder:
    def __init__(self, path: str | Path, *, payload_types: dict[int, str] | None = None,
                 max_seconds: float | None = None) -> None:
        """``payload_types`` maps PT -> "PCMU"/"PCMA" (default 0 and 8); others are ignored."""
        self.path = Path(path)
        pts = payload_types or {PT_PCMU: "PCMU", PT_PCMA: "PCMA"}
        self._decoders = {pt: (ulaw_decode if c.upper() == "PCMU" else alaw_decode)
                          for pt, c in pts.items() if c.upper() in ("PCMU", "PCMA")}
        self._loud = {pt: _LOUD[c.upper()] for pt, c in pts.items() if c.upper() in _LOUD}
        self.voice_at: float | None = None  #: arrival of the last voiced packet
        self.voiced = 0  #: voiced packets written
        self._wav = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self._ssrc: int | None = None
        self._next_ts = 0
        self.samples = 0
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self.late = 0
        self.filled = 0  #: samples of silence written for gaps
        self.closed = False

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def full(self) -> bool:
        return self.max_samples is not None and self.samples >= self.max_samples

    def _write(self, pcm: bytes) -> None:
        if self.max_samples is not None:
            room = self.max_samples - self.samples
            if room <= 0:
                return
            pcm = pcm[:2 * room]
        self._wav.writeframesraw(pcm)
        self.samples += len(pcm) // 2

    def feed(self, packet: RtpPacket, now: float = 0.0) -> None:
        if self.closed:
            return
        decode = self._decoders.get(packet.payload_type)
        if decode is None or not packet.payload:
            return
        ts = packet.timestamp
        if packet.ssrc != self._ssrc:
            self._ssrc = packet.ssrc
            self._next_ts = ts
        delta = (ts - self._next_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:  # behind what we wrote: late or duplicate
            self.late += 1
            return
        if delta:
            gap = min(delta, int(MAX_GAP_SECONDS * SAMPLE_RATE))
            self._write(bytes(2 * gap))
            self.filled += gap
        self._write(decode(packet.payload))
        if packet.payload.translate(self._loud[packet.payload_type]).count(1) >= VOICE_SAMPLES:
            self.voice_at = now
            self.voiced += 1
        self._next_ts = (ts + len(packet.payload)) & 0xFFFFFFFF

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._wav.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_wav(path: str | Path) -> float | None:
    """Make a recording cut short (the process killed before ``close``) a valid WAV:
    the RIFF and data sizes are set from the file's length. Returns its seconds, or
    None when the file is missing or not one of ours."""
    p = Path(path)
    try:
        with open(p, "r+b") as f:
            head = f.read(44)
            if len(head) < 44 or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt " \
                    or head[36:40] != b"data":
                return None
            size = f.seek(0, 2)
            data = (size - 44) & ~1  # whole 16-bit samples
            f.truncate(44 + data)
            f.seek(4)
            f.write((36 + data).to_bytes(4, "little"))
            f.seek(40)
            f.write(data.to_bytes(4, "little"))
    except OSError:
        return None
    return data / 2 / SAMPLE_RATE
