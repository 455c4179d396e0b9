"""Memory that outlives its use: ended calls and cancelled timers let go at once.

An ended call's transactions live on for 32 s (Timers J, L, M); a cancelled
max-duration timer's deadline may be hours away. Neither may keep the ended
call (its messages, legs, dialogs: tens of KB) in memory until then.
"""
from __future__ import annotations

import gc
import sys
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from minisip.collector import heap_trimmer
from minisip.pbx.call import Call
from minisip.pbx.timers import TimerHeap
from tests.pbx.harness import Harness, Phone
from tests.pbx.test_calls_inprocess import answered, registered


class Big:
    pass


def calls_alive() -> list[Call]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, Call)]


def test_a_cancelled_timer_lets_go_of_what_it_would_have_called() -> None:
    heap, big = TimerHeap(), Big()
    ref = weakref.ref(big)
    t = heap.schedule(3600.0, lambda b: None, big)
    del big
    t.cancel()
    gc.collect()
    assert ref() is None
    assert len(heap) == 0 and heap.get_timer() is None


def test_cancelled_timers_far_away_do_not_pile_up() -> None:
    heap = TimerHeap()
    keep = heap.schedule(10.0, lambda: None)
    for i in range(20_000):
        heap.schedule(3600.0 + i, lambda: None).cancel()
    assert len(heap._heap) < 5000 and len(heap) == 1
    fired: list[str] = []
    heap.schedule(5.0, fired.append, "early")
    heap.handle_timer(20.0)
    assert fired == ["early"] and not keep.alive and heap.get_timer() is None


