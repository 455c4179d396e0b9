"""Python's cycle collector, run by the clock instead of by allocation counts.

Calls, registrations and their transactions make no reference cycles
(tests/pbx/test_memory.py holds that): reference counting frees all of it, and
the collector only ever finds the odd short-lived cycle (an exception and its
traceback, a control connection). What it costs is the objects it visits.

Left to itself it pauses the loop for tens of milliseconds under load: it runs
a young collection when allocations minus deallocations pass a threshold, and
at a steady call rate the new calls' objects are offset by the old calls' being
freed, so the count stays low while the young generation grows to 30,000
objects and more, all visited in one pause (30 ms at 750 calls/s). And a
full collection visits every live object: every transaction of the last 32 s
(670 ms at 600 calls/s).

So automatic collection is off: the start-up objects are frozen (never visited
again); every ``YOUNG_EVERY`` seconds the young generations are collected (what
was allocated since and still lives: a few thousand objects, 1-3 ms under load,
nothing when idle), their survivors move to the old generation; that one is
collected every ``OLD_EVERY`` seconds, and only if young collections found
cycles since, as some might have aged before dying.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import trio

YOUNG_EVERY = 0.05  #: seconds between young collections
OLD_EVERY = 600.0  #: seconds between looks at the old generation


def collect_young() -> None:
    """Generations 0 and 1 together: each survivor is visited once, then is old."""
    gc.collect(1)


def young_garbage() -> int:
    """Unreachable objects the young generations' collections have found so far."""
    return sum(s["collected"] for s in gc.get_stats()[:2])


@contextmanager
def by_the_clock() -> Iterator[None]:
    """Automatic collection off (start-up objects frozen) inside; as it was after."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


async def run_collector() -> None:
    """Started once the server is up (what exists then is frozen): the young
    generations every ``YOUNG_EVERY`` s, the old one every ``OLD_EVERY`` s if cycles
    were found since; automatic collection as it was when cancelled."""
    with by_the_clock():
        found = young_garbage()
        old_at = trio.current_time() + OLD_EVERY
        while True:
            await trio.sleep(YOUNG_EVERY)
            collect_young()
            if trio.current_time() >= old_at:
                old_at = trio.current_time() + OLD_EVERY
                if young_garbage() > found:
                    gc.collect()
                found = young_garbage()
