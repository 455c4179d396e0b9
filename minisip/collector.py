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

Freed memory goes back to the system where it can. Python's allocator returns a 1 MB
arena only once nothing in it lives: a load's transactions all go 32 s after their
last message, but a few objects made during the load outlive it (bounded parse
caches, interned URIs; the nonce-counts no longer, see ``sip/digest.py``) and keep
most arenas, so RSS stays near its peak and the next load reuses it. Larger blocks
(datagrams, big dict tables) come from the C library's heap, which gives back only
its top unless asked: every ``TRIM_EVERY`` seconds glibc's ``malloc_trim`` returns
every free page (about a millisecond; skipped where the C library has no such call),
and blocks of 128 KB and more are mapped on their own (``heap_trimmer``): in a
10-minute soak at 1,040 calls/s RSS moved in steps of 5-10 MB without that, 5 MB in
all with it.
"""
from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

YOUNG_EVERY = 0.05  #: seconds between young collections
OLD_EVERY = 600.0  #: seconds between looks at the old generation
TRIM_EVERY = 10.0  #: seconds between giving freed C heap pages back to the system


def collect_young() -> None:
    """Generations 0 and 1 together: each survivor is visited once, then is old."""
    gc.collect(1)


def young_garbage() -> int:
    """Unreachable objects the young generations' collections have found so far."""
    return sum(s["collected"] for s in gc.get_stats()[:2])


#: glibc's mallopt() parameter, and the block size from which blocks are mapped alone
M_MMAP_THRESHOLD, MMAP_FROM = -3, 128 * 1024


def heap_trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS).

    Blocks of 128 KB and more (the tables of the dicts that index calls and
    transactions) are set to be mapped on their own, always: freeing one unmaps it.
    Left to itself glibc raises that threshold to the size of each mapped block freed,
    and the next tables go into its heap, whose RSS then moves in steps of megabytes."""
    try:
        libc = ctypes.CDLL(None)
        trim, mallopt = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, MMAP_FROM)
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


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
        trim = heap_trimmer()
        old_at = trio.current_time() + OLD_EVERY
        trim_at = trio.current_time() + TRIM_EVERY
        while True:
            await trio.sleep(YOUNG_EVERY)
            collect_young()
            now = trio.current_time()
            if now >= old_at:
                old_at = now + OLD_EVERY
                if young_garbage() > found:
                    gc.collect()
                found = young_garbage()
            if trim is not None and now >= trim_at:
                trim_at = now + TRIM_EVERY
                trim()
