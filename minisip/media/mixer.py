"""A small audio mixer: every party of a conference hears the sum of the others.

Sans-IO core: ``push`` takes a party's decoded audio (16-bit PCM, 8 kHz, any
packet size), ``mix`` takes one 20 ms frame from each party (silence for a
party that sent nothing) and returns, per party, the others' frames added and
clipped. A party's queue holds at most ``MAX_FRAMES`` frames: one that sends
faster than the mixer's clock, or in a burst, loses its oldest audio rather
than drifting behind. ``run_mixer`` (trio) drives ``mix`` every 20 ms by
deadline, as the player paces prompts, and hands each party its frame.
"""
from __future__ import annotations

import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import trio

FRAME = 160  #: samples in 20 ms at 8 kHz
PTIME = 0.020
MAX_FRAMES = 5  #: 100 ms of queued audio per party
_SILENCE = array("h", bytes(2 * FRAME))


def _samples(pcm: bytes) -> array:
    a = array("h", pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":  # PCM is little-endian on the wire and in WAVs
        a.byteswap()
    return a


def _pcm(samples: array) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


class Mixer:
    def __init__(self, parties: Iterable[str]) -> None:
        self.queues: dict[str, deque[array]] = {p: deque(maxlen=MAX_FRAMES) for p in parties}
        self._partial: dict[str, array] = {p: array("h") for p in self.queues}
        self.dropped = 0  #: frames lost to a full queue

    def push(self, party: str, pcm: bytes) -> None:
        """Audio from ``party`` (little-endian 16-bit PCM)."""
        queue = self.queues.get(party)
        if queue is None:
            return
        buf = self._partial[party]
        buf.extend(_samples(pcm))
        while len(buf) >= FRAME:
            if len(queue) == queue.maxlen:
                self.dropped += 1
            queue.append(buf[:FRAME])
            del buf[:FRAME]

    def mix(self) -> dict[str, bytes]:
        """One frame for every party: what the others said in the last 20 ms."""
        frames = {p: (q.popleft() if q else _SILENCE) for p, q in self.queues.items()}
        total = [sum(column) for column in zip(*frames.values())]
        return {p: _pcm(array("h", (max(-32768, min(32767, t - s))
                                    for t, s in zip(total, own))))
                for p, own in frames.items()}


async def run_mixer(mixer: Mixer, outputs: Mapping[str, Callable[[bytes, float], None]],
                    ptime: float = PTIME) -> None:
    """Every ``ptime``, each party's output gets its frame (PCM) and the frame's time."""
    start = trio.current_time()
    n = 0
    while True:
        n += 1
        due = start + n * ptime
        now = trio.current_time()
        if now - due > 10 * ptime:  # hopelessly late (an overloaded process): re-base
            start, n, due = now, 0, now
        await trio.sleep_until(due)
        for party, pcm in mixer.mix().items():
            out = outputs.get(party)
            if out is not None:
                out(pcm, due)
