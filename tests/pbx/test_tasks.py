"""A call's own nursery: lazy, cancelled by the call's end, a failing task stays alone."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from minisip.pbx.tasks import CallTasks


async def test_no_nursery_until_the_first_task_and_close_cancels_them_all() -> None:
    spawned: list[object] = []
    finished: list[str] = []

    async def forever(name: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            finished.append(name)

    async with trio.open_nursery() as nursery:
        def spawn(fn: object, *args: object) -> None:
            spawned.append(fn)
            nursery.start_soon(fn, *args)  # type: ignore[arg-type]

        tasks = CallTasks(spawn, "call-1")
        assert not spawned
        tasks.start(forever, "music")
        tasks.start(forever, "dtmf")  # before the runner is up: queued
        await trio.testing.wait_all_tasks_blocked()
        tasks.start(forever, "later")  # the nursery is open: started at once
        await trio.testing.wait_all_tasks_blocked()
        assert len(spawned) == 1 and tasks.running == 3
        tasks.close()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(finished) == ["dtmf", "later", "music"]
        tasks.start(forever, "after the end")  # ignored: the call is over
        await trio.testing.wait_all_tasks_blocked()
        assert len(spawned) == 1 and tasks.running == 0


async def test_closing_before_the_runner_ran_starts_nothing() -> None:
    started: list[int] = []

    async def task() -> None:
        started.append(1)

    async with trio.open_nursery() as nursery:
        tasks = CallTasks(nursery.start_soon, "call-2")
        tasks.start(task)
        tasks.close()
    assert not started


async def test_a_failing_task_is_logged_and_ends_alone(caplog: pytest.LogCaptureFixture) -> None:
    finished: list[str] = []

    async def broken() -> None:
        raise ValueError("bad WAV")

    async def fine() -> None:
        await trio.sleep(0.01)
        finished.append("fine")

    async with trio.open_nursery() as nursery:
        tasks = CallTasks(nursery.start_soon, "call-3")
        tasks.start(broken)
        tasks.start(fine)
        with trio.fail_after(5):
            while not finished:
                await trio.sleep(0.01)
        tasks.close()
    assert "call call-3: task broken failed" in caplog.text
