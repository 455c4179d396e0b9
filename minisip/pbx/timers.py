"""Deadlines for the PBX layer (no-answer, max duration, 2xx retransmission).

One heap pulled by the server's single timer loop (ARCHITECTURE.md rule 2):
``schedule`` returns a handle whose ``cancel()`` marks it dead; dead entries
are skipped when they surface. Time is trio's monotonic clock, passed in.

A cancelled timer lets go of what it would have called at once: a call's
max-duration timer (hours away) would otherwise keep the whole ended call in
memory until then. Dead entries are purged in one pass once they outnumber the
live ones, so cancelling many far-off timers cannot grow the heap without bound.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

#: purge dead entries once there are this many and they outnumber the live ones
_PURGE_MIN = 4096


def _dead(*args: Any) -> None:
    pass


class Timer:
    __slots__ = ("deadline", "fn", "args", "alive", "_heap")

    def __init__(self, deadline: float, fn: Callable[..., None], args: tuple[Any, ...],
                 heap: TimerHeap | None = None) -> None:
        self.deadline, self.fn, self.args, self.alive = deadline, fn, args, True
        self._heap = heap

    def cancel(self) -> None:
        if self.alive:
            self.alive = False
            self.fn, self.args = _dead, ()
            if self._heap is not None:
                self._heap._cancelled()


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._dead = 0  #: cancelled entries still in the heap

    def schedule(self, deadline: float, fn: Callable[..., None], *args: Any) -> Timer:
        t = Timer(deadline, fn, args, self)
        heapq.heappush(self._heap, (deadline, next(self._seq), t))
        return t

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead >= _PURGE_MIN and 2 * self._dead > len(heap):
            self._heap = [e for e in heap if e[2].alive]
            heapq.heapify(self._heap)
            self._dead = 0

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:  # (a purge may replace the list)
            _, _, t = heapq.heappop(self._heap)
            if t.alive:
                t.alive = False
                t._heap = None
                t.fn(*t.args)
            else:
                self._dead -= 1

    def __len__(self) -> int:
        return len(self._heap) - self._dead
