"""Hostile floods against a real server: its state comes back down, a phone is served.

Three floods at once, in two rounds (a warm-up, then the measured one), each
round followed by the server's own expiry:

* auth:  failed logins from ``--sources`` addresses (127.x.y.z), three user
         names each (the guard's pair, source and block tables fill up)
* calls: ``--calls`` calls through the B2BUA whose caller has ``max_duration``
         set, all ended (each left a max-duration timer behind before)
* tcp:   ``--peers`` TCP peers from distinct addresses, each dripping one byte
         a second of a message that never ends (the whole-message deadline)

Meanwhile a legitimate phone on 127.0.0.1 pings (OPTIONS over UDP and over TCP)
and registers, every 0.2 s. Prints the table sizes (``minisip status``) at each
round's peak and after it, the server's memory, and the phone's worst answer
time and misses. Passes when the flooded tables are back to where they were,
live memory after the measured round within 10 % of where it started, and the
phone never missed an answer. (Why two rounds, and which memory: see ``run``.)

    .venv/bin/python bench/floods.py [--sources 5000] [--calls 10000] [--peers 200] [--t1 0.5]

tests/interop/test_floods.py runs the same floods, smaller.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import rss_kb  # noqa: E402
from tests.helpers import (ServerProcess, free_port, make_server, options_ping, run_sipp,  # noqa: E402
                           start_sipp)
from tests.interop.pyphone import PyPhone  # noqa: E402

CALLEE = "101"
#: short windows, so a flood's traces expire within seconds of its end
SECURITY = {"auth_failures_before_block": 3, "block_seconds": 2, "failure_window": 2,
            "max_users_per_source": 3}
TABLES = ("transactions", "calls", "pbx_timers", "auth_guard", "expiry_heap", "connections")


def prepare(tmp: Path, t1: float = 0.5) -> ServerProcess:
    """A server with short security windows (and ``t1``: transactions of ended calls
    last 64*T1), whose caller 100 has max_duration set."""
    srv = make_server(tmp)
    path = srv.config_dir / "system.yaml"
    text = path.read_text().replace("  t1: 0.5", f"  t1: {t1}")
    for key, value in SECURITY.items():
        text = re.sub(rf"(?m)^  {key}: .*$", f"  {key}: {value}", text)
    path.write_text(text)
    users = srv.config_dir / "users.yaml"
    users.write_text(users.read_text().replace(
        '"100":\n', '"100":\n    max_duration: 3600\n    max_concurrent_calls: 100000\n'
                    '    max_concurrent_outgoing_calls: 100000\n').replace(
        '"101":\n', '"101":\n    max_concurrent_calls: 100000\n'
                    '    call_waiting: true\n'))  # (else busy while it talks: every call is one)
    return srv


def status(srv: ServerProcess) -> dict[str, object]:
    out = srv.cli("status", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def blocks(srv: ServerProcess) -> int:
    """Memory blocks the server's Python allocator holds for live objects."""
    return status(srv)["memory"]["allocated_blocks"]  # type: ignore[index, no-any-return]


def tables(srv: ServerProcess) -> dict[str, int]:
    t = status(srv).get("tables") or {}
    return {k: t[k] for k in TABLES}  # type: ignore[index]


