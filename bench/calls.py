"""Call throughput through the B2BUA: sipp caller and sipp callee, 407 auth on.

Every call: INVITE, 407, ACK, INVITE with credentials, 100, 180, 200, ACK,
BYE, 200 on the A-leg, and INVITE/180/200/ACK/BYE/200 on the B-leg. Zero
failed calls are allowed (a failure prints FAIL and exits 1).

    .venv/bin/python bench/calls.py [--count 20000] [--rate 1000] [--hold-ms 0]
    .venv/bin/python bench/calls.py --concurrent 2000   # memory per established call
    .venv/bin/python bench/calls.py --profile           # py-spy summary of the server

Prints calls per second (completed calls / sipp's wall time), server CPU per
call, peak concurrent calls, and memory per established call.
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

from bench.register import cpu_seconds, start_profiler, stop_profiler, summarize_profile  # noqa: E402
from tests.helpers import ServerProcess, free_port, run_sipp, start_sipp  # noqa: E402

CALLEE = "2000"


def write_users(config_dir: Path, callers: int) -> list[tuple[str, str, str]]:
    # call_waiting: the callee takes every call while it talks (else it is busy)
    big = ("    max_concurrent_calls: 1000000\n    max_concurrent_outgoing_calls: 1000000\n"
           "    call_waiting: true\n")
    users = [(str(1000 + i), f"pw{1000 + i}", CALLEE) for i in range(callers)]
    text = ["users:"] + [f'  "{u}":\n    password: "{p}"\n{big}' for u, p, _ in users]
    text.append(f'  "{CALLEE}":\n    password: "pw{CALLEE}"\n{big}    no_answer_time: 60\n')
    (config_dir / "users.yaml").write_text("\n".join(text))
    return users


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--hold-ms", type=int, default=0)
    ap.add_argument("--callers", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=0,
                    help="instead: hold this many calls up and report memory per call")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.concurrent:
        args.count, args.hold_ms = args.concurrent, 30000
        args.rate = min(args.rate, 500)

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-calls-"))
    try:
        config_dir = tmp / "configs"
        shutil.copytree(REPO / "configs", config_dir)
        users = write_users(config_dir, args.callers)
        (tmp / "data").mkdir()
        srv = ServerProcess(config_dir, tmp / "data", free_port(), 0)
        srv.start()
        assert srv.proc is not None
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp("uas_answer.xml", port=uas_port, calls=args.count, timeout=600,
                         workdir=tmp, extra=("-d", "0"))
        reg = run_sipp("register_contact.xml", srv.port, users=[(CALLEE, f"pw{CALLEE}")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
        assert reg.ok, reg.output
        spy = start_profiler(srv.proc.pid, tmp / "profile.txt") if args.profile else None
        rss0 = rss_kb(srv.proc.pid)
        cpu0 = cpu_seconds(srv.proc.pid)
        t0 = time.monotonic()
        uac = start_sipp("uac_call.xml", remote=f"127.0.0.1:{srv.port}", users=users,
                         calls=args.count, rate=args.rate, timeout=600, workdir=tmp,
                         extra=("-d", str(args.hold_ms), "-l", "100000"))
        peak_calls, peak_rss = 0, rss0
        while uac.proc.poll() is None:
            time.sleep(0.5)
            st = srv.cli("status", "--json")
            if st.returncode == 0:
                import json
                n = json.loads(st.stdout)["calls"]
                if n > peak_calls:
                    peak_calls, peak_rss = n, rss_kb(srv.proc.pid)
        r = uac.wait()
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(srv.proc.pid) - cpu0
        u = uas.wait()
        stop_profiler(spy)
        srv.stop()
        print(f"calls={r.successful} failed={r.failed} callee_failed={u.failed} "
              f"offered_rate={args.rate}/s hold={args.hold_ms} ms")
        if not args.concurrent:
            print(f"calls/s: {r.successful / elapsed:,.0f} (wall {elapsed:.1f} s)")
        print(f"server CPU: {cpu:.2f} s = {1e6 * cpu / max(r.successful, 1):.0f} us per call "
              f"(= {r.successful / max(cpu, 1e-9):,.0f} calls per CPU second)")
        print(f"peak concurrent calls: {peak_calls}")
        if peak_calls:
            print(f"memory per established call: {1024 * (peak_rss - rss0) / peak_calls:,.0f} "
                  f"bytes (RSS {rss0 // 1024} MB -> {peak_rss // 1024} MB)")
        if spy is not None:
            summarize_profile(tmp / "profile.txt")
        if r.failed or u.failed or r.successful != args.count:
            print("FAIL\n" + r.output[-2000:] + u.output[-2000:])
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
