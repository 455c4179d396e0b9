#!/usr/bin/env python3
"""RTP relay benchmark: N concurrent relayed calls on 127.0.0.1.

    .venv/bin/python bench/rtp_relay.py --calls 100 250 500 --seconds 10

This process is the relay (minisip.media.relay: one MediaIO loop, N
RelaySessions, ports from a PortPool), exactly as the PBX runs it. A separate
generator process (``--generator``, started here) plays both phones of every
call: 2 x N UDP sockets, each stream 50 packets/s of 172 bytes (12-byte RTP
header + 160 bytes of G.711-sized payload) with the send time (CLOCK_REALTIME,
ns) in the payload. Streams are spread evenly over the 20 ms period, as
independent phones would be. The generator sends from one forked child and
receives in its parent (same sockets, so latching works), reading the kernel's
receive timestamp (SO_TIMESTAMPNS): latency is measured from just before
sendto to arrival at the far phone's socket, so the generator's own loop
delays do not count. ``--baseline`` runs the same traffic phone to phone
without the relay, to show what loopback alone costs.

Figures printed per N: packets/s into and out of the relay, loss, latency
median/p99/max, and the relay process's CPU use over the measured window.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
RATE = 50             # packets per second per direction
PACKET = 172
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
HEADER = struct.Struct("!BBHIIq")  # RTP header + send time (ns), then padding to 172 bytes
PAD = bytes(PACKET - HEADER.size)


# ---------------------------------------------------------------- generator process

def _socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((HOST, 0))
    return s


def generator(spec: dict) -> int:
    """Both phones of every call.

    spec: {"targets": [[a_port, b_port], ...], "seconds", "baseline", "cpu"}.
    """
    if spec.get("cpu") is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    targets = spec["targets"]
    seconds = spec["seconds"]
    streams = []  # (sending socket, destination port, receiving socket index)
    socks = []
    for a_port, b_port in targets:
        a, b = _socket(), _socket()
        ia = len(socks)
        socks += [a, b]
        if spec.get("baseline"):  # phone to phone, no relay
            streams.append((a, b.getsockname()[1]))
            streams.append((b, a.getsockname()[1]))
        else:
            streams.append((a, a_port))
            streams.append((b, b_port))
        del ia
    # warm-up: every phone sends once so that every relay leg latches, then drain
    for _ in range(2):
        for sock, port in streams:
            sock.sendto(HEADER.pack(0x80, 0, 0, 0, 0xFFFFFFFF, 0) + PAD, (HOST, port))
        time.sleep(0.3)
    for s in socks:
        s.setblocking(False)
        while True:
            try:
                s.recv(2048)
            except BlockingIOError:
                break
    n_streams = len(streams)
    interval = 1.0 / (RATE * n_streams)
    total = int(seconds * RATE) * n_streams
    start = time.monotonic() + 0.2
    print("start", flush=True)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # ---- sender
        os.close(rd)
        sent = 0
        late_max = 0.0
        pack = HEADER.pack
        mono = time.monotonic
        wall = time.time_ns
        send_errors = 0
        k = 0
        while k < total:
            now = mono()
            due = start + k * interval
            if now < due:
                # sleep rather than spin: the relay and the receiver need the other core
                time.sleep(due - now)
                continue
            late_max = max(late_max, now - due)
            while k < total and start + k * interval <= now:  # everything due by now
                s = k % n_streams
                sock, port = streams[s]
                seq = k // n_streams
                try:
                    sock.sendto(pack(0x80, 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, s, wall())
                                + PAD, (HOST, port))
                    sent += 1
                except BlockingIOError:
                    send_errors += 1
                k += 1
        os.write(wr, json.dumps({"sent": sent, "send_errors": send_errors,
                                 "sender_late_max_ms": round(late_max * 1000, 2)}).encode())
        os._exit(0)
    os.close(wr)
    # ---- receiver
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    lat_us: list[int] = []
    received = 0
    unpack = HEADER.unpack_from
    cmsg_space = socket.CMSG_SPACE(16)
    deadline = start + seconds + 1.0
    while time.monotonic() < deadline:
        # Poll every millisecond instead of sleeping in epoll: a phone process that is not
        # blocked on its sockets costs the relay's sendto no wake-up. The kernel timestamps
        # the arrival, so this delay is not in the latency figures.
        time.sleep(0.001)
        for fd, _ in ep.poll(0, 4096):
            s = by_fd[fd]
            while True:
                try:
                    data, anc, _, _ = s.recvmsg(2048, cmsg_space)
                except BlockingIOError:
                    break
                if len(data) < HEADER.size:
                    continue
                sent_ns = unpack(data)[5]
                if sent_ns == 0:
                    continue  # a late warm-up packet
                received += 1
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", cdata[:16])
                        lat_us.append((sec * 1_000_000_000 + nsec - sent_ns) // 1000)
    os.waitpid(pid, 0)
    sender = json.loads(os.read(rd, 65536))
    ru_self = resource.getrusage(resource.RUSAGE_SELF)
    ru_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    sender["generator_cpu_s"] = round(ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime
                                      + ru_kids.ru_stime, 3)
    print("stop", flush=True)
    lat_us.sort()

    def pct(p: float) -> float:
        return lat_us[min(len(lat_us) - 1, int(p * len(lat_us)))] / 1000 if lat_us else float("nan")

    result = dict(sender, received=received, expected=total,
                  latency_ms={"median": pct(0.5), "p99": pct(0.99), "p999": pct(0.999),
                              "max": lat_us[-1] / 1000 if lat_us else None})
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- relay process

def wait_for_idle(max_wait: float = 300.0, busy_pct: float = 10.0) -> float:
    """Wait until the machine's other work uses under ``busy_pct`` of it (shared machines)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t_end = time.monotonic() + max_wait
    while True:
        t0, i0 = sample()
        time.sleep(1.0)
        t1, i1 = sample()
        busy = 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
        if busy < busy_pct or time.monotonic() > t_end:
            return busy
        time.sleep(2.0)


