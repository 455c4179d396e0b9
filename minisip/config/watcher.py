"""Live reload: watch the config directory, build snapshots off the event loop.

Theory of operation
-------------------
watchfiles watches the *directory* (watching a file stops at its first
rename-replace) and reports changes to ``*.yaml`` names, debounced: a burst of
events (an editor's write-rename-chmod) arrives as one batch. For each batch the
whole configuration is read and validated by a ``Reloader`` (reloader.py: in a
worker process, so the event loop is never starved) and the result is handed to
``on_reload``: a new snapshot, or the error (the caller keeps serving the old
snapshot). Changes that arrive while a load runs are collected by the watcher
and come out as the next batch, so the load runs again once it finishes:
whatever an editor does (write in place, temp file + rename, several steps),
the last load sees the final files. A batch whose files hash the same as the
last attempt is skipped (a ``touch``, a save without changes).

Cancellation: watchfiles waits for events in a thread that trio cannot cancel;
a helper task sets the ``stop_event`` watchfiles polls every ``step`` ms when
the watcher is cancelled (or when the caller's ``stop_event`` is set), so
shutdown takes milliseconds, not the watcher's 5 s timeout.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import trio

from .loader import ConfigError, load_snapshot
from .reloader import Reloader
from .schema import Snapshot

log = logging.getLogger("minisip.config")

OnReload = Callable[[Snapshot | None, ConfigError | None], None]


def _yaml_only(change: Any, path: str) -> bool:
    name = os.path.basename(path)
    if name == "..data":  # Kubernetes ConfigMap volumes swap this symlink
        return True
    return name.endswith(".yaml") and not name.startswith(".")  # not editors' temp files


async def watch_config(config_dir: Path, on_reload: OnReload, *,
                       reloader: Reloader | None = None,
                       stop_event: trio.Event | None = None,
                       task_status: Any = trio.TASK_STATUS_IGNORED,
                       debounce_ms: int = 50, step_ms: int = 10) -> None:
    """Call ``on_reload(snapshot, None)`` or ``on_reload(None, error)`` after each change.

    ``reloader`` does the loading (the server's, shared with SIGHUP); without one, a
    reloader working in a thread. Runs until cancelled or until ``stop_event`` is set.
    ``task_status.started()`` is called once the directory is being watched: an edit
    made after ``nursery.start`` returns is seen.
    """
    from watchfiles import awatch

    config_dir = Path(config_dir)
    if reloader is None:
        reloader = Reloader(config_dir, in_process=True)
    stop = trio.Event()  # what watchfiles' thread polls

    async def stopper() -> None:
        try:
            if stop_event is not None:
                await stop_event.wait()
            else:
                await trio.sleep_forever()
        finally:
            stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stopper)
        changes = awatch(config_dir, watch_filter=_yaml_only, debounce=debounce_ms,
                         step=step_ms, stop_event=stop, recursive=False)
        async with contextlib.aclosing(changes):
            # No checkpoint between started() and the first __anext__, which creates the
            # inotify watch synchronously: nothing can run in between and edit a file.
            task_status.started()
            async for batch in changes:
                log.debug("config change: %s", sorted(os.path.basename(p) for _, p in batch))
                try:
                    changed, snap, error = await reloader.load()
                except Exception:  # the worker died, the directory vanished...
                    log.exception("config reload failed")
                    continue
                if not changed:
                    continue  # same bytes as last time
                try:
                    on_reload(snap, error)
                except Exception:  # a broken callback must not stop reloading
                    log.exception("config reload callback failed")
        nursery.cancel_scope.cancel()


class ConfigHolder:
    """The snapshot in force. Swapping is one attribute assignment, so readers on any
    thread see the old snapshot or the new one; a failed reload keeps the old one."""

    def __init__(self, config_dir: Path, snapshot: Snapshot | None = None) -> None:
        self.config_dir = Path(config_dir)
        #: raises ConfigError when there is no valid configuration to start with
        self.current: Snapshot = snapshot if snapshot is not None else load_snapshot(
            self.config_dir)
        self.last_error: ConfigError | None = None
        self.last_reload: float = time.time()  #: when ``current`` was swapped in
        self.generation: int = 0  #: 0 for the first snapshot, +1 per swap
        self._lock = threading.Lock()

    def reload(self) -> ConfigError | None:
        """Load now (SIGHUP, ``minisip reload``); blocking, so call it from a thread."""
        with self._lock:
            try:
                snap = load_snapshot(self.config_dir)
            except ConfigError as exc:
                self.fail(exc)
                return exc
            self.swap(snap)
            return None

    def swap(self, snap: Snapshot) -> None:
        self.current = snap
        self.generation += 1
        self.last_reload = time.time()
        self.last_error = None

    def fail(self, error: ConfigError | None) -> None:
        self.last_error = error

    def apply(self, snap: Snapshot | None, error: ConfigError | None) -> None:
        """An ``on_reload`` for :func:`watch_config` that just keeps this holder current."""
        if snap is not None:
            self.swap(snap)
        else:
            self.fail(error)
