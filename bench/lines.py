"""Outgoing calls through an external line: two minisips, sipp at both ends.

The routing minisip has line ``prov`` (registered to the provider minisip as 2001);
sipp callers dial 9 + 2000 on it (407 auth on the A-leg), the call leaves on the
line (the provider answers with its own 407, the line's credentials answer it),
and the provider rings its user 2000, a sipp callee. Zero failed calls allowed.

    .venv/bin/python bench/lines.py [--count 4000] [--rate 200] [--hold-ms 0]

Prints calls per second and the routing minisip's CPU per call (the provider's
too, for comparison).
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import cpu_seconds, verdict  # noqa: E402
from tests.helpers import ServerProcess, free_port, run_sipp, start_sipp  # noqa: E402

CALLEE, ACCOUNT, SECRET = "2000", "2001", "pw2001"
BIG = ("    max_concurrent_calls: 1000000\n    max_concurrent_outgoing_calls: 1000000\n"
       "    call_waiting: true\n")  # callees take every call while they talk


def server(tmp: Path, name: str, users: dict[str, str], lines: str = "lines: {}\n"
           ) -> ServerProcess:
    config_dir = tmp / name / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    (config_dir / "users.yaml").write_text("users:\n" + "".join(
        f'  "{u}":\n    password: "{p}"\n{BIG}' for u, p in users.items()))
    (config_dir / "lines.yaml").write_text(lines)
    (tmp / name / "data").mkdir(parents=True)
    return ServerProcess(config_dir, tmp / name / "data", free_port(), 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--hold-ms", type=int, default=0)
    ap.add_argument("--callers", type=int, default=100)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-lines-"))
    try:
        provider = server(tmp, "provider", {CALLEE: f"pw{CALLEE}", ACCOUNT: SECRET})
        provider.start()
        callers = {str(1000 + i): f"pw{1000 + i}" for i in range(args.callers)}
        pbx = server(tmp, "pbx", callers, (
            f"lines:\n  prov:\n    account: \"{ACCOUNT}\"\n    password: \"{SECRET}\"\n"
            f"    server: 127.0.0.1\n    port: {provider.port}\n"
            f"    max_outgoing_calls: 1000000\n    max_concurrent_calls: 1000000\n"))
        pbx.start()
        assert pbx.proc is not None and provider.proc is not None
        deadline = time.monotonic() + 10
        while json.loads(pbx.cli("status", "--json").stdout)["lines"]["online"] != 1:
            if time.monotonic() > deadline:
                print("FAIL: line prov did not come online\n" + pbx.log())
                return 1
            time.sleep(0.1)
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp("uas_answer.xml", port=uas_port, calls=args.count, timeout=600,
                         workdir=tmp, extra=("-d", "0"))
        reg = run_sipp("register_contact.xml", provider.port,
                       users=[(CALLEE, f"pw{CALLEE}")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
        assert reg.ok, reg.output
        cpu0, far0 = cpu_seconds(pbx.proc.pid), cpu_seconds(provider.proc.pid)
        t0 = time.monotonic()
        uac = start_sipp("uac_call.xml", remote=f"127.0.0.1:{pbx.port}",
                         users=[(u, p, "9" + CALLEE) for u, p in callers.items()],
                         calls=args.count, rate=args.rate, timeout=600, workdir=tmp,
                         extra=("-d", str(args.hold_ms), "-l", "100000"))
        r = uac.wait()
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(pbx.proc.pid) - cpu0
        far = cpu_seconds(provider.proc.pid) - far0
        u = uas.wait()
        pbx.stop()
        provider.stop()
        print(f"calls={r.successful} failed={r.failed} callee_failed={u.failed} "
              f"offered_rate={args.rate}/s hold={args.hold_ms} ms retransmissions="
              f"{r.retransmissions}")
        print(f"calls/s: {r.successful / elapsed:,.0f} (wall {elapsed:.1f} s)")
        print(f"routing minisip CPU: {cpu:.2f} s = {1e6 * cpu / max(r.successful, 1):.0f} us "
              f"per call (= {r.successful / max(cpu, 1e-9):,.0f} calls per CPU second)")
        print(f"provider minisip CPU: {1e6 * far / max(r.successful, 1):.0f} us per call")
        return verdict(not (r.failed or u.failed or r.successful != args.count),
                       r.output, u.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
