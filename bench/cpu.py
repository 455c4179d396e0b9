"""CPU per registration and per call, in process: independent of the machine's load.

Drives the real server wiring (tests/pbx/harness.py: the registrar, transaction
layer, PBX core, call controller, CDR and location stores that ``minisip serve``
wires) with fake listeners and a fake clock, and counts only the process CPU
time (``time.process_time``) spent inside the driver's entry points:
``on_message``, ``flush`` (commits included) and ``fire_timers``. The phones'
own work (building requests, parsing what the PBX sent) is not counted, nor is
wall time, so the figure holds on a busy machine.

    .venv/bin/python bench/cpu.py [--registrations 20000] [--calls 5000] [--profile]

A registration is REGISTER, 401, REGISTER with credentials, 200; a call is
INVITE, 407, ACK, INVITE with credentials, 100, then the B-leg INVITE, 180, 200,
ACK, the A-leg's BYE, its 200 and the B-leg's BYE and 200, then the timers that
end the transactions. The fake clock moves 1 ms per unit (1,000/s offered).
``--profile`` adds cProfile's top functions (by own time) inside the entry points.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from minisip.collector import YOUNG_EVERY, by_the_clock, collect_young  # noqa: E402
from tests.pbx.harness import Harness  # noqa: E402

BY_THE_CLOCK = True  #: collect as the server does (else --gc-threshold or --no-gc)
_pauses: list[float] = []
_by_gen: dict[int, list[float]] = {}
_gc_start = 0.0


def _gc_pause(phase: str, info: dict[str, Any]) -> None:
    global _gc_start
    if phase == "start":
        _gc_start = time.perf_counter()
    else:
        took = time.perf_counter() - _gc_start
        _pauses.append(took)
        _by_gen.setdefault(info["generation"], []).append(took)


def kind_of(data: bytes) -> str:
    """A message's kind for the per-kind figures: method or status, and whether it
    carries credentials (``INVITE+auth``)."""
    first = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
    kind = first.split(" ")[1] if first.startswith("SIP/") else first.split(" ")[0]
    if b"\r\nAuthorization:" in data or b"\r\nProxy-Authorization:" in data:
        kind += "+auth"
    return kind


class Meter:
    """Process CPU time spent inside the wrapped functions (not re-entrant-counted),
    and per kind of message received: its ``on_message`` and the flush (commit, send)
    of its batch, which the harness runs right after it."""

    def __init__(self, profile: bool) -> None:
        self.cpu = 0.0
        self.depth = 0
        self.prof = cProfile.Profile() if profile else None
        self.kind = "timers"  #: the message the next flush is charged to
        self.by_kind: dict[str, list[float]] = {}  #: kind -> [CPU seconds, messages]

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            if self.depth:
                return fn(*args, **kw)
            self.depth += 1
            if name == "on_message":
                self.kind = kind_of(args[0])
            elif name in ("fire_timers", "collect_young"):
                self.kind = "timers" if name == "fire_timers" else "gc"
            if self.prof is not None:
                self.prof.enable()
            t0 = time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                took = time.process_time() - t0
                self.cpu += took
                if self.prof is not None:
                    self.prof.disable()
                entry = self.by_kind.setdefault(self.kind, [0.0, 0])
                entry[0] += took
                entry[1] += name != "flush"
                self.depth -= 1
        return timed


def instrument(h: Harness, meter: Meter) -> None:
    d = h.driver
    for name in ("on_message", "flush", "fire_timers"):
        setattr(d, name, meter.wrap(getattr(d, name), name))
    h.server.calls.flush = d.flush
    if not BY_THE_CLOCK:
        return  # --gc-threshold or --no-gc
    young = meter.wrap(collect_young, "collect_young")
    advance, last = h.advance, [h.clock.now]

    def advance_and_collect(seconds: float) -> None:  # the server's collector, by fake time
        advance(seconds)
        if h.clock.now - last[0] >= YOUNG_EVERY:
            last[0] = h.clock.now
            young()
    h.advance = advance_and_collect  # type: ignore[method-assign]


def users_yaml(n: int) -> str:
    big = ("    max_concurrent_calls: 1000000\n    max_concurrent_outgoing_calls: 1000000\n"
           "    call_waiting: true\n")  # the callee takes calls while it talks
    return "users:\n" + "".join(f'  "{10000 + i}":\n    password: "pw{10000 + i}x"\n{big}'
                                for i in range(n))


def phone(h: Harness, i: int) -> Any:
    """User 10000 + i's device, at an address of its own."""
    return h.phone(str(10000 + i), f"pw{10000 + i}x", host=f"198.51.{100 + i // 250}.{i % 250 + 1}")


