"""Reloads under call load: a reload must never stall the server.

10,000 users in users.yaml; sipp calls through the B2BUA (407 auth, INVITE,
180, 200, ACK, BYE on both legs) at ``--rate`` calls/s for ``--seconds``;
every ``--every`` seconds the configuration is reloaded, SIGHUP and a CLI
edit (``minisip user set <user> display_name=...``) in turn. Prints the calls
that failed (sipp's failed calls on either side, and the server's 503s for
overload) and the call setup time (first INVITE to its 200, sipp's response
time) median, p99 and max. Zero failed calls and a p99 under 100 ms pass.

    .venv/bin/python bench/reload_under_load.py [--rate 200] [--seconds 30] [--every 2]
    .venv/bin/python bench/reload_under_load.py --every 0     # the same load, no reloads

Built on bench/calls.py's machinery (the same users, scenarios and sipp runs).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.calls import CALLEE, UNLIMITED  # noqa: E402
from bench.common import minisip_users  # noqa: E402
from bench.config_load import users_yaml  # noqa: E402
from tests.helpers import SCENARIOS, ServerProcess, free_port, run_sipp, start_sipp  # noqa: E402

SETUP_LIMIT_MS = 100.0


def write_config(config_dir: Path, users: int, callers: int) -> list[tuple[str, str, str]]:
    """``callers`` sipp callers, the callee, and filler users up to ``users`` in all."""
    rows = [(str(1000 + i), f"pw{1000 + i}", CALLEE) for i in range(callers)]
    path = config_dir / "users.yaml"
    path.write_text(minisip_users([(u, p) for u, p, _ in rows] + [(CALLEE, f"pw{CALLEE}")],
                                  UNLIMITED))
    filler = users_yaml(max(0, users - callers - 1)).split("\nusers:\n", 1)[1]
    path.write_text(path.read_text().rstrip("\n") + "\n" + filler)
    return rows


def timed_scenario(workdir: Path) -> str:
    """uac_call.xml with sipp's response-time measure from the first INVITE to the 200."""
    text = (SCENARIOS / "uac_call.xml").read_text()
    text = text.replace('<send retrans="500">', '<send retrans="500" start_rtd="setup">', 1)
    text = text.replace('<recv response="200" rrs="true"/>',
                        '<recv response="200" rrs="true" rtd="setup"/>', 1)
    path = workdir / "uac_call_timed.xml"
    path.write_text(text)
    return str(path)


def setup_times_ms(workdir: Path) -> list[tuple[float, float]]:
    """(ms since sipp started when the 200 came, setup time in ms) of every call."""
    out: list[tuple[float, float]] = []
    for f in workdir.glob("*_rtt.csv"):
        for line in f.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    out.append((float(parts[0]), float(parts[1])))
                except ValueError:
                    pass
    return out


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=200, help="calls per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between reloads (0: none)")
    ap.add_argument("--callers", type=int, default=100)
    args = ap.parse_args()
    count = int(args.rate * args.seconds)

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-reload-"))
    try:
        config_dir = tmp / "configs"
        shutil.copytree(REPO / "configs", config_dir)
        users = write_config(config_dir, args.users, args.callers)
        (tmp / "data").mkdir()
        srv = ServerProcess(config_dir, tmp / "data", free_port(), 0)
        srv.start(timeout=60)
        assert srv.proc is not None
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp("uas_answer.xml", port=uas_port, calls=count, timeout=args.seconds + 120,
                         workdir=tmp, extra=("-d", "0"))
        reg = run_sipp("register_contact.xml", srv.port, users=[(CALLEE, f"pw{CALLEE}")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
        assert reg.ok, reg.output
        time.sleep(3)  # the server's reload worker is up and has its baseline
        generation0 = json.loads(srv.cli("status", "--json").stdout)["config"]["generation"]
        uac = start_sipp(timed_scenario(tmp), remote=f"127.0.0.1:{srv.port}", users=users,
                         calls=count, rate=args.rate, timeout=args.seconds + 120, workdir=tmp,
                         extra=("-d", "0", "-l", "100000", "-trace_rtt", "-rtt_freq", "1"))
        reloads = {"SIGHUP": 0, "CLI edit": 0}
        reload_at: list[float] = []  #: ms since sipp started, as its rtt file counts
        t0 = time.monotonic()
        n = 0
        while uac.proc.poll() is None:
            due = t0 + (n + 1) * args.every
            if args.every <= 0 or due - t0 > args.seconds:
                time.sleep(0.2)
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            if uac.proc.poll() is not None:
                break
            reload_at.append((time.monotonic() - t0) * 1000)
            if n % 2 == 0:
                os.kill(srv.proc.pid, signal.SIGHUP)
                reloads["SIGHUP"] += 1
            else:
                user = str(10000 + n % 5000)
                out = srv.cli("user", "set", user, f"display_name=Reload {n}")
                assert out.returncode == 0, out.stderr
                reloads["CLI edit"] += 1
            n += 1
        r = uac.wait()
        u = uas.wait()
        status = json.loads(srv.cli("status", "--json").stdout)
        srv.stop()
        log = srv.log()
        stamped = setup_times_ms(tmp)
        times = sorted(ms for _, ms in stamped)
        failed = r.failed + u.failed + (count - r.successful - r.failed)
        print(f"users={args.users} calls offered={count} at {args.rate}/s over "
              f"{args.seconds:g} s; reloads: {reloads['SIGHUP']} SIGHUP + "
              f"{reloads['CLI edit']} CLI edits (generation {generation0} -> "
              f"{status['config']['generation']})")
        print(f"server event loop: worst iteration {status['loop']['worst_ms']} ms, "
              f"stalls over 50 ms: {status['loop']['stalls']}")
        print(f"failed calls: {failed} (caller {r.failed}, callee {u.failed}, "
              f"unfinished {count - r.successful - r.failed}); server 503 Overloaded: "
              f"{status['counters']['shed_overload']}; retransmissions {r.retransmissions}")
        worst = p99(times) if times else float("inf")
        if times:
            print(f"setup time: median {statistics.median(times):.1f} ms, p99 {worst:.1f} ms, "
                  f"max {times[-1]:.1f} ms ({len(times)} calls)")
            if reload_at:  # do reloads make the slow ones? (a setup began within 1 s of one)
                near = [ms for end, ms in stamped
                        if any(0 <= end - ms - r <= 1000 for r in reload_at)]
                far = [ms for end, ms in stamped
                       if not any(0 <= end - ms - r <= 1000 for r in reload_at)]
                print(f"  begun within 1 s after a reload: p99 {p99(near):.1f} ms "
                      f"({len(near)} calls); the others: p99 {p99(far):.1f} ms")
        else:
            print("setup time: no measurements (sipp wrote no rtt file)")
        if "Traceback" in log:
            print("server log has a traceback:\n" + log[-3000:])
        ok = failed == 0 and worst < SETUP_LIMIT_MS and "Traceback" not in log
        print("PASS" if ok else "FAIL")
        if not ok and r.failed:
            print(re.sub(r"\n{3,}", "\n\n", r.output[-1500:]))
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