@dataclass
class Phone:
    """A legitimate client: OPTIONS over UDP and TCP, and a REGISTER, every 0.2 s."""
    srv: ServerProcess
    worst: float = 0.0
    misses: list[str] = field(default_factory=list)  #: no answer, or later than 1 s
    answered: int = 0
    shed: int = 0  #: answered 503: the server refused new work while overloaded
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tcp_ping(self, sock: socket.socket) -> bool:
        b = f"z9hG4bK{random.getrandbits(40):x}"
        lp = sock.getsockname()[1]
        sock.sendall((f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{lp};"
                      f"branch={b}\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                      f"Call-ID: {b}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                      f"Content-Length: 0\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65535)
            if not chunk:
                return False
            data += chunk
        return self._status(data)

    def _status(self, answer: bytes | None) -> bool:
        if answer is not None and answer.startswith(b"SIP/2.0 503"):
            self.shed += 1
            return True
        return answer is not None and answer.startswith(b"SIP/2.0 200")

    def _timed(self, what: str, fn: object) -> None:
        t = time.monotonic()
        try:
            ok = fn()  # type: ignore[operator]
        except (OSError, TimeoutError) as exc:
            ok, what = False, f"{what}: {exc}"
        took = time.monotonic() - t
        if not ok or took > 1.0:
            self.misses.append(f"{what} ({took:.2f} s)")
        self.worst = max(self.worst, took)
        self.answered += bool(ok)

    def _run(self) -> None:
        tcp = socket.create_connection(("127.0.0.1", self.srv.port), timeout=2)
        with tcp, PyPhone(self.srv.port, "102", "102") as phone:
            n = 0
            while not self._stop.wait(0.2):
                self._timed("UDP OPTIONS",
                            lambda: self._status(options_ping(self.srv.port, timeout=1.0)))
                self._timed("TCP OPTIONS", lambda: self._tcp_ping(tcp))
                if n % 5 == 0:
                    self._timed("REGISTER", lambda: phone.register().status in (200, 503))
                n += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def source(i: int, net: int = 1) -> str:
    return f"127.{net}.{i // 250 % 250}.{i % 250 + 1}"


def flood_auth(port: int, sources: int, net: int = 1) -> int:
    """Failed logins from ``sources`` addresses, three user names each: answers seen."""
    answers = 0
    bogus = "0" * 64
    for i in range(sources):
        host = source(i, net)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.bind((host, 0))
            lp = s.getsockname()[1]
            for user in ("100", "200", "300"):
                b = f"z9hG4bK{random.getrandbits(40):x}"
                s.sendto((f"REGISTER sip:minisip SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{lp};"
                          f"branch={b}\r\nFrom: <sip:{user}@minisip>;tag=1\r\nTo: <sip:{user}"
                          f"@minisip>\r\nCall-ID: {b}\r\nCSeq: 1 REGISTER\r\nContact: <sip:"
                          f"{user}@{host}:{lp}>\r\nAuthorization: Digest username=\"{user}\", "
                          f"realm=\"minisip\", nonce=\"{bogus}\", uri=\"sip:minisip\", response="
                          f"\"{bogus[:32]}\", qop=auth, nc=00000001, cnonce=\"c\"\r\n"
                          f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                         ("127.0.0.1", port))
            for _ in range(3):
                try:
                    s.recv(65535)
                    answers += 1
                except OSError:
                    break
    return answers


def flood_calls(srv: ServerProcess, calls: int, rate: int, tmp: Path) -> tuple[int, int]:
    """``calls`` answered and ended calls from 100 (max_duration set): (ok, failed)."""
    uas_port = free_port((socket.SOCK_DGRAM,))
    uas = start_sipp("uas_answer.xml", port=uas_port, calls=calls, timeout=calls / rate + 60,
                     workdir=tmp, extra=("-d", "0"))
    reg = run_sipp("register_contact.xml", srv.port, users=[(CALLEE, CALLEE)],
                   extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
    assert reg.ok, reg.output
    r = run_sipp("uac_call.xml", srv.port, users=[("100", "100", CALLEE)], calls=calls,
                 rate=rate, timeout=calls / rate + 60, workdir=tmp,
                 extra=("-d", "0", "-l", "100000"))
    u = uas.wait()
    return r.successful, r.failed + u.failed


def flood_tcp(port: int, peers: int, seconds: float, net: int = 2) -> tuple[int, float]:
    """``peers`` TCP peers dripping a byte a second: (closed by the server, last close s)."""
    socks = []
    for i in range(peers):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source(i, net), 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    message = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKd\r\n"
    t0 = time.monotonic()
    closed: dict[int, float] = {}
    k = 0
    while len(closed) < peers and time.monotonic() - t0 < seconds:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if s.recv(1) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic() - t0
                continue
            try:
                s.send(message[k % len(message):k % len(message) + 1])
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic() - t0
        k += 1
        time.sleep(1.0)
    for s in socks:
        s.close()
    return len(closed), max(closed.values(), default=float("nan"))


def settle(srv: ServerProcess, baseline: dict[str, int], timeout: float) -> dict[str, int]:
    """Wait until the flood's state is gone: the tables a flood fills are back to
    ``baseline`` and the transactions have ended (the server's own timers)."""
    deadline = time.monotonic() + timeout
    while True:
        now = tables(srv)
        gone = all(now[k] <= baseline[k] for k in FLOODED) and now["transactions"] <= (
            baseline["transactions"] + 50)  # (the phone's own come and go)
        if gone or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


#: what the floods fill; each must come back down by the server's own expiry
FLOODED = ("calls", "pbx_timers", "auth_guard", "connections")


def flood_round(srv: ServerProcess, tmp: Path, sources: int, calls: int, rate: int,
                peers: int, net: int) -> dict[str, object]:
    """The three floods at once; their results and the tables at their peak."""
    results: dict[str, object] = {}
    peak: dict[str, int] = {}

    def watch() -> None:
        while len(results) < 3:
            for k, v in tables(srv).items():
                peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.5)

    jobs = {"auth": lambda: flood_auth(srv.port, sources, net),
            "calls": lambda: flood_calls(srv, calls, rate, tmp),
            "tcp": lambda: flood_tcp(srv.port, peers, 60, net + 100)}
    threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f()))
               for k, f in jobs.items()]
    watcher = threading.Thread(target=watch)
    for t in [*threads, watcher]:
        t.start()
    for t in [*threads, watcher]:
        t.join()
    return {"results": results, "peak": peak}


