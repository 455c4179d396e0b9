"""Presence and busy lamps under load: watchers of users who are called all the time.

200 users register one device each (a sipp UAS that rings --ring-ms, then
answers); 2,000 subscriptions watch them, 10 per user (half dialog, half
presence; each watcher is another of the 200 users, a sipp UAC answering every
NOTIFY); sipp calls between the users at --rate calls/s, each call lasting
--talk-ms after the answer. Two phases of --seconds each: the calls alone,
then the calls with the watchers, so the watchers' cost is the difference.

    .venv/bin/python bench/presence.py [--rate 100] [--seconds 20] [--watchers 10]
    .venv/bin/python bench/presence.py --profile     # py-spy summary of the second phase

Prints NOTIFYs sent per second, server CPU per NOTIFY (the second phase's CPU
less what the same calls cost in the first), and the delay from a state change
to its NOTIFY (median, p99, max). The delay is measured by the server: from the
arrival of the datagram that changed the state (its wait in the socket's queue
included) to the NOTIFY handed to the socket; pacing (one NOTIFY in flight per
subscription, notify_rate) is part of it. Any failed call, failed NOTIFY or
lost subscription prints FAIL.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.register import cpu_seconds, start_profiler, stop_profiler, summarize_profile  # noqa: E402
from tests.helpers import ServerProcess, Sipp, free_port, run_sipp, start_sipp  # noqa: E402

PACKAGES = [("dialog", "application/dialog-info+xml"), ("presence", "application/pidf+xml")]


def write_users(config_dir: Path, n: int) -> list[str]:
    users = [str(3000 + i) for i in range(n)]
    big = "    max_concurrent_calls: 1000\n    max_concurrent_outgoing_calls: 1000\n"
    (config_dir / "users.yaml").write_text("users:\n" + "".join(
        f'  "{u}":\n    password: "pw{u}"\n{big}' for u in users))
    return users


def presence(srv: ServerProcess) -> dict[str, Any]:
    """The events service's counters (``minisip status``)."""
    out = srv.cli("status", "--json")
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    result: dict[str, Any] = json.loads(out.stdout)["events"]
    return result


