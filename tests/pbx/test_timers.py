"""The PBX timer heap: deadlines fire in order; cancelled ones release what they held."""
from __future__ import annotations

import gc
import weakref

from minisip.pbx.timers import TimerHeap


def test_timers_fire_in_deadline_order_and_cancelled_ones_do_not() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    heap.schedule(3.0, fired.append, "c")
    b = heap.schedule(2.0, fired.append, "b")
    heap.schedule(1.0, fired.append, "a")
    b.cancel()
    assert heap.get_timer() == 1.0 and len(heap) == 2
    heap.handle_timer(5.0)
    assert fired == ["a", "c"] and heap.get_timer() is None and len(heap) == 0


class _Call:
    def on_timer(self) -> None:
        raise AssertionError("a cancelled timer fired")


def test_a_cancelled_timer_no_longer_keeps_its_call_alive() -> None:
    heap = TimerHeap()
    call = _Call()
    ref = weakref.ref(call)
    heap.schedule(3600.0, call.on_timer).cancel()
    del call
    gc.collect()
    assert ref() is None


def test_10000_ended_calls_leave_no_heap_behind() -> None:
    heap = TimerHeap()
    heap.schedule(10.0, lambda: None)  # one call still up
    for i in range(10_000):
        heap.schedule(3600.0 + i, lambda: None).cancel()  # max_duration of an ended call
    assert heap.entries < 600 and len(heap) == 1


def test_a_callback_may_cancel_timers_while_the_heap_fires() -> None:
    heap = TimerHeap()
    later = [heap.schedule(5.0 + i, lambda: None) for i in range(1000)]
    fired: list[int] = []

    def cancel_all() -> None:
        for t in later:
            t.cancel()  # compacts the heap in the middle of handle_timer
        fired.append(1)

    heap.schedule(1.0, cancel_all)
    heap.schedule(2.0, fired.append, 2)
    heap.handle_timer(10_000.0)
    assert fired == [1, 2] and len(heap) == 0 and heap.entries == 0
