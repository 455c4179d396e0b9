"""Reloads as changes: what changed arrives, the rest is shared with the old snapshot."""
from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import trio

from minisip.config.loader import load_snapshot
from minisip.config.reloader import Reloader, apply_changes, build_changes, snapshot_ident


def users_text(*names: str, password: str = "pw") -> str:
    return "users:\n" + "".join(f'  "{n}":\n    password: "{password}{n}"\n' for n in names)


def test_one_edited_user_travels_alone_and_the_others_are_shared(cfg: Path) -> None:
    (cfg / "users.yaml").write_text(users_text("100", "101", "102"))
    base = load_snapshot(cfg)
    first = build_changes(str(cfg), None, None, snapshot_ident(base))
    assert first is not None and first.unchanged  # the server's files: digests only
    (cfg / "users.yaml").write_text(users_text("100", "102", "103").replace(
        'password: "pw100"', 'password: "new"'))
    ch = build_changes(str(cfg), first.ident, first.digests, None)
    assert ch is not None and ch.tables is not None
    changed, removed, order = ch.tables["users"]
    assert sorted(changed) == ["100", "103"] and removed == ["101"] and order is None
    ch = pickle.loads(pickle.dumps(ch))  # as it crosses from the worker
    snap = apply_changes(base, ch, cfg)
    assert list(snap.users) == ["100", "102", "103"]
    assert snap.users["100"].password == "new"
    assert snap.users["102"] is base.users["102"]  # not rebuilt, not copied
    assert build_changes(str(cfg), ch.ident, ch.digests, None) is None  # same bytes again


def test_a_reordered_table_keeps_the_files_order(cfg: Path) -> None:
    (cfg / "users.yaml").write_text(users_text("100", "101", "102"))
    base = load_snapshot(cfg)
    first = build_changes(str(cfg), None, None, snapshot_ident(base))
    assert first is not None
    (cfg / "users.yaml").write_text(users_text("102", "100", "101"))
    ch = build_changes(str(cfg), first.ident, first.digests, None)
    assert ch is not None
    assert list(apply_changes(base, ch, cfg).users) == ["102", "100", "101"]


def test_an_error_comes_back_as_issues_and_the_old_snapshot_stays(cfg: Path) -> None:
    base = load_snapshot(cfg)
    (cfg / "users.yaml").write_text('users:\n  "100":\n    max_duration: soon\n')
    ch = build_changes(str(cfg), None, None, snapshot_ident(base))
    assert ch is not None and ch.errors and "users.yaml line" in str(ch.errors[0])


async def test_an_edit_made_before_the_warm_up_is_reported_by_the_next_load(
        cfg: Path) -> None:
    reloader = Reloader(cfg, load_snapshot(cfg), in_process=True)
    (cfg / "users.yaml").write_text(users_text("100", "200"))  # edited right after start
    await reloader._warm_up()
    changed, snap, error = await reloader.load()
    assert changed and error is None and snap is not None and list(snap.users) == ["100", "200"]
    changed, _, _ = await reloader.load()
    assert not changed  # nothing new since


async def test_a_forced_load_gives_a_new_snapshot_even_without_changes(cfg: Path) -> None:
    reloader = Reloader(cfg, load_snapshot(cfg), in_process=True)
    await reloader._warm_up()
    before = reloader.current
    changed, snap, _ = await reloader.load(force=True)
    assert changed and snap is not before and snap is not None and before is not None
    assert snap.users is before.users  # nothing changed: the very same table
    with trio.fail_after(5):
        changed, _, _ = await reloader.load()
    assert not changed


def _workers() -> set[int]:
    """Our child processes that are multiprocessing workers (Linux /proc)."""
    me = str(os.getpid())
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == me and b"spawn_main" in cmdline:
            kids.add(int(stat.parent.name))
    return kids


async def test_a_worker_too_slow_to_exit_at_shutdown_is_killed_without_an_error(
        cfg: Path) -> None:
    """A busy machine may not run the worker (nice 10) within the grace period when the
    server stops: it is killed, and serve() ends as cancelled, not with an error."""
    before = _workers()
    reloader = Reloader(cfg, load_snapshot(cfg))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(reloader.serve)
            await reloader.load(force=True)  # the worker is up
            (worker,) = _workers() - before
            os.kill(worker, signal.SIGSTOP)  # as if the machine gave it no CPU
            nursery.cancel_scope.cancel()
    assert worker not in _workers()  # killed, and reaped
