#!/usr/bin/env python3
"""minisip as a party of calls: N voicemail recordings plus N attendant calls at once.

    .venv/bin/python bench/apps.py [--calls 200] [--seconds 30] [--realtime]

minisip runs on CPU 0; this process, on CPU 1, plays 2 x N phones: one SIP
socket for all of them (the callers are trusted by address: allowed_ips) and
one RTP socket per call, all on one epoll loop. N callers dial mailboxes of
offline users with voicemail: they hear the greeting and the beep and then
speak (a PCMU tone, 50 packets/s, sent from the start of the call as phones do)
until ``#`` ends their messages. N callers dial the attendant (dialplan
"800") and key nothing: it plays its welcome, waits ``digit_timeout`` (1 s),
and welcomes them again, up to ``max_attempts`` (10).

Measured over ``--seconds`` once every call is answered and past its greeting:
RTP packets/s minisip receives and sends, minisip's CPU (share of one core),
and the timing of what it sends, from the kernel's arrival stamps
(SO_TIMESTAMPNS): for each packet that follows the previous one of its stream
(next sequence number, no marker), the deviation of its interarrival time from
its timestamp step (RFC 3550's D); p50/p99/max over all packets, RFC 3550
jitter (worst stream), lost packets (sequence gaps) and late ones (D > 20 ms).
Afterwards every message must be in the mailbox with about its duration.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import shutil
import socket
import sqlite3
import struct
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.register import cpu_seconds  # noqa: E402
from minisip.media import g711  # noqa: E402
from minisip.media.dtmf import digit_to_event  # noqa: E402
from minisip.sip.sdp import parse_sdp_untrusted  # noqa: E402
from minisip.sip.errors import BadMessage  # noqa: E402
from minisip.sip.message import (  # noqa: E402
    Request, Response, make_response, new_branch, new_call_id, new_tag,
)
from minisip.sip.parser import parse_message_untrusted  # noqa: E402
from tests.helpers import ServerProcess, free_port  # noqa: E402

HOST = "127.0.0.1"
ATTENDANT = "800"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
RTP = struct.Struct("!BBHII")
TIMESPEC = struct.Struct("@qq")
EVENT_PT = 101
PTIME = 0.020


def configure(config_dir: Path, n: int, metrics_port: int) -> None:
    callers = [f"{1000 + i}" for i in range(2 * n)]
    boxes = [f"{5000 + i}" for i in range(n)]
    lines = ["users:"]
    lines += [f'  "{u}": {{password: "pw{u}", allowed_ips: ["127.0.0.1"]}}' for u in callers]
    lines += [f'  "{u}": {{password: "pw{u}", voicemail: true}}' for u in boxes]
    (config_dir / "users.yaml").write_text("\n".join(lines) + "\n")
    services = config_dir / "services.yaml"
    text = services.read_text()
    for old, new in (("max_message_seconds: 120", "max_message_seconds: 600"),
                     ("silence_seconds: 5", "silence_seconds: 0"),
                     ("digit_timeout: 5", "digit_timeout: 1"),
                     ("max_attempts: 3", "max_attempts: 10")):
        assert old in text, old
        text = text.replace(old, new)
    services.write_text(text)
    system = config_dir / "system.yaml"
    system.write_text(system.read_text().replace("metrics_port: 0",
                                                 f"metrics_port: {metrics_port}"))
    dialplan = config_dir / "dialplan.yaml"
    dialplan.write_text(dialplan.read_text().replace(
        "analyze_called: {}",
        f'analyze_called:\n  "{ATTENDANT}": {{route: service, target: auto_attendant}}'))


@dataclass
class Stream:
    """What arrives from minisip on one call's RTP socket."""
    packets: int = 0
    lost: int = 0
    late: int = 0
    jitter: float = 0.0  #: RFC 3550, seconds
    seq: int = -1
    ts: int = 0
    at: float = 0.0
    ssrc: int = -1


