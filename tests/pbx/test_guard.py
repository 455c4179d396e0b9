"""The brute-force guard: blocks, windows, scanners, and bounded tables under a flood."""
from __future__ import annotations

import time

from minisip.pbx.guard import AuthGuard


def test_a_pair_is_blocked_after_max_failures_within_the_window() -> None:
    g = AuthGuard(max_failures=3, window=60, block_seconds=100)
    for t in (0, 1):
        g.failure("10.0.0.1", "100", t)
    assert not g.is_blocked("10.0.0.1", "100", 2)
    g.failure("10.0.0.1", "100", 2)
    assert g.is_blocked("10.0.0.1", "100", 3)
    assert not g.is_blocked("10.0.0.1", "101", 3)  # another user from the same address
    assert not g.is_blocked("10.0.0.2", "100", 3)  # the same user elsewhere
    assert not g.is_blocked("10.0.0.1", "100", 102.5)  # the block expired


def test_failures_older_than_the_window_are_forgotten() -> None:
    g = AuthGuard(max_failures=3, window=10, block_seconds=100)
    g.failure("h", "u", 0)
    g.failure("h", "u", 5)
    g.failure("h", "u", 11)  # the first two are past the window
    assert not g.is_blocked("h", "u", 12)


def test_success_clears_the_pairs_failures() -> None:
    g = AuthGuard(max_failures=2)
    g.failure("h", "u", 0)
    g.success("h", "u")
    g.failure("h", "u", 1)
    assert not g.is_blocked("h", "u", 2)


def test_a_source_failing_for_many_users_is_blocked_as_a_whole() -> None:
    g = AuthGuard(max_users_per_source=5, window=60, block_seconds=30)
    for i in range(4):
        g.failure("scanner", str(200 + i), i)
    assert not g.is_blocked("scanner", "100", 4)
    g.failure("scanner", "204", 4)
    assert g.is_blocked("scanner", "100", 5)  # even a user it never tried
    assert not g.is_blocked("scanner", "100", 35)


def test_distinct_users_count_only_within_the_window() -> None:
    g = AuthGuard(max_users_per_source=3, window=10)
    g.failure("h", "a", 0)
    g.failure("h", "b", 1)
    g.failure("h", "c", 20)
    assert not g.is_blocked("h", "x", 21)


def test_configure_changes_the_limits_for_the_next_failures() -> None:
    g = AuthGuard(max_failures=10)
    g.configure(max_failures=2, max_users_per_source=20, window=60, block_seconds=5)
    g.failure("h", "u", 0)
    g.failure("h", "u", 0)
    assert g.is_blocked("h", "u", 1) and not g.is_blocked("h", "u", 6)


def test_tables_empty_again_after_a_flood_through_the_timer_loop() -> None:
    g = AuthGuard(max_failures=3, max_users_per_source=3, window=10, block_seconds=20)
    for i in range(5000):  # 5,000 sources, each guessing 3 users 3 times
        host = f"10.{i // 250}.{i % 250}.1"
        for user in ("100", "101", "102"):
            for _ in range(3):
                g.failure(host, user, i * 0.001)
    assert len(g) > 5000
    deadline = g.get_timer()
    assert deadline is not None
    now = 0.0
    while (deadline := g.get_timer()) is not None:
        assert deadline > now
        now = deadline
        g.handle_timer(now)
    assert len(g) == 0 and now < 30


def test_each_failure_costs_constant_time_past_50000_pairs() -> None:
    g = AuthGuard(window=3600)
    for i in range(60_000):
        g.failure(f"h{i}", "u", 0.0)
    t = time.process_time()  # CPU only: other processes on the machine do not count
    for i in range(1000):
        g.failure(f"x{i}", "u", 1.0)
    per_failure = (time.process_time() - t) / 1000
    assert per_failure < 200e-6, f"{per_failure * 1e6:.0f} us per failure"


def test_max_entries_caps_each_table_oldest_first() -> None:
    g = AuthGuard(window=3600, max_entries=100)
    for i in range(1000):
        g.failure(f"h{i}", "u", 0.0)
    assert len(g._pairs) == 100 and "h999" in g._sources and "h0" not in g._sources
