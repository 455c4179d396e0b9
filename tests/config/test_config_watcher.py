"""Live reload with the real clock (watchfiles works in a thread; no autojump clock):
every way an editor saves ends in the right snapshot; a bad edit keeps the old one."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

from minisip.config.loader import ConfigError
from minisip.config.schema import Snapshot
from minisip.config.watcher import ConfigHolder, watch_config

TIMEOUT = 5.0  # generous for CI; a reload normally lands within 50-100 ms


class Recorder:
    """on_reload that records results and lets a test wait for the next one."""

    def __init__(self, holder: ConfigHolder) -> None:
        self.holder = holder
        self.results: list[tuple[Snapshot | None, ConfigError | None]] = []
        self._changed = trio.Event()

    def __call__(self, snap: Snapshot | None, error: ConfigError | None) -> None:
        self.holder.apply(snap, error)
        self.results.append((snap, error))
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate: Any) -> tuple[Snapshot | None, ConfigError | None]:
        with trio.fail_after(TIMEOUT):
            while not (self.results and predicate(*self.results[-1])):
                await self._changed.wait()
        return self.results[-1]


@pytest.fixture
async def watching(cfg: Path) -> AsyncIterator[Recorder]:
    holder = ConfigHolder(cfg)
    rec = Recorder(holder)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_config, cfg, rec)
        yield rec
        nursery.cancel_scope.cancel()


def users_text(*names: str) -> str:
    return "users:\n" + "".join(f'  "{n}":\n    password: "{n}"\n' for n in names)


def has_users(*names: str) -> Any:
    return lambda snap, err: snap is not None and list(snap.users) == list(names)


async def test_edit_in_place_is_reloaded(cfg: Path, watching: Recorder) -> None:
    with open(cfg / "users.yaml", "a") as f:  # noqa: ASYNC230 - an editor appending
        f.write('  "103":\n    password: "103"\n')
    await watching.until(has_users("100", "101", "102", "103"))
    assert watching.holder.generation == 1
    assert list(watching.holder.current.users) == ["100", "101", "102", "103"]


async def test_temp_file_and_rename_is_reloaded(cfg: Path, watching: Recorder) -> None:
    tmp = cfg / ".users.yaml.swp"
    tmp.write_text(users_text("200", "201"))
    os.replace(tmp, cfg / "users.yaml")
    await watching.until(has_users("200", "201"))
    # The old inode is gone; the watcher still follows the directory.
    (cfg / "users.yaml").write_text(users_text("300"))
    await watching.until(has_users("300"))


async def test_a_write_in_several_steps_ends_in_the_final_state(cfg: Path,
                                                                 watching: Recorder) -> None:
    text = users_text("100", "101", "102", "103", "104")
    # An editor that truncates, then writes in pieces (blocking on purpose).
    with open(cfg / "users.yaml", "w") as f:  # noqa: ASYNC230
        for i in range(0, len(text), 25):
            f.write(text[i:i + 25])
            f.flush()
            await trio.sleep(0.03)
    await watching.until(has_users("100", "101", "102", "103", "104"))


async def test_a_bad_edit_keeps_the_old_snapshot_and_a_fix_recovers(
        cfg: Path, watching: Recorder) -> None:
    before = watching.holder.current
    (cfg / "users.yaml").write_text(users_text("100") + "    max_duration: soon\n")
    _, error = await watching.until(lambda snap, err: err is not None)
    assert str(error) == ("users.yaml line 4: max_duration: must be an integer >= 0, "
                          "got 'soon'")
    assert watching.holder.current is before  # still serving the last good config
    assert watching.holder.last_error is error

    (cfg / "users.yaml").write_text("users: [\n")  # garbage
    _, error = await watching.until(lambda snap, err: err is not None and "syntax" in str(err))
    assert watching.holder.current is before

    (cfg / "users.yaml").write_text(users_text("100", "105"))
    await watching.until(has_users("100", "105"))
    assert watching.holder.last_error is None
    assert watching.holder.current is not before


async def test_changes_while_a_load_runs_are_loaded_once_it_finishes(
        cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minisip.config.reloader as watcher_module

    real = watcher_module.build_snapshot

    def slow_build(*args: Any) -> Snapshot:
        time.sleep(0.3)  # a long load; edits land meanwhile
        return real(*args)

    monkeypatch.setattr(watcher_module, "build_snapshot", slow_build)
    rec = Recorder(ConfigHolder(cfg))
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_config, cfg, rec)
        (cfg / "users.yaml").write_text(users_text("1"))
        await trio.sleep(0.15)  # the first load is running now
        (cfg / "users.yaml").write_text(users_text("2"))
        await trio.sleep(0.05)
        (cfg / "users.yaml").write_text(users_text("3"))
        await rec.until(has_users("3"))
        nursery.cancel_scope.cancel()
    assert len(rec.results) <= 3


async def test_unchanged_content_and_other_files_do_not_reload(cfg: Path,
                                                               watching: Recorder) -> None:
    (cfg / "notes.txt").write_text("not config")
    (cfg / ".users.yaml.tmp").write_text("editor temp file")
    (cfg / "users.yaml").write_text(users_text("100", "101", "102", "103"))
    await watching.until(has_users("100", "101", "102", "103"))
    count = len(watching.results)
    os.utime(cfg / "users.yaml")  # touch: same bytes
    (cfg / "users.yaml").write_text((cfg / "users.yaml").read_text())
    await trio.sleep(0.3)
    assert len(watching.results) == count


async def test_a_deleted_file_means_its_defaults(cfg: Path, watching: Recorder) -> None:
    (cfg / "system.yaml").write_text("udp_port: 5070\n")
    await watching.until(lambda s, e: s is not None and s.system.udp_port == 5070)
    (cfg / "system.yaml").unlink()
    await watching.until(lambda s, e: s is not None and s.system.udp_port == 5060)


async def test_stop_event_ends_the_watcher_quickly(cfg: Path) -> None:
    stop = trio.Event()
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: watch_config(
                cfg, lambda s, e: None, stop_event=stop, task_status=task_status))
            start = trio.current_time()
            stop.set()
    assert trio.current_time() - start < 0.5


async def test_cancelling_the_watcher_is_quick(cfg: Path) -> None:
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_config, cfg, lambda s, e: None)
            start = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - start < 0.5


def test_holder_reload_swaps_or_keeps_the_old_snapshot(cfg: Path) -> None:
    holder = ConfigHolder(cfg)
    first = holder.current
    assert (holder.generation, holder.last_error) == (0, None)
    (cfg / "users.yaml").write_text(users_text("100", "200"))
    assert holder.reload() is None
    assert holder.generation == 1 and list(holder.current.users) == ["100", "200"]
    assert holder.current is not first
    good = holder.current
    (cfg / "users.yaml").write_text("users:\n  200:\n    password: x\n")
    error = holder.reload()
    assert isinstance(error, ConfigError) and holder.last_error is error
    assert holder.current is good and holder.generation == 1


def test_holder_refuses_to_start_on_a_bad_config(cfg: Path) -> None:
    (cfg / "system.yaml").write_text("udp_port: [\n")
    with pytest.raises(ConfigError, match="system.yaml line"):
        ConfigHolder(cfg)