@dataclass
class Phone:
    caller: str
    number: str
    kind: str  #: "vm" or "aa"
    sock: socket.socket
    call_id: str = field(default_factory=new_call_id)
    tag: str = field(default_factory=new_tag)
    branch: str = field(default_factory=new_branch)
    answered: float = 0.0
    remote_tag: str = ""
    target: str = ""
    media: tuple[str, int] | None = None
    invite: Request | None = None
    sent_at: float = 0.0
    seq: int = 0
    ts: int = 0
    ssrc: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    spoke: float = 0.0  #: seconds of voice sent since the beep
    ended: bool = False
    rx: Stream = field(default_factory=Stream)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def headers(self, cseq: str, to_tag: str = "") -> list[tuple[str, str]]:
        to = f"<sip:{self.number}@minisip>" + (f";tag={to_tag}" if to_tag else "")
        return [("Max-Forwards", "70"), ("From", f"<sip:{self.caller}@minisip>;tag={self.tag}"),
                ("To", to), ("Call-ID", self.call_id), ("CSeq", cseq)]


class Bench:
    def __init__(self, server: ServerProcess, n: int) -> None:
        self.server = server
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.sip.setblocking(False)
        self.sip_port = self.sip.getsockname()[1]
        self.ep = select.epoll()
        self.ep.register(self.sip.fileno(), select.EPOLLIN)
        self.phones: dict[str, Phone] = {}
        self.by_fd: dict[int, Phone] = {}
        self.measuring = False
        self.deviations: list[float] = []
        self.sent = 0
        tone = b"".join(int(6000 * math.sin(2 * math.pi * 425 * i / 8000)).to_bytes(
            2, "little", signed=True) for i in range(8000))
        ulaw = g711.ulaw_encode(tone)
        self.frames = [ulaw[i:i + 160] for i in range(0, 8000, 160)]
        for i in range(n):
            self._phone(f"{1000 + i}", f"{5000 + i}", "vm")
            self._phone(f"{1000 + n + i}", ATTENDANT, "aa")

    def _phone(self, caller: str, number: str, kind: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((HOST, 0))
        s.setblocking(False)
        p = Phone(caller, number, kind, s)
        self.phones[p.call_id] = p
        self.by_fd[s.fileno()] = p
        self.ep.register(s.fileno(), select.EPOLLIN)

    # -- SIP ------------------------------------------------------------------------------
    def _send(self, msg: Request | Response) -> None:
        self.sip.sendto(msg.to_bytes(), (HOST, self.server.port))

    def _via(self, branch: str) -> tuple[str, str]:
        return ("Via", f"SIP/2.0/UDP {HOST}:{self.sip_port};branch={branch};rport")

    def invite(self, p: Phone) -> None:
        sdp = (f"v=0\r\no=bench 1 1 IN IP4 {HOST}\r\ns=bench\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
               f"m=audio {p.port} RTP/AVP 0 {EVENT_PT}\r\na=rtpmap:0 PCMU/8000\r\n"
               f"a=rtpmap:{EVENT_PT} telephone-event/8000\r\na=fmtp:{EVENT_PT} 0-16\r\n"
               "a=ptime:20\r\na=sendrecv\r\n").encode()
        p.invite = Request("INVITE", f"sip:{p.number}@minisip",
                           [self._via(p.branch), *p.headers("1 INVITE"),
                            ("Contact", f"<sip:{p.caller}@{HOST}:{self.sip_port}>"),
                            ("Content-Type", "application/sdp")], sdp)
        p.sent_at = time.monotonic()
        self._send(p.invite)

    def _in_dialog(self, p: Phone, method: str, cseq: int) -> Request:
        return Request(method, p.target, [self._via(new_branch()),
                                          *p.headers(f"{cseq} {method}", p.remote_tag)])

    def bye(self, p: Phone) -> None:
        if not p.ended:
            p.ended = True
            self._send(self._in_dialog(p, "BYE", 2))

    def on_sip(self, data: bytes) -> None:
        try:
            msg = parse_message_untrusted(data)
        except BadMessage:
            return
        p = self.phones.get(msg.call_id)
        if p is None:
            return
        if isinstance(msg, Request):
            if msg.method == "BYE":
                p.ended = True
            if msg.method != "ACK":
                self._send(make_response(msg, 200))
            return
        if msg.cseq[1] != "INVITE" or not 200 <= msg.status < 300:
            if msg.status >= 300:
                raise SystemExit(f"call {p.caller} -> {p.number} failed: {msg.status}")
            return
        if not p.answered:
            p.answered = time.monotonic()
            p.remote_tag = msg.to_tag or ""
            p.target = str(msg.contacts[0].uri)
            m = parse_sdp_untrusted(msg.body).audio()
            p.media = m.rtp_address if m is not None else None
        self._send(self._in_dialog(p, "ACK", 1))

    # -- RTP ------------------------------------------------------------------------------
    def speak(self, now: float) -> None:
        """One frame from every voicemail caller (a tone, as a phone's microphone)."""
        for p in self.phones.values():
            if p.kind != "vm" or p.media is None or p.ended:
                continue
            frame = self.frames[p.seq % len(self.frames)]
            p.sock.sendto(RTP.pack(0x80, 0, p.seq & 0xFFFF, p.ts & 0xFFFFFFFF, p.ssrc) + frame,
                          p.media)
            p.seq += 1
            p.ts += 160
            self.sent += 1

    def key(self, p: Phone, digit: str) -> None:
        """One key press as RFC 4733: start, two updates, three end packets."""
        assert p.media is not None
        event = digit_to_event(digit)
        for i in range(6):
            end = i >= 3
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, 160 * min(i + 1, 4))
            p.sock.sendto(RTP.pack(0x80, EVENT_PT | (0x80 if i == 0 else 0), p.seq & 0xFFFF,
                                   p.ts & 0xFFFFFFFF, p.ssrc) + payload, p.media)
            p.seq += 1
        p.ts += 4 * 160

    def on_rtp(self, p: Phone) -> None:
        s = p.rx
        while True:
            try:
                data, anc, _, _ = p.sock.recvmsg(2048, 64)
            except BlockingIOError:
                return
            at = time.monotonic()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, ns = TIMESPEC.unpack(value[:TIMESPEC.size])
                    at = sec + ns / 1e9
            if len(data) < 12 or not self.measuring:
                continue
            _, b1, seq, ts, ssrc = RTP.unpack_from(data)
            s.packets += 1
            if ssrc == s.ssrc:
                step = (seq - s.seq) & 0xFFFF
                if step == 1 and not b1 & 0x80:
                    d = abs((at - s.at) - ((ts - s.ts) & 0xFFFFFFFF) / 8000)
                    self.deviations.append(d)
                    s.jitter += (d - s.jitter) / 16
                    if d > PTIME:
                        s.late += 1
                elif 1 < step < 3000:
                    s.lost += step - 1
            s.seq, s.ts, s.at, s.ssrc = seq, ts, at, ssrc

    # -- the run ----------------------------------------------------------------------------
    def loop(self, until: float, calls_per_second: float = 0.0,
             done: Callable[[], bool] = lambda: False) -> None:
        """Serve SIP and RTP, speak every 20 ms, start calls at ``calls_per_second``,
        until ``until`` or until ``done()``."""
        pending = [p for p in self.phones.values() if p.invite is None]
        start = time.monotonic()
        tick = start
        started = 0
        while True:
            now = time.monotonic()
            if now >= until or done():
                return
            if pending and calls_per_second:
                due = int((now - start) * calls_per_second) + 1
                while started < min(due, len(pending)):
                    self.invite(pending[started])
                    started += 1
            for p in self.phones.values():  # INVITEs lost or not answered yet: again
                if p.invite is not None and not p.answered and now - p.sent_at > 2.0:
                    p.sent_at = now
                    self._send(p.invite)
            if now >= tick:
                self.speak(now)
                tick += PTIME
                if now - tick > 0.1:
                    tick = now + PTIME
            for fd, _ in self.ep.poll(max(0.0, min(tick, until) - time.monotonic())):
                if fd == self.sip.fileno():
                    while True:
                        try:
                            data = self.sip.recv(65535)
                        except BlockingIOError:
                            break
                        self.on_sip(data)
                else:
                    self.on_rtp(self.by_fd[fd])

    def answered(self) -> int:
        return sum(1 for p in self.phones.values() if p.answered)