def bench_registrations(tmp: Path, count: int, users: int, profile: bool) -> float:
    h = Harness(tmp / "reg", files={"users.yaml": users_yaml(users)})
    meter = Meter(profile)
    instrument(h, meter)
    phones = [phone(h, i) for i in range(users)]
    for i in range(count):
        p = phones[i % users]
        resp = p.register(3600)
        assert resp.status == 200, resp
        p.inbox.clear()
        h.advance(0.001)
    h.settle(40)
    h.close()
    report("registration", count, meter)
    return meter.cpu / count


def answered_call(caller: Any, callee: Any) -> Any:
    """A call from ``caller`` to ``callee`` (10100), rung, answered and ACKed; the
    phones keep nothing of it."""
    call = caller.call("10100")
    leg = callee.incoming()
    assert leg is not None, caller.inbox
    leg.respond(180)
    leg.answer()
    final = call.final()
    assert final is not None and final.status == 200, final
    call.ack()
    caller.inbox.clear()
    callee.inbox.clear()
    callee.calls.clear()
    return call


def hang_up(call: Any, callee: Any) -> None:
    """The caller's BYE, answered by ``callee``."""
    call.bye()
    callee.answer(callee.requests("BYE")[-1])
    assert call.final("BYE") is not None
    call.phone.inbox.clear()
    callee.inbox.clear()


def bench_calls(tmp: Path, count: int, profile: bool, concurrent: int = 0) -> float:
    h = Harness(tmp / "calls", files={"users.yaml": users_yaml(101)})
    meter = Meter(profile)
    callers = [phone(h, i) for i in range(100)]
    callee = phone(h, 100)
    for p in (*callers, callee):
        assert p.register(3600).status == 200
        p.inbox.clear()
    instrument(h, meter)
    up: deque[Any] = deque()  # calls talking, oldest first
    for i in range(count):
        up.append(answered_call(callers[i % len(callers)], callee))
        while len(up) > concurrent:
            hang_up(up.popleft(), callee)
        h.advance(0.001 if not concurrent else 1 / 300)
    while up:
        hang_up(up.popleft(), callee)
    h.settle(40)
    assert h.leftovers() == {}, h.leftovers()
    h.close()
    report("call", count, meter)
    return meter.cpu / count


def report(unit: str, count: int, meter: Meter) -> None:
    print(f"{unit}s: {count}, CPU in the server's entry points {meter.cpu:.2f} s "
          f"= {1e6 * meter.cpu / count:.0f} us per {unit}; collections {len(_pauses)}, "
          f"{1e6 * sum(_pauses) / count:.0f} us per {unit}, longest "
          f"{1000 * max(_pauses, default=0):.1f} ms (" + ", ".join(
              f"gen{g}: {len(p)}, longest {1000 * max(p):.1f} ms" for g, p in sorted(
                  _by_gen.items())) + ")")
    _pauses.clear()
    _by_gen.clear()
    kinds = sorted(meter.by_kind.items(), key=lambda kv: -kv[1][0])
    timers = meter.by_kind.get("timers", [0.0, 0])[0]
    print("  per message received, with its batch's flush: " + ", ".join(
        f"{k} {1e6 * c / max(n, 1):.0f} us (x{n / count:.0f})"
        for k, (c, n) in kinds if k not in ("timers", "gc"))
        + f"; timers {1e6 * timers / count:.0f} us; young collections "
        f"{1e6 * meter.by_kind.get('gc', [0.0])[0] / count:.0f} us")
    meter.by_kind.clear()
    if meter.prof is not None:
        st = pstats.Stats(meter.prof)
        st.sort_stats("tottime").print_stats(25)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registrations", type=int, default=20000)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--concurrent", type=int, default=0,
                    help="keep this many calls up (300 calls/s of fake time)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--gc-threshold", type=int, nargs=3, metavar=("G0", "G1", "G2"),
                    help="instead of the server's collector (minisip/collector.py, every "
                         "YOUNG_EVERY s of fake time): Python's, with these thresholds")
    ap.add_argument("--no-gc", action="store_true", help="the collector off")
    args = ap.parse_args()
    gc.callbacks.append(_gc_pause)
    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-cpu-"))
    with by_the_clock():  # as the server runs (start-up objects frozen)
        if args.gc_threshold:
            gc.set_threshold(*args.gc_threshold)
            gc.enable()
        global BY_THE_CLOCK
        BY_THE_CLOCK = not (args.gc_threshold or args.no_gc)
        run(args, tmp)
    return 0


def run(args: argparse.Namespace, tmp: Path) -> None:
    try:
        if args.registrations:
            bench_registrations(tmp, args.registrations, args.users, args.profile)
        if args.calls:
            bench_calls(tmp, args.calls, args.profile, args.concurrent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
