"""Config load benchmark: 10,000 users in users.yaml.

Prints the server's load time (fast path: read + parse + validate + build), the
reload time (a full load_snapshot again, as the watcher and SIGHUP do), the time
to report an error in that file (which re-reads it with line tracking only when
needed), ruamel's safe loader on the same text for comparison, and the memory
a loaded user costs (tracemalloc).

    .venv/bin/python bench/config_load.py [--users 10000]
"""
from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from minisip.config.loader import ConfigError, load_snapshot

REPO = Path(__file__).resolve().parents[1]


def users_yaml(n: int) -> str:
    """Users as an administrator (or `minisip user add`) writes them: a few keys each."""
    out = [(REPO / "configs" / "users.yaml").read_text().split("\nusers:\n")[0], "\nusers:\n"]
    for i in range(n):
        name = str(10000 + i)
        out.append(f'  "{name}":\n    password: "pw-{i * 7919 % 100003:05d}-x"\n')
        if i % 2 == 0:
            out.append(f'    display_name: "User {name}"\n')
        if i % 5 == 0:
            out.append(f"    call_right: {i % 4}\n    voicemail: true\n"
                       f"    mail_address: u{name}@example.com\n")
        if i % 10 == 0:
            out.append(f'    forward_busy:\n      enabled: true\n      number: "{name[::-1]}"\n')
        if i % 50 == 0:
            out.append(f"    ringing_group_id: {i % 7 + 1}\n    allowed_ips: [192.0.2.{i % 250}]\n")
    return "".join(out)


def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ruamel", action=argparse.BooleanOptionalAction, default=True,
                    help="also time ruamel's safe loader on the same file (slow)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-"))
    try:
        cfg = tmp / "configs"
        shutil.copytree(REPO / "configs", cfg)
        text = users_yaml(args.users)
        (cfg / "users.yaml").write_text(text)
        lines = text.count("\n")
        print(f"users.yaml: {args.users} users, {lines} lines, {len(text) / 1e6:.2f} MB")

        t = time.perf_counter()
        snap = load_snapshot(cfg)
        first = time.perf_counter() - t
        assert len(snap.users) == args.users
        print(f"server load (first, fast path):  {first * 1000:7.1f} ms")

        runs = timed(lambda: load_snapshot(cfg), args.repeat)
        print(f"reload (full load_snapshot):     {statistics.median(runs) * 1000:7.1f} ms "
              f"median of {args.repeat} (min {min(runs) * 1000:.1f}, max {max(runs) * 1000:.1f})")

        bad = text + '  "99999":\n    password: "x"\n    max_duration: soon\n'
        (cfg / "users.yaml").write_text(bad)
        t = time.perf_counter()
        try:
            load_snapshot(cfg)
        except ConfigError as exc:
            message = str(exc)
        print(f"error report (same file + 1 bad): {(time.perf_counter() - t) * 1000:6.1f} ms"
              f"  -> {message}")
        (cfg / "users.yaml").write_text(text)

        if args.ruamel:
            from ruamel.yaml import YAML
            from ruamel.yaml.main import CParser
            t = time.perf_counter()
            YAML(typ="safe").load(text)
            kind = "C parser" if CParser is not None else "pure Python, no ruamel.yaml.clib"
            print(f"for comparison, ruamel safe load ({kind}): "
                  f"{(time.perf_counter() - t) * 1000:.0f} ms (parse only)")

        del snap
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        snap = load_snapshot(cfg)  # noqa: F841 - held while measuring
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        print(f"memory of the snapshot: {used / 1e6:.2f} MB, "
              f"{used / args.users:.0f} bytes per user")

        # The CLI as an administrator runs it (a new process each time, no server).
        for argv in (["user", "list", "--json"], ["user", "list"]):
            runs = timed(lambda argv=argv: subprocess.run(
                [sys.executable, "-m", "minisip.cli.main", *argv, "--config-dir", str(cfg),
                 "--data-dir", str(tmp / "data")], check=True, stdout=subprocess.DEVNULL,
                cwd=REPO), 3)
            print(f"minisip {' '.join(argv):20s}  {statistics.median(runs) * 1000:7.0f} ms "
                  f"median of 3 (whole process, {args.users} users)")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