def loop_lag(port: int) -> dict[str, float]:
    """minisip_loop_lag_seconds: probes that woke later than each bound (cumulative
    bucket counts turned into "over this bound"), and "+Inf" = all probes."""
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5).read().decode()
    buckets = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^minisip_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}
    total = buckets.get("+Inf", 0.0)
    return {k: (total - v if k != "+Inf" else v) for k, v in buckets.items()}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="voicemail calls, and as many "
                                                           "attendant calls")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window")
    ap.add_argument("--rate", type=float, default=100.0, help="new calls per second")
    ap.add_argument("--realtime", action="store_true",
                    help="run minisip with SCHED_FIFO priority (shows what other processes on "
                         "a shared machine add to the timing)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="minisip-bench-apps-"))
    try:
        config_dir = tmp / "configs"
        shutil.copytree(REPO / "configs", config_dir)
        metrics_port = free_port()
        configure(config_dir, args.calls, metrics_port)
        (tmp / "data").mkdir()
        server = ServerProcess(config_dir, tmp / "data", free_port(), 0)
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(pid, {0})  # minisip on one core, the phones on the other
        if args.realtime:  # as Asterisk's -p: other processes cannot delay the media
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
            os.sched_setaffinity(0, {1})
        bench = Bench(server, args.calls)
        total = 2 * args.calls
        t0 = time.monotonic()
        bench.loop(t0 + total / args.rate + 30, args.rate,  # dial everyone ...
                   lambda: bench.answered() == total)
        if bench.answered() < total:
            print(f"FAIL: {bench.answered()} of {total} calls answered\n{server.log()}")
            return 1
        setup = max(p.answered for p in bench.phones.values()) - t0
        bench.loop(time.monotonic() + 8.0)  # ... every greeting and beep is over
        bench.measuring = True
        sent0 = bench.sent
        lag0 = loop_lag(metrics_port)
        cpu0, w0 = cpu_seconds(pid), time.monotonic()
        bench.loop(w0 + args.seconds)
        cpu, window = cpu_seconds(pid) - cpu0, time.monotonic() - w0
        lag = {k: v - lag0.get(k, 0) for k, v in loop_lag(metrics_port).items()}
        sent = bench.sent - sent0
        bench.measuring = False
        for p in bench.phones.values():  # '#' ends every message
            if p.kind == "vm":
                bench.key(p, "#")
            p.ended = p.kind == "vm"  # voicemail callers fall silent
        bench.loop(time.monotonic() + 2.0)
        for p in bench.phones.values():
            p.ended = False
            bench.bye(p)
        bench.loop(time.monotonic() + 3.0)
        status = json.loads(server.cli("status", "--json").stdout or "{}")
        server.stop()
        with sqlite3.connect(tmp / "data" / "voicemail" / "voicemail.db") as db:
            durations = [r[0] for r in db.execute(
                "SELECT duration FROM messages WHERE state = 'ready'")]

        rx = [p.rx for p in bench.phones.values()]
        received = sum(s.packets for s in rx)
        lost, late = sum(s.lost for s in rx), sum(s.late for s in rx)
        dev = bench.deviations
        print(f"calls: {args.calls} voicemail recordings + {args.calls} attendant calls, "
              f"all answered within {setup:.1f} s of the first INVITE")
        print(f"window: {window:.1f} s; minisip on one core: CPU {100 * cpu / window:.0f} %")
        print(f"RTP into minisip:   {sent / window:,.0f} packets/s (the callers' voice)")
        print(f"RTP from minisip:   {received / window:,.0f} packets/s (prompts), "
              f"lost {lost}, late (D > 20 ms) {late}")
        print(f"timing of what minisip sends (|D|, ms): p50 {1e3 * percentile(dev, .5):.2f}, "
              f"p90 {1e3 * percentile(dev, .9):.2f}, p99 {1e3 * percentile(dev, .99):.2f}, "
              f"max {1e3 * max(dev, default=0):.2f}; "
              f"RFC 3550 jitter, worst stream {1e3 * max(s.jitter for s in rx):.2f} ms")
        print(f"messages stored: {len(durations)} of {args.calls}, "
              f"{min(durations, default=0):.1f}-{max(durations, default=0):.1f} s long")
        slow = ", ".join(f"{n} over {k} s" for k, n in lag.items() if k != "+Inf" and n
                         and float(k) >= 0.01)
        print(f"minisip's event loop (a probe every 0.1 s): {int(lag.get('+Inf', 0))} probes, "
              f"late wake-ups: {slow or 'none over 10 ms'}")
        if status:
            print(f"server counters: {status.get('counters')}")
        ok = (len(durations) == args.calls and lost == 0 and late == 0)
        print("OK" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
