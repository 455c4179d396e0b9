"""Authenticated REGISTER throughput: sipp against a real minisip (or Kamailio) process.

Each sipp "call" is one registration: REGISTER, 401, REGISTER with digest
credentials, 200. Distinct users (N in users.yaml) are used in turn. Zero
failures are allowed: a run with any failed registration prints FAIL.

    .venv/bin/python bench/register.py [--users 500] [--count 40000] [--rate 8000]
    .venv/bin/python bench/register.py --target kamailio   # the same load on Kamailio
    .venv/bin/python bench/register.py --profile   # py-spy summary of the server

Prints registrations per second (successful registrations / sipp's elapsed
time), the server's CPU time per registration (from /proc: it holds on a busy
machine), the time from the first REGISTER to the 200 (p50/p99), sipp's
retransmissions, RSS before and right after the load (its transactions still alive),
and the load average.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    RTT_ARGS, SCENARIOS, Kamailio, Minisip, cpu_seconds, load, minisip_users, percentile,
    response_times, start_profiler, stop_profiler, summarize_profile, verdict,
)

__all__ = ["cpu_seconds", "start_profiler", "stop_profiler", "summarize_profile"]  # (other benches)
from tests.helpers import run_sipp  # noqa: E402


def user_rows(n: int) -> list[tuple[str, str]]:
    return [(str(10000 + i), f"pw{10000 + i}x") for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--count", type=int, default=40000)
    ap.add_argument("--rate", type=int, default=8000, help="registrations/s sipp offers")
    ap.add_argument("--transport", default="u1")
    ap.add_argument("--target", choices=("minisip", "kamailio"), default="minisip")
    ap.add_argument("--profile", action="store_true", help="py-spy the server (needs py-spy)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-"))
    try:
        rows = user_rows(args.users)
        srv = Kamailio(tmp, rows) if args.target == "kamailio" else Minisip(
            tmp, minisip_users(rows))
        spy = start_profiler(srv.pid, tmp / "profile.txt") if args.profile else None
        before = load()
        rss0 = srv.rss_kb()
        cpu0 = srv.cpu()
        t0 = time.monotonic()
        r = run_sipp(str(SCENARIOS / "register.xml"), srv.port, users=rows, calls=args.count,
                     rate=args.rate, transport=args.transport, timeout=120, workdir=tmp,
                     extra=("-l", str(max(args.rate, 1000)), *RTT_ARGS))
        elapsed = time.monotonic() - t0
        cpu = srv.cpu() - cpu0
        rss1 = srv.rss_kb()  # every registration's server transaction is still alive (Timer J)
        stop_profiler(spy)
        st = srv.status()
        srv.stop()
        rtt = response_times(tmp)
        ok = r.failed == 0 and r.successful == args.count
        print(f"{srv.name}: users={args.users} registrations={r.successful} failed={r.failed} "
              f"retransmissions={r.retransmissions} offered_rate={args.rate}/s")
        if st:
            print("server counters: " + ", ".join(f"{k} {v}" for k, v in st["counters"].items()))
            loop = st.get("loop", {})
            print(f"loop: worst iteration {loop.get('worst_ms')} ms, stalls {loop.get('stalls')}, "
                  f"gc worst {loop.get('gc_worst_ms')} ms; recent stalls "
                  f"{loop.get('recent_stalls', [])[-3:]}")
        print(f"registrations/s: {r.successful / elapsed:,.0f} "
              f"(wall {elapsed:.2f} s including sipp start-up)")
        print(f"server CPU: {cpu:.2f} s = {1e6 * cpu / max(r.successful, 1):.0f} us per "
              f"registration (two REGISTERs, a 401 and a 200), "
              f"{100 * cpu / elapsed:.0f} % of one core")
        print(f"REGISTER to 200: p50 {percentile(rtt, 50):.1f} ms, p99 {percentile(rtt, 99):.1f} "
              f"ms, max {max(rtt, default=0):.0f} ms ({len(rtt)} samples)")
        print(f"RSS: {rss0 // 1024} MB before, {rss1 // 1024} MB after the last registration "
              f"(its transactions wait out Timer J, 32 s: "
              f"{1024 * (rss1 - rss0) / max(r.successful, 1):,.0f} bytes per registration)")
        print(f"{before} (before), {load()} (after)")
        if spy is not None:
            summarize_profile(tmp / "profile.txt")
        return verdict(ok, r.output, why="failed registrations")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
