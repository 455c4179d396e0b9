"""The soak: calls at a steady rate for minutes, with live config reloads meanwhile.

sipp places calls (407 auth, ``--hold-ms`` of talk, BYE) at ``--rate`` for
``--minutes``; every ``--reload-every`` seconds the configuration changes under
the running server, in turn: ``minisip user set`` (the CLI's round-trip edit,
seen by the watcher), a hand edit of users.yaml adding a user, and SIGHUP. Zero
failed calls are allowed; the report has the setup time (first INVITE to 200:
p50/p99/max), retransmissions, 503s, the loop's stalls, the reloads the server
applied, CPU per call, and RSS over time: after ``--warmup`` seconds it must
stay flat (``--rss-slack`` MB).

    .venv/bin/python bench/soak.py --rate 400 [--minutes 10] [--hold-ms 1000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.calls import CALLEE, UNLIMITED, user_rows  # noqa: E402
from bench.common import (  # noqa: E402
    RTT_ARGS, SCENARIOS, Minisip, load, minisip_users, percentile, response_times, verdict,
)
from tests.helpers import free_port, run_sipp, start_sipp  # noqa: E402


def reload_once(srv: Minisip, n: int) -> str:
    """The n-th change under the running server (three kinds in turn)."""
    kind = n % 3
    if kind == 0:
        r = srv.srv.cli("user", "set", "10001", f"display_name=Soak {n}")
        assert r.returncode == 0, r.stderr
        return "minisip user set"
    if kind == 1:
        users = srv.config_dir / "users.yaml"
        users.write_text(users.read_text() + f'  "9{n:04d}":\n    password: "pw9{n:04d}x"\n')
        return "users.yaml edited"
    assert srv.srv.proc is not None
    srv.srv.proc.send_signal(signal.SIGHUP)
    return "SIGHUP"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, required=True, help="calls/s (80 %% of the maximum)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--callers", type=int, default=100)
    ap.add_argument("--reload-every", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS is flat")
    ap.add_argument("--rss-slack", type=float, default=10.0, help="MB RSS may move after it")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="minisip-soak-"))
    try:
        rows = user_rows(max(args.users, args.callers + 1))
        srv = Minisip(tmp, minisip_users(rows, UNLIMITED))
        count = int(args.rate * args.minutes * 60)
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp(str(SCENARIOS / "uas.xml"), port=uas_port, calls=count,
                         timeout=int(args.minutes * 60 + 600), workdir=tmp, extra=("-d", "0"))
        reg = run_sipp("register_contact.xml", srv.port, users=[(CALLEE, f"pw{CALLEE}")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
        assert reg.ok, reg.output
        before = load()
        rss0, cpu0, t0 = srv.rss_kb(), srv.cpu(), time.monotonic()
        uac = start_sipp(str(SCENARIOS / "call.xml"), remote=f"127.0.0.1:{srv.port}",
                         users=[(u, p, CALLEE) for u, p in rows[:args.callers]], calls=count,
                         rate=args.rate, timeout=int(args.minutes * 60 + 600), workdir=tmp,
                         extra=("-d", str(args.hold_ms), "-l", "100000", *RTT_ARGS))
        samples: list[tuple[float, int]] = []
        reloads: list[str] = []
        next_reload = args.reload_every
        while uac.proc.poll() is None:
            time.sleep(1.0)
            now = time.monotonic() - t0
            samples.append((now, srv.rss_kb()))
            if now >= next_reload and now < args.minutes * 60:
                reloads.append(reload_once(srv, len(reloads)))
                next_reload += args.reload_every
        r = uac.wait()
        elapsed = time.monotonic() - t0
        cpu = srv.cpu() - cpu0
        u = uas.wait()
        st = srv.status()
        srv.stop()
        rtt = response_times(tmp)
        warm = [kb for t, kb in samples if t >= args.warmup]
        flat = (max(warm) - min(warm)) / 1024 if warm else 0.0
        print(f"soak: {args.minutes:g} min at {args.rate} calls/s, hold {args.hold_ms} ms: "
              f"calls={r.successful} failed={r.failed} callee_failed={u.failed}")
        print(f"server CPU: {1e6 * cpu / max(r.successful, 1):.0f} us per call, "
              f"{100 * cpu / elapsed:.0f} % of one core")
        print(f"setup (first INVITE to 200): p50 {percentile(rtt, 50):.1f} ms, "
              f"p99 {percentile(rtt, 99):.1f} ms, max {max(rtt, default=0):.0f} ms")
        print(f"retransmissions: caller {r.retransmissions}, callee {u.retransmissions}")
        if st:
            loop = st["loop"]
            print(f"503s sent: {st['counters']['shed_overload']}; loop: worst "
                  f"{loop['worst_ms']} ms, stalls over {loop['stall_threshold_ms']:.0f} ms: "
                  f"{loop['stalls']}; config generation {st['config']['generation']} after "
                  f"{len(reloads)} changes ({', '.join(sorted(set(reloads)))}); last error "
                  f"{st['config']['error']}")
            print("recent stalls: " + json.dumps(loop["recent_stalls"][-3:]))
        print(f"RSS: {rss0 // 1024} MB at start, {warm[0] // 1024 if warm else 0} MB after "
              f"{args.warmup:.0f} s, {samples[-1][1] // 1024} MB at the end; after warm-up "
              f"it moved {flat:.1f} MB")
        print("RSS every minute (MB): " + " ".join(
            str(kb // 1024) for t, kb in samples if int(t) % 60 == 0))
        print(f"{before} (before), {load()} (after)")
        ok = (r.failed == 0 and u.failed == 0 and r.successful == count
              and percentile(rtt, 99) < 50 and flat <= args.rss_slack
              and (not st or st["counters"]["shed_overload"] == 0))
        return verdict(ok, r.output if r.failed else "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
