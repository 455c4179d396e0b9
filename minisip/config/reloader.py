"""Reloads that never stall the server: snapshots are built in a worker process.

Theory of operation
-------------------
Building a snapshot of 10,000 users is about 130 ms of pure Python. In a
thread it holds the GIL against the event loop: every syscall of the loop
hands the GIL to the CPU-bound thread for a whole switch interval (the convoy
effect), the loop falls behind, and the overload guard sheds new calls (a
reload every 2 s cost 858 to 2,340 of 5,000 calls at 200 calls/s). So the
whole load (read, parse, validate, build) runs in a worker process
(trio-parallel), and what comes back is only what changed:

* The worker compares each file's sha256 with the last attempt's: the same
  bytes need no work at all (a ``touch``, an editor's save without changes).
* It hashes every entry of the big tables (users, lines, trunks, routing
  groups) and compares with the digests of the snapshot the server holds.
  Those digests travel as one opaque blob (pickled by the worker, handed back
  unread by the server), so the server never spends time on them.
* The server gets the small parts whole (system, dial plan, services) and,
  per table, the entries added or changed and the names removed. Applying that
  is a dict copy and a few assignments: about a millisecond for 10,000 users
  and one edited entry, instead of 130 ms.

A snapshot is immutable and swapped in one assignment (ARCHITECTURE.md rule 7),
so a call holding the old one is not affected. ``in_process=True`` runs the
same work in a thread (tests, tools; no worker process to start).
"""
from __future__ import annotations

import copyreg
import hashlib
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import trio

from .loader import ConfigError, ConfigIssue, build_snapshot, read_files
from .schema import FILES, Snapshot, SourceInfo

#: the snapshot's tables that are diffed entry by entry; the rest travels whole
TABLES = ("users", "lines", "trunks", "routing_groups")
_WHOLE = ("system", "dialplan", "services")

Ident = dict[str, "str | None"]  #: file name -> sha256 (None: the file does not exist)