def test_a_timer_cancelled_while_timers_fire_is_not_run() -> None:
    heap = TimerHeap()
    fired: list[int] = []
    later = [heap.schedule(2.0 + i, fired.append, i) for i in range(5000)]
    heap.schedule(1.0, lambda: [t.cancel() for t in later])  # purges mid-run
    heap.schedule(3.0, fired.append, -1)
    heap.handle_timer(10_000.0)
    assert fired == [-1] and len(heap) == 0


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_an_ended_call_is_freed_while_its_transactions_live_on(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    assert len(calls_alive()) == 1
    call.bye()
    bob.answer(bob.requests("BYE")[-1])
    assert call.final("BYE") is not None and not h.calls.calls
    h.advance(1.0)
    assert h.layer.counters.ict == 1  # the device's INVITE, until Timer M
    assert calls_alive() == []
    h.settle()
    assert h.leftovers() == {}


def test_a_2xx_repeated_after_the_call_ended_is_acked_again(h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    acks = len(bob.requests("ACK"))
    call.bye()
    bob.answer(bob.requests("BYE")[-1])
    leg.answer()  # the device did not hear our ACK: its 2xx again
    assert len(bob.requests("ACK")) == acks + 1
    again = bob.requests("ACK")[-1]
    assert again.call_id == leg.invite.call_id and again.cseq == (leg.invite.cseq[0], "ACK")
    assert calls_alive() == []
    h.settle()
    assert h.leftovers() == {}


def test_an_ack_with_our_sdp_answer_is_sent_again_as_it_was_after_the_call_ended(
        h: Harness) -> None:
    alice, bob = registered(h, "100", "101")
    call = alice.call("101", body=b"")  # no offer: the device's 200 has it
    leg = bob.incoming()
    assert leg is not None
    leg.answer()
    call.ack(alice.sdp())  # the caller's answer goes on in our ACK to the device
    first = bob.requests("ACK")[-1]
    assert b"m=audio" in first.body
    call.bye()
    bob.answer(bob.requests("BYE")[-1])
    leg.answer()  # our ACK was lost: the 2xx again
    again = bob.requests("ACK")[-1]
    assert again is not first and again.body == first.body
    h.settle()
    assert h.leftovers() == {}


def test_a_2xx_of_another_dialog_after_the_call_ended_is_acked_and_ended(
        h: Harness) -> None:
    alice, bob, call, leg = answered(h)
    call.bye()
    bob.answer(bob.requests("BYE")[-1])
    byes = len(bob.requests("BYE"))
    leg.tag = "fork2"  # a second device behind a forking proxy answers late
    leg.dialog = None
    leg.answer()
    assert bob.requests("ACK")[-1].to_tag == "fork2"
    bye = bob.requests("BYE")[-1]
    assert len(bob.requests("BYE")) == byes + 1 and bye.to_tag == "fork2"
    bob.answer(bye)
    h.settle()
    assert h.leftovers() == {}


def test_calls_and_registrations_make_no_reference_cycles(h: Harness) -> None:
    """What lets the server run Python's collector rarely (minisip/collector.py):
    reference counting alone frees everything a call or a registration leaves."""
    alice, bob, call, leg = answered(h)  # warm: caches, first-use imports
    call.bye()
    bob.answer(bob.requests("BYE")[-1])
    h.settle()
    alice.auto = bob.auto = False  # (settle made the phones answer by themselves)
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            assert alice.register().status == 200
            call = alice.call("101")
            leg = bob.incoming()
            assert leg is not None
            leg.ring()
            leg.answer()
            call.ack()
            call.bye()
            bob.answer(bob.requests("BYE")[-1])
            assert call.final("BYE") is not None
        h.settle()
        assert h.leftovers() == {}
        del call, leg
        alice.inbox.clear()
        bob.inbox.clear()
        bob.calls.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        garbage = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert found == 0, garbage[:50]


def _many_users(n: int) -> str:
    limits = ("    max_concurrent_calls: 1000\n    max_concurrent_outgoing_calls: 1000\n"
              "    call_waiting: true\n")  # the callee takes every call while it talks
    return "users:\n" + "".join(f'  "{300 + i}":\n    password: "pw{300 + i}x"\n{limits}'
                                for i in range(n))


def test_an_established_call_takes_at_most_10_kb(tmp_path: Path) -> None:
    """Issue 14's figure: what a call that talks keeps once its setup transactions
    ended (Timers L, M), counted by tracemalloc in process: its legs, dialogs, the
    INVITEs and ACK kept as text, its timers and bookkeeping."""
    h = Harness(tmp_path, files={"users.yaml": _many_users(21)})
    callers = [h.phone(str(300 + i), f"pw{300 + i}x") for i in range(20)]
    callee = h.phone("320", "pw320x")
    for p in (*callers, callee):
        assert p.register(3600).status == 200

    def talk(caller: Phone) -> None:
        call = caller.call("320")
        leg = callee.incoming()
        assert leg is not None
        leg.ring()
        leg.answer()
        assert call.final() is not None
        call.ack()
        caller.inbox.clear()
        callee.inbox.clear()
        callee.calls.clear()

    try:
        for i in range(40):  # warm: caches, first-use imports, CDR statements
            talk(callers[i % 20])
        h.advance(40)
        n = 200
        tracemalloc.start()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            talk(callers[i % 20])
            h.advance(0.005)
        h.advance(40)  # Timers L and M: the setup transactions are gone
        gc.collect()
        per_call = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        assert len(h.calls.calls) == n + 40
        assert per_call <= 10 * 1024, f"{per_call:.0f} bytes per established call"
    finally:
        tracemalloc.stop()
        h.close()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or heap_trimmer() is None,
                    reason="glibc's malloc_trim")
def test_the_trimmer_gives_the_c_heaps_free_pages_back() -> None:
    """What a load leaves free in the middle of the C heap (blocks over 512 bytes:
    datagrams, responses) goes back to the system (minisip/collector.py)."""
    trim = heap_trimmer()
    assert trim is not None
    blocks = [bytes(600 + i % 7) for i in range(80_000)]  # about 48 MB
    kept = blocks[::100]  # one in a hundred outlives the load: the heap cannot shrink
    del blocks
    freed = rss_mb()
    trim()
    assert rss_mb() < freed - 30 and len(kept) == 800
