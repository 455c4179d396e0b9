"""Memory per call, in process: what an established call keeps, and what ended calls
leave behind while their transactions wait out Timers J/L/M (32 s).

Drives the real server wiring (tests/pbx/harness.py) with a fake clock, as
bench/cpu.py does, and counts Python allocations with ``tracemalloc``:

* ``--held N``: N calls set up and kept talking; the clock then passes Timers
  L/M so only what an established call keeps is left. Prints bytes per call.
* ``--ended N``: N calls set up and hung up at ``--rate`` calls/s of fake time;
  at the end the last 32 s of calls still have their completed transactions.
  Prints bytes per ended call in that window, then what is left once every timer ran.

    .venv/bin/python bench/memory.py [--held 2000] [--ended 6000 --rate 150] [--top 15]

Figures (issue 14): an established call 12.0 KB on main at 3988a16, 8.7 KB after;
an ended call in the last 32 s 4.0 KB, 2.9 KB after, 2.3 KB after the second round
(a re-ACK built from the 2xx, a BYE's 200 kept unechoed, a hash for merge detection;
about 200 B of it are this bench's own phones, and 260 B stale timer entries that
the layer purges in bulk), 1.2 KB once UDP transactions settle (``layer.py``). x 19,200
calls at 600/s: the RSS the server holds above its start, 77 -> 56 -> 41 -> 25 MB.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cpu import answered_call, hang_up, phone, users_yaml  # noqa: E402
from tests.pbx.harness import Harness  # noqa: E402


def measured() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def top(snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot, n: int, per: int) -> None:
    if not n:
        return
    for stat in snapshot.compare_to(base, "lineno")[:n]:
        frame = stat.traceback[0]
        name = frame.filename.replace(str(REPO) + "/", "")
        print(f"    {stat.size_diff / per:8.0f} B {stat.count_diff / per:6.1f} blocks  "
              f"{name}:{frame.lineno}")


def world(tmp: Path) -> tuple[Harness, list[Any], Any]:
    h = Harness(tmp, files={"users.yaml": users_yaml(101)})
    callers = [phone(h, i) for i in range(100)]
    callee = phone(h, 100)
    for p in (*callers, callee):
        assert p.register(3600).status == 200
        p.inbox.clear()
    # warm-up: first-use caches, interned names, CDR statements
    for i in range(200):
        hang_up(answered_call(callers[i % 100], callee), callee)
    h.settle(40)
    for p in (*callers, callee):
        p.inbox.clear()
        p.calls.clear()
        p.auto = False  # settle() made them answer by themselves
    return h, callers, callee


def bench_held(tmp: Path, n: int, ntop: int) -> float:
    h, callers, callee = world(tmp / "held")
    base = measured()
    snap0 = tracemalloc.take_snapshot() if ntop else None
    for i in range(n):
        answered_call(callers[i % 100], callee)  # the phones keep nothing of it
        h.advance(1 / 300)
    h.advance(40)  # Timers L and M: only the established calls remain
    assert len(h.calls.calls) == n
    per = (measured() - base) / n
    print(f"held calls: {n}, {per:.0f} bytes per established call (tracemalloc)")
    if snap0 is not None:
        top(tracemalloc.take_snapshot(), snap0, ntop, n)
    for call in list(h.calls.calls.values()):
        call.hangup(released_by="system", cause="bench")
    h.driver.flush()
    h.pump()
    h.settle(40)
    assert h.leftovers() == {}, h.leftovers()
    h.close()
    return per


def bench_ended(tmp: Path, n: int, rate: float, ntop: int) -> float:
    h, callers, callee = world(tmp / "ended")
    base = measured()
    snap0 = tracemalloc.take_snapshot() if ntop else None
    for i in range(n):
        hang_up(answered_call(callers[i % 100], callee), callee)
        h.advance(1 / rate)
    window = min(n, int(32 * rate))
    used = measured() - base
    c = h.layer.counters
    print(f"ended calls: {n} at {rate:.0f}/s; {window} in the last 32 s; transactions alive: "
          f"ist {c.ist} ict {c.ict} nist {c.nist} nict {c.nict}; "
          f"{used / window:.0f} bytes per call in the window, {used / 1e6:.1f} MB in all")
    if snap0 is not None:
        top(tracemalloc.take_snapshot(), snap0, ntop, window)
    h.settle(40)
    print(f"  after every timer ran: {(measured() - base) / 1e6:.2f} MB above the start")
    assert h.leftovers() == {}, h.leftovers()
    h.close()
    return used / window


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--held", type=int, default=2000, help="calls kept up (0: skip)")
    ap.add_argument("--ended", type=int, default=6000, help="calls set up and ended (0: skip)")
    ap.add_argument("--rate", type=float, default=150.0,
                    help="ended calls per second of fake time (the default runs 40 s: the "
                         "last 32 s are a steady state)")
    ap.add_argument("--top", type=int, default=0, help="print this many allocation sites")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-mem-"))
    tracemalloc.start()
    try:
        if args.held:
            bench_held(tmp, args.held, args.top)
        if args.ended:
            bench_ended(tmp, args.ended, args.rate, args.top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
