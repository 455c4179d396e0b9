"""Deadlines for the PBX layer (no-answer, max duration, 2xx retransmission).

One heap pulled by the server's single timer loop (ARCHITECTURE.md rule 2):
``schedule`` returns a handle whose ``cancel()`` marks it dead; dead entries
are skipped when they surface. Time is trio's monotonic clock, passed in.

Cancelling drops the handle's callback at once, so an ended call is not kept
alive by its max-duration timer until that deadline (an hour away, say); and
once dead entries outnumber the live ones the heap is compacted, so 10,000
ended calls leave no 10,000 entries behind either.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

#: compaction is not worth it below this many dead entries
_COMPACT_MIN = 256


def _nothing(*args: Any) -> None:
    pass


class Timer:
    __slots__ = ("deadline", "fn", "args", "alive", "heap")

    def __init__(self, deadline: float, fn: Callable[..., None], args: tuple[Any, ...],
                 heap: TimerHeap | None = None) -> None:
        self.deadline, self.fn, self.args, self.alive = deadline, fn, args, True
        self.heap = heap

    def cancel(self) -> None:
        if self.alive:
            self.alive = False
            self.fn, self.args = _nothing, ()  # what it referred to (a call) may go now
            if self.heap is not None:
                self.heap._cancelled()


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
        if self._dead > _COMPACT_MIN and 2 * self._dead > len(self._heap):
            # In place: handle_timer may be iterating this very list (a callback cancels).
            self._heap[:] = [e for e in self._heap if e[2].alive]
            heapq.heapify(self._heap)
            self._dead = 0

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, t = heapq.heappop(heap)
            if t.alive:
                t.alive = False
                t.heap = None
                fn, args = t.fn, t.args
                t.fn, t.args = _nothing, ()
                fn(*args)
            else:
                self._dead -= 1

    @property
    def entries(self) -> int:
        """Entries held, dead ones included: what memory the heap costs."""
        return len(self._heap)

    def __len__(self) -> int:
        return len(self._heap) - self._dead
