"""Deadlines for the PBX layer (no-answer, max duration, 2xx retransmission).

One heap pulled by the server's single timer loop (ARCHITECTURE.md rule 2):
``schedule`` returns a handle whose ``cancel()`` marks it dead; dead entries
are skipped when they surface. Time is trio's monotonic clock, passed in.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Timer:
    __slots__ = ("deadline", "fn", "args", "alive")

    def __init__(self, deadline: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.deadline, self.fn, self.args, self.alive = deadline, fn, args, True

    def cancel(self) -> None:
        self.alive = False


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def schedule(self, deadline: float, fn: Callable[..., None], *args: Any) -> Timer:
        t = Timer(deadline, fn, args)
        heapq.heappush(self._heap, (deadline, next(self._seq), t))
        return t

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, t = heapq.heappop(heap)
            if t.alive:
                t.alive = False
                t.fn(*t.args)

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if t.alive)