def run_calls(srv: ServerProcess, users: list[str], rate: int, seconds: float, talk_ms: int,
              tmp: Path) -> tuple[Sipp, float, float]:
    """Calls between the users for ``seconds``: (the sipp run, CPU used, wall time)."""
    n = len(users)
    rows = [(u, f"pw{u}", users[(i * 7 + 13) % n if (i * 7 + 13) % n != i else (i + 1) % n])
            for i, u in enumerate(users)]
    count = int(rate * seconds)
    assert srv.proc is not None
    cpu0, t0 = cpu_seconds(srv.proc.pid), time.monotonic()
    uac = start_sipp("uac_call.xml", remote=f"127.0.0.1:{srv.port}", users=rows, calls=count,
                     rate=rate, timeout=seconds + 60, workdir=tmp,
                     extra=("-d", str(talk_ms), "-l", "100000", "-trace_err"))
    uac.proc.wait(seconds + 90)
    return uac, cpu_seconds(srv.proc.pid) - cpu0, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--watchers", type=int, default=10, help="subscriptions per user")
    ap.add_argument("--rate", type=int, default=100, help="calls per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--ring-ms", type=int, default=300)
    ap.add_argument("--talk-ms", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-presence-"))
    sipps: list[Sipp] = []
    try:
        config_dir = tmp / "configs"
        shutil.copytree(REPO / "configs", config_dir)
        users = write_users(config_dir, args.users)
        (tmp / "data").mkdir()
        srv = ServerProcess(config_dir, tmp / "data", free_port(), 0)
        srv.start()
        assert srv.proc is not None
        calls_total = int(args.rate * args.seconds) * 2
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp("uas_answer.xml", port=uas_port, calls=calls_total, timeout=600,
                         workdir=tmp, extra=("-d", str(args.ring_ms)))
        sipps.append(uas)
        reg = run_sipp("register_contact.xml", srv.port, users=[(u, f"pw{u}") for u in users],
                       calls=len(users), rate=500, workdir=tmp,
                       extra=("-key", "contact_port", str(uas_port)))
        if not reg.ok:
            print("FAIL: registrations\n" + reg.output[-2000:])
            return 1

        alone, cpu_alone, wall_alone = run_calls(srv, users, args.rate, args.seconds,
                                                 args.talk_ms, tmp)
        r_alone = alone.wait()
        per_call = cpu_alone / max(r_alone.successful, 1)

        n = len(users)
        rows = [(users[(i + k) % n], f"pw{users[(i + k) % n]}", u, *PACKAGES[k % 2])
                for i, u in enumerate(users) for k in range(1, args.watchers + 1)]
        watchers = start_sipp("watch_forever.xml", remote=f"127.0.0.1:{srv.port}", users=rows,
                              calls=len(rows), rate=500, timeout=3600, workdir=tmp,
                              extra=("-l", "100000"))
        sipps.append(watchers)
        deadline = time.monotonic() + 60
        while presence(srv)["subscriptions"] < len(rows):
            if time.monotonic() > deadline:
                print(f"FAIL: {presence(srv)['subscriptions']} of {len(rows)} subscribed")
                return 1
            time.sleep(0.5)
        time.sleep(2)  # the first NOTIFYs answered
        before = presence(srv)
        spy = start_profiler(srv.proc.pid, tmp / "profile.txt") if args.profile else None
        loaded, cpu_loaded, wall = run_calls(srv, users, args.rate, args.seconds,
                                             args.talk_ms, tmp)
        stop_profiler(spy)
        r_loaded = loaded.wait()
        after = presence(srv)
        notifies = after["notifies_sent"] - before["notifies_sent"]
        failed = after["notifies_failed"]
        cpu_notifies = cpu_loaded - per_call * r_loaded.successful
        print(f"users={n} subscriptions={len(rows)} ({args.watchers} per user, dialog and "
              f"presence) calls/s={args.rate} ring={args.ring_ms} ms talk={args.talk_ms} ms")
        print(f"calls alone:  {r_alone.successful} calls, {r_alone.failed} failed, "
              f"{1e6 * per_call:.0f} us CPU per call, {r_alone.successful / wall_alone:.0f}/s")
        print(f"with watchers: {r_loaded.successful} calls, {r_loaded.failed} failed, "
              f"server CPU {100 * cpu_loaded / wall:.0f} % of a core")
        print(f"NOTIFYs/s: {notifies / wall:,.0f} ({notifies} in {wall:.1f} s, "
              f"{failed} failed)")
        print(f"CPU per NOTIFY: {1e6 * cpu_notifies / max(notifies, 1):.0f} us "
              f"(CPU beyond the calls' own {1e6 * per_call:.0f} us each)")
        print(f"change-to-NOTIFY delay: median {after['delay_p50_ms']} ms, "
              f"p99 {after['delay_p99_ms']} ms, max {after['delay_max_ms']} ms "
              f"({after['delays_measured']} measured)")
        if spy is not None:
            summarize_profile(tmp / "profile.txt")
        if (r_alone.failed or r_loaded.failed or failed
                or after["subscriptions"] != len(rows) or not notifies):
            errors = "\n".join(line[:300] for p in tmp.glob("uac_call_*_errors.log")
                               for line in p.read_text(errors="replace").splitlines()
                               if "borted" in line or "imeout" in line or "nexpected" in line
                               )[-3000:]
            print("FAIL\n" + r_loaded.output[-1500:] + "\nsipp's reasons:\n" + errors)
            return 1
        return 0
    finally:
        for s in sipps:
            s.proc.kill()
            s.proc.wait()
        try:
            srv.stop()
        except NameError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
