"""CPU per unit from light to heavy load: bench/register.py or bench/calls.py at
10 %, 30 %, 50 %, 70 % and 90 % of a maximum rate, on minisip or Kamailio.

    .venv/bin/python bench/sweep.py calls --max 700 [--target kamailio] [--seconds 20]
    .venv/bin/python bench/sweep.py register --max 9000

Each level runs ``--seconds`` of load (at least 2,000 units) and prints one row:
offered rate, achieved rate, the server's share of one core, CPU per unit, p99
latency (REGISTER to 200, or call setup), retransmissions and failures. A
Python server does less work per unit under load: several datagrams arrive per
wake-up and the caches stay warm (Kamailio too, less so).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_FIELDS = {
    "rate": r"(?:registrations|calls)/s: ([\d,]+)",
    "cpu_share": r"(\d+) % of one core",
    "us": r"= (\d+) us per (?:registration|call)",
    "p99": r"p99 ([\d.]+) ms",
    "failed": r"failed=(\d+)",
    "retrans": r"retransmissions[=:] ?(?:caller )?(\d+)",
    "load": r"load average ([\d.]+)",
}


def run(kind: str, target: str, rate: int, seconds: float, extra: list[str]) -> dict[str, str]:
    count = max(2000, int(rate * seconds))
    cmd = [sys.executable, str(REPO / "bench" / f"{kind}.py"), "--target", target,
           "--rate", str(rate), "--count", str(count), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout
    row = {}
    for key, pattern in _FIELDS.items():
        m = re.search(pattern, out)
        row[key] = m.group(1).replace(",", "") if m else "?"
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("register", "calls"))
    ap.add_argument("--max", type=int, required=True, help="the maximum rate (100 %%)")
    ap.add_argument("--target", choices=("minisip", "kamailio"), default="minisip")
    ap.add_argument("--levels", default="10,30,50,70,90", help="percent of --max")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--hold-ms", type=int, default=1000, help="calls: talk time")
    args = ap.parse_args()
    extra = ["--hold-ms", str(args.hold_ms)] if args.kind == "calls" else []
    unit = "registration" if args.kind == "register" else "call"
    print(f"{args.target} {args.kind}, maximum {args.max}/s"
          + (f", hold {args.hold_ms} ms" if args.kind == "calls" else ""))
    print(f"| load | offered/s | achieved/s | CPU (one core) | us per {unit} | p99 ms "
          f"| retransmissions | failed | load average |")
    print("|---|---|---|---|---|---|---|---|---|")
    for level in (int(x) for x in args.levels.split(",")):
        rate = max(1, args.max * level // 100)
        r = run(args.kind, args.target, rate, args.seconds, extra)
        print(f"| {level} % | {rate} | {r['rate']} | {r['cpu_share']} % | {r['us']} | "
              f"{r['p99']} | {r['retrans']} | {r['failed']} | {r['load']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