def run(tmp: Path, sources: int, calls: int, rate: int, peers: int, t1: float = 0.5,
        settle_timeout: float = 60) -> dict[str, object]:
    """A warm-up round of floods, then the measured one, against one server.

    Memory is measured as the Python allocator's live blocks (``status``): what the
    server's objects hold. RSS is printed too, but it does not come back down: Python
    keeps freed memory for reuse instead of giving it back, so RSS stays near the
    highest peak so far (a round with a higher peak of transactions raises it) even
    when no state is left. The warm-up round shows that: the measured round reuses it.
    """
    srv = prepare(tmp, t1)
    srv.start()
    assert srv.proc is not None
    pid = srv.proc.pid
    phone = Phone(srv)
    out: dict[str, object] = {}
    try:
        time.sleep(2.0)  # the phone registered, the reload worker is up
        baseline = tables(srv)
        out["baseline"] = baseline
        out["rss_first_kb"], out["blocks_first"] = rss_kb(pid), blocks(srv)
        out["warmup"] = flood_round(srv, tmp, sources, calls, rate, peers, net=1)
        out["after_warmup"] = settle(srv, baseline, settle_timeout)
        out["rss_start_kb"], out["blocks_start"] = rss_kb(pid), blocks(srv)
        out["measured"] = flood_round(srv, tmp, sources, calls, rate, peers, net=2)
        out["rss_peak_kb"], out["blocks_peak"] = rss_kb(pid), blocks(srv)
        out["after"] = settle(srv, baseline, settle_timeout)
        out["rss_after_kb"], out["blocks_after"] = rss_kb(pid), blocks(srv)
    finally:
        phone.stop()
        srv.stop()
    out["phone"] = {"answered": phone.answered, "worst_s": round(phone.worst, 3),
                    "misses": phone.misses, "shed": phone.shed}
    return out


def verdict(out: dict[str, object]) -> tuple[bool, list[str]]:
    """(passed, the lines to print)."""
    base, after = out["baseline"], out["after"]
    assert isinstance(base, dict) and isinstance(after, dict)
    back = all(after[k] <= base[k] for k in FLOODED)
    grown = out["blocks_after"] / out["blocks_start"] - 1  # type: ignore[operator]
    rss_grown = out["rss_after_kb"] / out["rss_start_kb"] - 1  # type: ignore[operator]
    phone = out["phone"]
    assert isinstance(phone, dict)
    lines = []
    for name in ("warmup", "measured"):
        r = out[name]
        assert isinstance(r, dict)
        lines.append(f"{name:8} floods: {r['results']}; tables at the peak {r['peak']}")
    lines.append(f"tables: baseline {base}, after the floods {after} "
                 f"({'back down' if back else 'NOT back down'})")
    lines.append(f"live memory (allocated blocks): {out['blocks_first']:,} at start, "
                 f"{out['blocks_start']:,} after the warm-up round, {out['blocks_peak']:,} at "
                 f"the measured round's end, {out['blocks_after']:,} after it settled "
                 f"({100 * grown:+.1f} % over the measured round)")
    lines.append(f"RSS: {out['rss_first_kb'] // 1024} MB at start, "  # type: ignore[operator]
                 f"{out['rss_start_kb'] // 1024} MB after the warm-up round, "  # type: ignore[operator]
                 f"{out['rss_peak_kb'] // 1024} MB at the measured round's end, "  # type: ignore[operator]
                 f"{out['rss_after_kb'] // 1024} MB after it settled "  # type: ignore[operator]
                 f"({100 * rss_grown:+.1f} %)")
    lines.append(f"phone: {phone['answered']} answers ({phone['shed']} of them 503 while the "
                 f"server shed load), worst {phone['worst_s']} s, misses "
                 f"{phone['misses'] or 'none'}")
    ok = back and grown <= 0.10 and not phone["misses"]
    return ok, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=5000)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--peers", type=int, default=200)
    ap.add_argument("--t1", type=float, default=0.5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-floods-"))
    try:
        out = run(tmp, args.sources, args.calls, args.rate, args.peers, args.t1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok, lines = verdict(out)
    print("\n".join(lines))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