def machine_ticks() -> tuple[int, int]:
    """(all, busy) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), sum(v) - v[3] - v[4]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sys_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def gen_cpu_estimate(lines: list[str]) -> float:
    try:
        return float(json.loads(lines[-1])["generator_cpu_s"])
    except (IndexError, KeyError, ValueError):
        return 0.0


async def run_relay(calls: int, seconds: float, epoll: bool, baseline: bool,
                    pin: bool, coalesce: float, coalesce_below: int) -> dict:
    import trio

    from minisip.media.relay import MediaIO, PortPool, RelaySession

    io = MediaIO(use_epoll=epoll, coalesce=coalesce, coalesce_below=coalesce_below)
    pool = PortPool(20000, 20000 + 8 * calls + 400)
    sessions = []
    result: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(io.run)
        for i in range(calls):
            sessions.append(RelaySession(io, pool, HOST, call_id=f"bench-{i}"))
        gc.collect()
        gc.freeze()  # PERFORMANCE.md: keep start-up objects out of the collector's way
        spec = {"targets": [[s.a.rtp_port, s.b.rtp_port] for s in sessions],
                "seconds": seconds, "baseline": baseline, "cpu": 1 if pin else None}
        proc = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--generator", json.dumps(spec)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        def drops() -> int:
            return sum(getattr(x, k) for s in sessions for x in (s.a.rtp, s.b.rtp)
                       for k in ("foreign", "no_target", "send_drops"))

        buf = b""
        marks: dict[str, tuple] = {}
        lines = []
        async for chunk in proc.stdout:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode()
                if text in ("start", "stop"):
                    marks[text] = (time.monotonic(), cpu_seconds(), io.packets, io.wakeups,
                                   drops(), machine_ticks(), sys_seconds())
                else:
                    lines.append(text)
        await proc.wait()
        t0, c0, p0, w0, d0, m0, s0 = marks["start"]
        t1, c1, p1, w1, d1, m1, s1 = marks["stop"]
        hz = os.sysconf("SC_CLK_TCK")
        machine_busy_s = (m1[1] - m0[1]) / hz
        # what the rest of the machine (other people's work) used while we measured
        others_s = machine_busy_s - (c1 - c0) - gen_cpu_estimate(lines)
        gen = json.loads(lines[-1])
        # the window ends 1 s after the last send (stragglers): rates are per second of traffic
        wall = seconds
        relayed = sum(s.a.rtp.packets + s.b.rtp.packets for s in sessions)
        dropped = d1 - d0
        result = {
            "calls": calls,
            "mode": "baseline (no relay)" if baseline else
                    (f"epoll, coalesce {coalesce * 1000:g} ms below {coalesce_below}" if epoll
                     else "task/socket"),
            "offered_pps": round(gen["expected"] / seconds),
            "relayed_pps": round((p1 - p0) / wall),
            "packets_per_wakeup": round((p1 - p0) / max(1, w1 - w0), 1),
            "loss_pct": round(100 * (1 - gen["received"] / gen["expected"]), 4),
            "latency_ms": gen["latency_ms"],
            "relay_cpu_pct": round(100 * (c1 - c0) / wall, 1),
            "relay_cpu_kernel_pct": round(100 * (s1 - s0) / wall, 1),
            "relay_us_per_packet": round(1e6 * (c1 - c0) / max(1, p1 - p0), 2),
            "relay_drops": dropped,
            "relay_rx_total": relayed,
            "sender_late_max_ms": gen["sender_late_max_ms"],
            "send_errors": gen["send_errors"],
            "generator_cpu_pct": round(100 * gen["generator_cpu_s"] / (t1 - t0), 1),
            "others_cpu_pct": round(100 * max(0.0, others_s) / (t1 - t0), 1),
        }
        for s in sessions:
            s.close()
        nursery.cancel_scope.cancel()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, nargs="+", default=[100, 250, 500])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-epoll", action="store_true", help="task-per-socket fallback loop")
    ap.add_argument("--coalesce-ms", type=float, default=1.0,
                    help="MediaIO interrupt moderation (0 = wake up for every packet)")
    ap.add_argument("--coalesce-below", type=int, default=32,
                    help="moderate only after a batch smaller than this")
    ap.add_argument("--baseline", action="store_true", help="phones talk directly, no relay")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the relay to CPU 0 and the generator to CPU 1")
    ap.add_argument("--no-wait-idle", action="store_true",
                    help="start even if other processes keep the machine busy")
    ap.add_argument("--generator", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generator:
        return generator(json.loads(args.generator))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import trio
    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {0})
    rows = []
    for n in args.calls:
        busy = None if args.no_wait_idle else wait_for_idle()
        r = trio.run(run_relay, n, args.seconds, not args.no_epoll, args.baseline, pin,
                     args.coalesce_ms / 1000, args.coalesce_below)
        r["machine_busy_before_pct"] = None if busy is None else round(busy, 1)
        rows.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            lat = r["latency_ms"]
            print(f"{r['calls']:4d} calls [{r['mode']}]: offered {r['offered_pps']:6d} pps, "
                  f"relayed {r['relayed_pps']:6d} pps ({r['packets_per_wakeup']} per wake-up), "
                  f"loss {r['loss_pct']:.4f} %, latency median {lat['median']:.3f} ms "
                  f"p99 {lat['p99']:.3f} ms max {lat['max']:.3f} ms,"
                  f" relay CPU {r['relay_cpu_pct']} % (kernel {r['relay_cpu_kernel_pct']} %,"
                  f" {r['relay_us_per_packet']} us/packet)"
                  f" (drops {r['relay_drops']}, sender late max {r['sender_late_max_ms']} ms,"
                  f" generator CPU {r['generator_cpu_pct']} %,"
                  f" other processes {r['others_cpu_pct']} % of one core during the run)",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
