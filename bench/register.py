"""Authenticated REGISTER throughput: sipp against a real minisip process.

Each sipp "call" is one registration: REGISTER, 401, REGISTER with digest
credentials, 200. Distinct users (N in users.yaml) are used in turn. Zero
failures are allowed: a run with any failed registration prints FAIL.

    .venv/bin/python bench/register.py [--users 500] [--count 40000] [--rate 8000]
    .venv/bin/python bench/register.py --profile   # py-spy summary of the server

Prints registrations per second (successful registrations / sipp's elapsed
time) and the server's CPU time per registration.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import ServerProcess, free_port, run_sipp  # noqa: E402


def write_users(config_dir: Path, n: int) -> list[tuple[str, str]]:
    users = [(str(10000 + i), f"pw{10000 + i}x") for i in range(n)]
    lines = ["users:"] + [f'  "{u}":\n    password: "{p}"' for u, p in users]
    (config_dir / "users.yaml").write_text("\n".join(lines) + "\n")
    return users


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--count", type=int, default=40000)
    ap.add_argument("--rate", type=int, default=8000, help="registrations/s sipp offers")
    ap.add_argument("--transport", default="u1")
    ap.add_argument("--profile", action="store_true", help="py-spy the server (needs py-spy)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-"))
    try:
        config_dir = tmp / "configs"
        shutil.copytree(REPO / "configs", config_dir)
        users = write_users(config_dir, args.users)
        data_dir = tmp / "data"
        data_dir.mkdir()
        srv = ServerProcess(config_dir, data_dir, free_port(), 0)
        srv.start()
        assert srv.proc is not None
        spy = start_profiler(srv.proc.pid, tmp / "profile.txt") if args.profile else None
        cpu0 = cpu_seconds(srv.proc.pid)
        t0 = time.monotonic()
        r = run_sipp("register.xml", srv.port, users=users, calls=args.count, rate=args.rate,
                     transport=args.transport, timeout=120, workdir=tmp,
                     extra=("-l", str(max(args.rate, 1000))))
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(srv.proc.pid) - cpu0
        stop_profiler(spy)
        st = srv.cli("status", "--json")
        counters = json.loads(st.stdout)["counters"] if st.returncode == 0 else {}
        srv.stop()
        ok = r.failed == 0 and r.successful == args.count
        print(f"users={args.users} registrations={r.successful} failed={r.failed} "
              f"retransmissions={r.retransmissions} offered_rate={args.rate}/s")
        print("server counters: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
        print(f"registrations/s: {r.successful / elapsed:,.0f} "
              f"(wall {elapsed:.2f} s including sipp start-up)")
        print(f"server CPU: {cpu:.2f} s = {1e6 * cpu / max(r.successful, 1):.0f} us per "
              f"registration (two REGISTERs, a 401 and a 200)")
        if spy is not None:
            summarize_profile(tmp / "profile.txt")
        if not ok:
            print("FAIL: failed registrations\n" + r.output[-3000:])
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server at 200 Hz (needs py-spy on PATH)."""
    spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-f", "raw", "-o", str(out),
                            "-r", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return spy


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(10)


def summarize_profile(path: Path, top: int = 18) -> None:
    """Self and inclusive time per function from py-spy's raw (collapsed) output.

    Only the trio thread counts: the config watcher's worker thread waits in
    blocking calls that py-spy would otherwise report as busy.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "_thread_cache" in stack or "anyio" in stack:
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            if "minisip/" in f:
                inclusive[f] = inclusive.get(f, 0) + n
    print(f"profile: {total} samples of the server's trio thread")
    print("  top self time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("  top inclusive time in minisip:")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    raise SystemExit(main())