def _proxy(d: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(d)


# Snapshots hold read-only mappings; pickle them as their dict.
copyreg.pickle(MappingProxyType, lambda m: (_proxy, (dict(m),)))


@dataclass(slots=True)
class Changes:
    """What a load found, as the worker sends it back."""
    ident: Ident
    errors: list[ConfigIssue] | None = None
    parts: dict[str, Any] | None = None  #: system, dialplan, services
    #: table -> (entries added or changed, names removed, full order when it moved)
    tables: dict[str, tuple[dict[str, Any], list[str], list[str] | None]] | None = None
    sources: dict[str, SourceInfo] | None = None
    loaded_at: float = 0.0
    digests: bytes = b""  #: opaque to the server: handed back on the next load
    unchanged: bool = False  #: the files of the server's snapshot: only ``digests`` is news
    complete: bool = False  #: ``tables`` hold every entry (the server had no digests yet)


def _background() -> None:
    """In the worker, once: loading is background work; on a busy machine the server's
    calls get the CPU first (the worker is a process of its own, so this costs them
    nothing while the machine is idle)."""
    os.nice(10)


def snapshot_ident(snap: Snapshot) -> Ident:
    return {name: (snap.sources[name].sha256 if name in snap.sources else None)
            for name in FILES}


def _digest(entry: Any) -> bytes:
    return hashlib.blake2b(repr(entry).encode(), digest_size=16).digest()


def build_changes(config_dir: str, last: Ident | None, digests: bytes | None,
                  base: Ident | None) -> Changes | None:
    """In the worker: None when the files are the bytes of the last attempt ``last``.

    ``digests`` are those of the server's snapshot, or None when it has none yet;
    then, if the files are still those of ``base`` (the server's snapshot), only
    digests are returned, else every entry.
    """
    try:
        raw = read_files(Path(config_dir))
    except ConfigError as exc:  # the directory is gone or unreadable
        return Changes({}, errors=exc.errors)
    ident = {n: (f.info.sha256 if f.info else None) for n, f in raw.items()}
    if ident == last and digests is not None:
        return None
    try:
        snap = build_snapshot(Path(config_dir), raw)
    except ConfigError as exc:
        return Changes(ident, errors=exc.errors)
    new = {t: {name: _digest(e) for name, e in getattr(snap, t).items()} for t in TABLES}
    blob = pickle.dumps(new, protocol=pickle.HIGHEST_PROTOCOL)
    if digests is None and ident == base:
        return Changes(ident, digests=blob, unchanged=True)
    old: dict[str, dict[str, bytes]] = pickle.loads(digests) if digests is not None else {
        t: {} for t in TABLES}
    tables = {}
    for t in TABLES:
        entries, was, now = getattr(snap, t), old[t], new[t]
        changed = {n: entries[n] for n, d in now.items() if was.get(n) != d}
        removed = [n for n in was if n not in now]
        gone = set(removed)
        expected = [n for n in was if n not in gone] + [n for n in now if n not in was]
        tables[t] = (changed, removed, None if expected == list(now) else list(now))
    return Changes(ident, parts={p: getattr(snap, p) for p in _WHOLE}, tables=tables,
                   sources=dict(snap.sources), loaded_at=snap.loaded_at, digests=blob,
                   complete=digests is None)


def apply_changes(base: Snapshot | None, ch: Changes, config_dir: Path) -> Snapshot:
    """The snapshot ``ch`` describes, sharing every unchanged entry with ``base``."""
    assert ch.parts is not None and ch.tables is not None and ch.sources is not None
    tables: dict[str, Any] = {}
    for t in TABLES:
        changed, removed, order = ch.tables[t]
        old = getattr(base, t) if base is not None and not ch.complete else {}
        if not (changed or removed or order or ch.complete):
            tables[t] = old
            continue
        d = dict(old)
        for name in removed:
            del d[name]
        d.update(changed)
        if order is not None:
            d = {name: d[name] for name in order}
        tables[t] = MappingProxyType(d)
    return Snapshot(**ch.parts, **tables, loaded_at=ch.loaded_at, config_dir=config_dir,
                    sources=MappingProxyType(ch.sources))


class Reloader:
    """Loads the configuration directory again, off the event loop, as changes."""

    def __init__(self, config_dir: Path, base: Snapshot | None = None, *,
                 in_process: bool = False) -> None:
        self.config_dir = Path(config_dir)
        self.current = base  #: the last snapshot loaded (what the changes apply to)
        self.in_process = in_process
        self._base = snapshot_ident(base) if base is not None else None
        self._last: Ident | None = None  #: files of the last attempt, good or bad
        self._error: ConfigError | None = None  #: the last attempt's, if it failed
        self._digests: bytes | None = None
        self._lock = trio.Lock()
        self._context: Any = None  #: a trio-parallel worker context, when opened
        self.load_seconds = 0.0  #: the last load, as the server waited for it

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep one worker process ready (started now, so the first reload is quick)."""
        import trio_parallel  # type: ignore[import-untyped]

        stopping = False
        try:
            async with trio_parallel.open_worker_context(idle_timeout=float("inf"),
                                                         init=_background,
                                                         grace_period=1.0) as ctx:
                self._context = ctx
                task_status.started()
                try:
                    await self._warm_up()
                    await trio.sleep_forever()
                except trio.Cancelled:
                    stopping = True
                    raise
        except trio_parallel.BrokenWorkerError:
            # On the way out a worker that did not exit within the grace period was
            # killed: at nice 10 on a busy machine it may still be starting. It only
            # loads files, so nothing is lost, and the server exits with its own status.
            if not stopping:
                raise

    async def _warm_up(self) -> None:
        """Start the worker and learn the digests of the snapshot the server holds. When
        the files were edited meanwhile nothing is learnt: the next load (the watcher's)
        then loads them whole and reports the change."""
        async with self._lock:
            if self._digests is not None or self._base is None:
                return
            ch = await self._build(None, None, self._base)
            if ch is not None and ch.unchanged:
                self._digests, self._last = ch.digests, ch.ident

    async def _build(self, last: Ident | None, digests: bytes | None,
                     base: Ident | None) -> Changes | None:
        """``build_changes`` in the worker process (in a thread when ``in_process``)."""
        args = (str(self.config_dir), last, digests, base)
        if self.in_process or self._context is None:
            return await trio.to_thread.run_sync(build_changes, *args, abandon_on_cancel=True)
        return await self._context.run_sync(build_changes, *args,  # type: ignore[no-any-return]
                                            kill_on_cancel=True)

    async def load(self, *, force: bool = False) -> tuple[
            bool, Snapshot | None, ConfigError | None]:
        """(changed, snapshot, error). ``changed`` is False when the files are the
        bytes of the last attempt: then the snapshot is the current one, or the
        error is the last attempt's. ``force`` checks the files again all the same
        (SIGHUP, ``minisip reload``): a new snapshot even when nothing changed."""
        async with self._lock:
            t0 = time.perf_counter()
            ch = await self._build(None if force else self._last, self._digests, self._base)
            self.load_seconds = time.perf_counter() - t0
            if ch is None:
                if self._error is not None:
                    return False, None, self._error
                return False, self.current, None
            self._last = ch.ident
            if ch.errors is not None:
                self._error = ConfigError(ch.errors)
                return True, None, self._error
            self._error = None
            self._digests = ch.digests
            if ch.unchanged and self.current is not None:
                return False, self.current, None
            self.current = apply_changes(self.current, ch, self.config_dir)
            self._base = None
            return True, self.current, None


__all__ = ["Changes", "Reloader", "apply_changes", "build_changes", "snapshot_ident"]
