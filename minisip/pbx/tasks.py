"""The trio tasks one call starts, in a nursery of the call's own.

ARCHITECTURE.md rule 6: a call owns what it started (music-on-hold players,
DTMF senders, and the apps that will answer calls), so ending the call cancels
all of it, and nothing it started outlives it. ``Call.start_task`` is the one
way a call starts a task.

Most calls start no task at all, so the nursery is opened lazily: the first
``start`` spawns, in the server's nursery, a runner that opens the call's
nursery and stays inside it until ``close``. ``start`` is synchronous (it is
called from SIP handling), so tasks asked for before the runner is up wait in
a short queue. A task that fails is logged and ends alone: it never takes its
call's other tasks, or the server, down with it.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

TaskFn = Callable[..., Awaitable[Any]]
Spawn = Callable[..., Any]  #: the server nursery's start_soon


class CallTasks:
    def __init__(self, spawn: Spawn, name: str) -> None:
        self._spawn = spawn
        self.name = name  #: the call's Call-ID, for the log
        self._queue: list[tuple[TaskFn, tuple[Any, ...]]] = []
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._runner = False
        self.closed = False

    def start(self, fn: TaskFn, *args: Any) -> None:
        """Run ``await fn(*args)`` until it returns or the call ends."""
        if self.closed:
            return
        if self._nursery is not None:
            self._nursery.start_soon(self._guarded, fn, args)
            return
        self._queue.append((fn, args))
        if not self._runner:
            self._runner = True
            self._spawn(self._run)

    async def _run(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for fn, args in self._queue:
                    nursery.start_soon(self._guarded, fn, args)
                self._queue.clear()
                await trio.sleep_forever()
        self._nursery = None

    async def _guarded(self, fn: TaskFn, args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        except Exception:
            log.exception("call %s: task %s failed", self.name, getattr(fn, "__name__", fn))

    def close(self) -> None:
        """The call ended: cancel every task it started (or was about to start)."""
        self.closed = True
        self._queue.clear()
        self._scope.cancel()

    @property
    def running(self) -> int:
        """Tasks alive in the call's nursery (for tests and status)."""
        n = self._nursery
        return len(n.child_tasks) if n is not None else 0
