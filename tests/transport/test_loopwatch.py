"""The loop's stall report (minisip/loopwatch.py): a long iteration is counted and
named after the task that took it, with the collections and notes inside it."""
from __future__ import annotations

import gc
import time

import trio

from minisip.loopwatch import LoopWatch


async def test_a_stall_is_counted_and_the_next_one_named_after_its_task() -> None:
    watch = LoopWatch(threshold=0.03)
    trio.lowlevel.add_instrument(watch)
    watch.install()
    try:
        async def commits_slowly() -> None:
            watch.note("cdr commit", 0.04)
            time.sleep(0.05)  # what a blocking commit does to every phone
            gc.collect()

        for _ in range(2):
            await trio.sleep(0.01)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(commits_slowly)
            await trio.sleep(0.01)
    finally:
        watch.uninstall()
        trio.lowlevel.remove_instrument(watch)
    stats = watch.stats()
    assert stats["stalls"] == 2 and stats["worst_ms"] >= 50
    first, second = stats["recent_stalls"]
    assert first["task"] == "(not timed yet)"  # task steps are timed after a stall only
    assert second["task"].endswith("commits_slowly") and second["task_ms"] >= 50
    assert second["cpu_ms"] <= second["ms"] - 40  # the 50 ms asleep were no CPU
    for stall in (first, second):
        assert "cdr commit 40 ms" in stall["notes"]
        assert any(n.startswith("gc gen2") for n in stall["notes"])
    assert stats["gc_pauses"] >= 2 and watch._gc not in gc.callbacks


async def test_short_iterations_are_no_stalls() -> None:
    watch = LoopWatch(threshold=0.05)
    trio.lowlevel.add_instrument(watch)
    try:
        for _ in range(20):
            await trio.sleep(0.001)
    finally:
        trio.lowlevel.remove_instrument(watch)
    assert watch.iterations >= 10 and watch.slow == 0 and watch.stats()["recent_stalls"] == []
