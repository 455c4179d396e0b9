"""The loop's stalls: which iteration of trio's run loop took long, and on what.

One thread serves every phone, so any iteration of the run loop (the tasks
that run between two waits for I/O) that takes long delays every message
queued behind it: 300 ms and phones retransmit, and the queueing delay looks
like overload. ``LoopWatch`` is a trio instrument that times each iteration
(wall and thread CPU time: a stall with little CPU waited, on a blocking call or
for a busy machine) and hears the collector's pauses (``gc.callbacks``); the
server tells it what its slow parts took (``note``: a commit, a reload). An
iteration over ``threshold`` is counted, kept in ``recent`` and logged (at most
once a second) with its collections and notes, so the culprit has a name.

Timing every task step too would name the task, but trio's hooks cost about
1 us each, per step: so the steps are timed only for ``STEP_WATCH`` seconds
after a stall (``_StepTimer``), and the next stall names its longest task step.
Otherwise the watch costs two hooks and one CPU-clock read per iteration.
"""
from __future__ import annotations

import gc
import logging
import time
from collections import deque
from typing import Any

import trio

log = logging.getLogger("minisip.loop")

THRESHOLD = 0.05  #: an iteration longer than this is a stall (seconds)
NOTE_MIN = 0.005  #: parts shorter than this are not worth a note
STEP_WATCH = 60.0  #: after a stall, task steps are timed this long (seconds)


class _StepTimer(trio.abc.Instrument):
    """The longest task step of the current iteration (only while installed)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.start = 0.0
        self.longest: tuple[float, str] = (0.0, "")

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.start = self.clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = self.clock() - self.start
        if took > self.longest[0]:
            self.longest = (took, task.name)


class LoopWatch(trio.abc.Instrument):
    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.clock = time.perf_counter
        self.iterations = 0
        self.slow = 0  #: iterations over the threshold
        self.worst = 0.0  #: the longest iteration (seconds)
        self.gc_pauses = 0
        self.gc_worst = 0.0  #: the longest collection (seconds)
        self.gc_total = 0.0
        #: the slow iterations: (wall time, seconds, longest task step, its seconds, notes)
        self.recent: deque[dict[str, Any]] = deque(maxlen=20)
        self._start: float | None = None
        self._cpu_start = time.thread_time()
        self._steps: _StepTimer | None = None  #: timing task steps, after a stall
        self._steps_until = 0.0
        self._notes: list[str] = []
        self._gc_start = 0.0
        self._logged = 0.0

    # -- trio's hooks ----------------------------------------------------------------
    def after_io_wait(self, timeout: float) -> None:
        self._start = self.clock()
        if self._steps is not None:
            self._steps.longest = (0.0, "")
        if self._notes:
            self._notes = []

    def before_io_wait(self, timeout: float) -> None:
        start = self._start
        if start is None:
            return
        took = self.clock() - start
        # CPU since the last wait began: the wait itself (epoll) takes next to none
        cpu, self._cpu_start = self._cpu_start, time.thread_time()
        self.iterations += 1
        if took > self.worst:
            self.worst = took
        if took > self.threshold:
            self._stall(took, self._cpu_start - cpu)
        elif self._steps is not None and start > self._steps_until:
            trio.lowlevel.remove_instrument(self._steps)
            self._steps = None

    # -- what the server reports ------------------------------------------------------
    def note(self, what: str, seconds: float) -> None:
        """A part of the current iteration that took ``seconds`` (kept when notable)."""
        if seconds >= NOTE_MIN:
            self._notes.append(f"{what} {1000 * seconds:.0f} ms")

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = self.clock()
            return
        took = self.clock() - self._gc_start
        self.gc_pauses += 1
        self.gc_total += took
        self.gc_worst = max(self.gc_worst, took)
        self.note(f"gc gen{info.get('generation')}", took)

    def install(self) -> None:
        """Hear the collector (the instrument itself is added with trio's add_instrument)."""
        if self._gc not in gc.callbacks:
            gc.callbacks.append(self._gc)

    def uninstall(self) -> None:
        """Stop hearing the collector and timing task steps (before removing the watch)."""
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        if self._steps is not None:
            trio.lowlevel.remove_instrument(self._steps)
            self._steps = None

    def _stall(self, took: float, cpu: float) -> None:
        self.slow += 1
        step, task = self._steps.longest if self._steps is not None else (0.0, "")
        if self._steps is None:  # name the task of the next one
            self._steps = _StepTimer(self.clock)
            trio.lowlevel.add_instrument(self._steps)
        self._steps_until = self.clock() + STEP_WATCH
        # cpu well under ms: the thread waited (the machine was busy, or a blocking call)
        entry = {"at": round(time.time(), 3), "ms": round(1000 * took, 1),
                 "cpu_ms": round(1000 * cpu, 1),
                 "task": task.rsplit(".", 1)[-1] or "(not timed yet)",
                 "task_ms": round(1000 * step, 1),
                 "notes": list(self._notes)}
        self.recent.append(entry)
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            log.warning("the loop stalled %.0f ms (%.0f ms of CPU): %s %.0f ms%s", 1000 * took,
                        1000 * cpu, entry["task"], 1000 * step,
                        "; " + ", ".join(self._notes) if self._notes else "")

    def stats(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "stalls": self.slow,
                "stall_threshold_ms": 1000 * self.threshold,
                "worst_ms": round(1000 * self.worst, 1),
                "gc_pauses": self.gc_pauses, "gc_worst_ms": round(1000 * self.gc_worst, 1),
                "gc_total_s": round(self.gc_total, 3), "recent_stalls": list(self.recent)}
