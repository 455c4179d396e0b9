"""Call throughput through the B2BUA: sipp caller and sipp callee, 407 auth on.

Every call: INVITE, 407, ACK, INVITE with credentials, 100, 180, 200, ACK,
BYE, 200 on the A-leg, and INVITE/180/200/ACK/BYE/200 on the B-leg. Zero
failed calls are allowed (a failure, a 503 included, prints FAIL and exits 1).

    .venv/bin/python bench/calls.py [--count 20000] [--rate 1000] [--hold-ms 0]
    .venv/bin/python bench/calls.py --target kamailio   # the same load through Kamailio
    .venv/bin/python bench/calls.py --concurrent 2000   # memory per established call
    .venv/bin/python bench/calls.py --profile           # py-spy summary of the server

Prints calls per second (completed calls / sipp's wall time), server CPU per
call (from /proc: it holds on a busy machine) and its share of one core, call
setup time (first INVITE to 200, p50/p99/max), retransmissions both sides
sent, the loop's worst stall, RSS before and after, and the load average.
``--concurrent N`` holds N calls up once they are all set up and their setup
transactions have ended (Timer L/M, 32 s), and reports the RSS they take.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    RTT_ARGS, SCENARIOS, Kamailio, Minisip, cpu_split, load, minisip_users, percentile,
    response_times, start_profiler, stop_profiler, summarize_profile, verdict,
)
from tests.helpers import free_port, run_sipp, start_sipp  # noqa: E402

CALLEE = "2000"
#: every user's limits out of the way; call_waiting: the callee takes every call while it
#: talks (else it is busy)
UNLIMITED = ("    max_concurrent_calls: 1000000\n    max_concurrent_outgoing_calls: 1000000\n"
             "    call_waiting: true\n")
#: the steady state of an established call: its setup transactions are gone (Timer L, M)
SETTLED = 34.0


def user_rows(users: int) -> list[tuple[str, str]]:
    """``users`` accounts (2,000 by default, as the Kamailio comparison has): the callee
    2000 and callers from 10000 up."""
    rows = [(str(10000 + i), f"pw{10000 + i}") for i in range(users - 1)]
    return rows + [(CALLEE, f"pw{CALLEE}")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--hold-ms", type=int, default=0)
    ap.add_argument("--callers", type=int, default=100, help="users placing the calls")
    ap.add_argument("--users", type=int, default=2000, help="users configured")
    ap.add_argument("--target", choices=("minisip", "kamailio"), default="minisip")
    ap.add_argument("--concurrent", type=int, default=0,
                    help="instead: hold this many calls up and report memory per call")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="after the load, wait this long and report RSS again")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    if args.concurrent:
        args.count = args.concurrent
        args.rate = min(args.rate, 500)
        args.hold_ms = int(1000 * (args.concurrent / args.rate + SETTLED + 10))

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-calls-"))
    try:
        rows = user_rows(max(args.users, args.callers + 1))
        srv = Kamailio(tmp, rows) if args.target == "kamailio" else Minisip(
            tmp, minisip_users(rows, UNLIMITED))
        callers = [(u, p, CALLEE) for u, p in rows[:args.callers]]
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp(str(SCENARIOS / "uas.xml"), port=uas_port, calls=args.count, timeout=900,
                         workdir=tmp, extra=("-d", "0"))
        reg = run_sipp("register_contact.xml", srv.port, users=[(CALLEE, f"pw{CALLEE}")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
        assert reg.ok, reg.output
        spy = start_profiler(srv.pid, tmp / "profile.txt") if args.profile else None
        before = load()
        rss0 = srv.rss_kb()
        cpu0 = srv.cpu()
        sys0 = cpu_split(srv.pid)[1] if args.target == "minisip" else 0.0
        t0 = time.monotonic()
        uac = start_sipp(str(SCENARIOS / "call.xml"), remote=f"127.0.0.1:{srv.port}",
                         users=callers, calls=args.count, rate=args.rate, timeout=900,
                         workdir=tmp, extra=("-d", str(args.hold_ms), "-l", "100000",
                                             *RTT_ARGS))
        peak_rss = rss0
        held_rss = 0
        all_up = t0 + args.count / args.rate
        while uac.proc.poll() is None:
            time.sleep(0.5)
            peak_rss = max(peak_rss, srv.rss_kb())
            if args.concurrent and not held_rss and time.monotonic() > all_up + SETTLED:
                held_rss = srv.rss_kb()
        r = uac.wait()
        elapsed = time.monotonic() - t0
        cpu = srv.cpu() - cpu0
        kernel = cpu_split(srv.pid)[1] - sys0 if args.target == "minisip" else 0.0
        u = uas.wait()
        stop_profiler(spy)
        rss1 = srv.rss_kb()
        st = srv.status()
        if args.settle:
            time.sleep(args.settle)
        rss2 = srv.rss_kb()
        srv.stop()
        rtt = response_times(tmp)
        print(f"{srv.name}: calls={r.successful} failed={r.failed} callee_failed={u.failed} "
              f"offered_rate={args.rate}/s hold={args.hold_ms} ms")
        if not args.concurrent:
            print(f"calls/s: {r.successful / elapsed:,.0f} (wall {elapsed:.1f} s)")
            print(f"server CPU: {cpu:.2f} s = {1e6 * cpu / max(r.successful, 1):.0f} us per "
                  f"call (= {r.successful / max(cpu, 1e-9):,.0f} calls per CPU second), "
                  f"{100 * cpu / elapsed:.0f} % of one core"
                  + (f"; in the kernel (socket calls) {1e6 * kernel / max(r.successful, 1):.0f}"
                     " us per call" if kernel else ""))
        print(f"setup (first INVITE to 200): p50 {percentile(rtt, 50):.1f} ms, "
              f"p99 {percentile(rtt, 99):.1f} ms, max {max(rtt, default=0):.0f} ms "
              f"({len(rtt)} samples)")
        print(f"retransmissions: caller {r.retransmissions}, callee {u.retransmissions}")
        if st:
            loop = st.get("loop", {})
            print(f"loop: {loop.get('iterations')} iterations, worst {loop.get('worst_ms')} "
                  f"ms, stalls {loop.get('stalls')}, gc worst {loop.get('gc_worst_ms')} ms; shed "
                  f"{st['counters'].get('shed_overload')}; recent stalls "
                  f"{loop.get('recent_stalls', [])[-3:]}")
        print(f"RSS: {rss0 // 1024} MB before, peak {peak_rss // 1024} MB, {rss1 // 1024} MB "
              f"after the last call" + (f", {rss2 // 1024} MB {args.settle:.0f} s later"
                                        if args.settle else ""))
        if args.concurrent and held_rss:
            print(f"memory per established call: {1024 * (held_rss - rss0) / args.count:,.0f} "
                  f"bytes ({args.count} calls up, setup transactions ended: RSS "
                  f"{rss0 // 1024} MB -> {held_rss // 1024} MB); with their setup "
                  f"transactions: {1024 * (peak_rss - rss0) / args.count:,.0f} bytes")
        print(f"{before} (before), {load()} (after)")
        if spy is not None:
            summarize_profile(tmp / "profile.txt")
        return verdict(not (r.failed or u.failed or r.successful != args.count),
                       r.output, u.output)
    finally:
        if args.keep:
            print(f"work directory: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
