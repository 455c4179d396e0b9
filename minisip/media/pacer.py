"""One clock for every stream minisip plays: prompts, music on hold (trio).

Theory of operation
-------------------
A player that sleeps 20 ms between packets costs one task wake-up per packet:
400 calls hearing prompts or music would be 20,000 wake-ups a second, each
dearer than the packet it sends. The pacer is one task instead. Streams
(:class:`Track` s: audio bytes in the stream's codec, an ``RtpStream`` for its
numbering and a ``send`` function) are added and removed synchronously; every
``PTIME`` the task wakes once and sends the next frame of each track. Music on
hold is a looping track with no task of its own; a prompt is a track whose
player awaits its ``done`` event.

Ticks are deadlines on one grid (``start + n * ptime``), so scheduling delays do
not accumulate into drift. A tick that comes late sends every frame it owes
(bounded by ``MAX_LATE_FRAMES``; further behind, the grid is re-based rather
than bursting a backlog at the far end). With no track the task waits on an
event: an idle server does not tick.
"""
from __future__ import annotations

from collections.abc import Callable

import trio

from .rtp import RtpStream

PTIME = 0.020
FRAME = 160  #: G.711 at 8 kHz: one octet per sample
MAX_LATE_FRAMES = 10

Send = Callable[[bytes], object]


class Track:
    """One stream being played: ``audio`` frame by frame, looped or once."""

    __slots__ = ("send", "stream", "payload_type", "audio", "loop", "silence", "pos", "done",
                 "frames")

    def __init__(self, send: Send, stream: RtpStream, payload_type: int, audio: bytes,
                 loop: bool, silence: int) -> None:
        self.send = send
        self.stream = stream
        self.payload_type = payload_type
        self.audio = audio
        self.loop = loop
        self.silence = silence  #: the codec's silence octet, to pad the last frame
        self.pos = 0
        self.frames = 0  #: frames sent so far
        self.done = trio.Event()  #: set when a non-looping track has sent its last frame

    def next_frame(self) -> bytes | None:
        """The next frame's payload, or None when the track has ended."""
        audio, pos = self.audio, self.pos
        if pos >= len(audio):
            if not self.loop or not audio:
                return None
            pos = 0
        chunk = audio[pos:pos + FRAME]
        if len(chunk) < FRAME:
            if self.loop and len(audio) >= FRAME:  # wrap around without a gap
                rest = FRAME - len(chunk)
                self.pos = rest
                return chunk + audio[:rest]
            chunk += bytes((self.silence,)) * (FRAME - len(chunk))
        self.pos = pos + FRAME
        return chunk


class Pacer:
    def __init__(self, ptime: float = PTIME) -> None:
        self.ptime = ptime
        self._tracks: dict[Track, None] = {}  # insertion order: who started first sends first
        self._wake = trio.Event()
        self.ticks = 0
        self.packets = 0
        self.rebases = 0
        #: how late each tick ran (s): the worst since the last read, for benchmarks
        self.worst_lateness = 0.0

    def __len__(self) -> int:
        return len(self._tracks)

    def start(self, send: Send, stream: RtpStream, payload_type: int, audio: bytes, *,
              loop: bool = False, silence: int = 0xFF) -> Track:
        """Play ``audio`` from the next tick on; the first frame carries the marker."""
        track = Track(send, stream, payload_type, audio, loop, silence)
        stream.start_talkspurt(trio.current_time())
        self._tracks[track] = None
        self._wake.set()
        return track

    def stop(self, track: Track) -> None:
        self._tracks.pop(track, None)
        track.done.set()

    async def play(self, send: Send, stream: RtpStream, payload_type: int, audio: bytes, *,
                   loop: bool = False, silence: int = 0xFF) -> int:
        """Play and wait until the last frame left (forever with ``loop``); returns frames."""
        track = self.start(send, stream, payload_type, audio, loop=loop, silence=silence)
        try:
            await track.done.wait()
        finally:
            self.stop(track)
        return track.frames

    def _tick(self, due: float) -> None:
        ended = []
        for track in self._tracks:
            chunk = track.next_frame()
            if chunk is None:
                ended.append(track)
                continue
            track.send(track.stream.audio(track.payload_type, chunk, due))
            track.frames += 1
        self.packets += len(self._tracks) - len(ended)
        for track in ended:
            self.stop(track)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        ptime = self.ptime
        now = trio.current_time
        start, n = now(), 0
        while True:
            if not self._tracks:
                self._wake = trio.Event()
                await self._wake.wait()
                start, n = now(), 0
            due = start + n * ptime
            if now() < due:
                await trio.sleep_until(due)
            else:
                await trio.lowlevel.checkpoint()
            late = now() - due
            if late > MAX_LATE_FRAMES * ptime:  # hopelessly behind: re-base, don't burst
                self.rebases += 1
                start, n, due = now(), 0, now()
            else:
                self.worst_lateness = max(self.worst_lateness, late)
            self._tick(due)
            self.ticks += 1
            n += 1
