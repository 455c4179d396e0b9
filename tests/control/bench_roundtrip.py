"""Median control round trip: a server in another process, one client connection.

Run: .venv/bin/python tests/control/bench_roundtrip.py [requests]
(Not collected by pytest: the name does not start with test_.)
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SERVER = """
import sys, trio
from pathlib import Path
from minisip.control.events import EventBus
from minisip.control.server import serve_control

async def status(args):
    return {"users": 3, "registrations": 2, "calls": 0, "uptime": 12.5}

async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, Path(sys.argv[1]), {"status": status}, EventBus())
        print("ready", flush=True)

trio.run(main)
"""


async def measure(path: Path, n: int) -> list[float]:
    from minisip.control.client import connect

    samples = []
    async with connect(path) as conn:
        for _ in range(200):  # warm up
            await conn.request("status")
        for _ in range(n):
            t0 = time.perf_counter()
            await conn.request("status")
            samples.append(time.perf_counter() - t0)
    return samples


def main() -> None:
    import trio

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory(prefix="msbench") as tmp:
        path = Path(tmp) / "ctl.sock"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(path)], stdout=subprocess.PIPE, env=env, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            samples = trio.run(measure, path, n)
            t0 = time.perf_counter()
            from minisip.control.client import call

            call(path, "status")
            fresh = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(5)
    samples.sort()
    ms = [s * 1000 for s in samples]
    print(f"control round trip over one connection, {n} requests:")
    print(f"  median {statistics.median(ms):.3f} ms  p99 {ms[int(len(ms) * 0.99)]:.3f} ms")
    print(f"  call() on a fresh connection (connect, handshake, request): {fresh * 1000:.2f} ms")


if __name__ == "__main__":
    main()
