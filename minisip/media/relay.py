"""RTP relay: port pool, the media socket loop, relay sessions with latching (trio).

Theory of operation
-------------------
*One task drives every media socket.* ``MediaIO.run`` keeps its own
``select.epoll`` with every relay and endpoint socket registered
(level-triggered) and waits, through trio, on that epoll's descriptor. Each
wake-up it asks the epoll which sockets are readable and drains each with
``recvfrom_into`` into one shared buffer (up to ``BATCH`` packets per socket),
calling the socket's handler synchronously. So 500 calls cost one wake-up per
batch of packets instead of one task switch per packet, and there is no task
per session, socket or packet. After each wake-up the loop sleeps ``coalesce``
(1 ms) before waiting again, as a network card moderates interrupts: a
trio wake-up costs 10-15 us, a relayed packet about 5 us, so at 50 packets/s
per stream it is the wake-ups that would eat the core. This adds at most that
1 ms to a packet's trip (a phone's jitter buffer is 20-60 ms), and quantises
arrival times for the jitter estimate to about a millisecond.
Where ``select.epoll`` is missing (not Linux)
it falls back to one task per socket running the same drain loop.

*A relay session* has two legs, A and B; each leg is an RTP and an RTCP
socket bound on the relay host, facing one party. What party A sends to leg
A's port goes out of leg B's socket to party B, and back the same way.

*Latching (symmetric RTP).* The address a party wrote in its SDP is only a
hint (behind NAT it is a private address). Each socket sends to the source
address its party's packets really come from: the first packet latches it.
While latched, packets from any other source are dropped and counted (no
media hijacking), with two exceptions: the address from the party's own SDP
may always take over (a stray packet that latched first loses), and after
``relatch_after`` seconds without a packet from the latched source the next
source is believed (a NAT rebinding). Until a leg has latched, packets for it
go to its SDP address, if any.

Sends never block: a full socket buffer drops the packet and counts it.
"""
from __future__ import annotations

import ipaddress
import logging
import select
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..transport.udp import udp_socket
from .rtp import HEADER, DEFAULT_CLOCK_RATE, StreamStats

log = logging.getLogger(__name__)

BATCH = 256
MAX_DATAGRAM = 65536
SOCKET_BUFFER = 1024 * 1024  # per socket: absorbs a scheduling hiccup at 50 pps x 1000s
DEFAULT_RELATCH_AFTER = 2.0
#: after each wake-up the loop sleeps this long so packets arrive in batches (see MediaIO.run)
DEFAULT_COALESCE = 0.001
#: ... but only after a small batch: a large one already gathered the next (see MediaIO.run)
DEFAULT_COALESCE_BELOW = 32

Address = tuple[str, int]
Handler = Callable[[memoryview, Any, float], None]


def _ip_literal(host: str) -> str:
    """Addresses from SDP must be IP literals: a name would mean a blocking look-up per send."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}") from None


def _mapped(host: str) -> str:
    """An IPv4 address as a dual-stack IPv6 socket sends to it (RFC 4291 2.5.5.2)."""
    return host if ":" in host else f"::ffff:{host}"


class PortsExhausted(Exception):
    """No free RTP/RTCP port pair: answer the call with 503 (or relay nothing)."""


def _udp_socket(host: str, port: int) -> socket.socket:
    return udp_socket(host, port, SOCKET_BUFFER, v6only=False)


class PortPool:
    """Even RTP ports in [min_port, max_port]; RTCP is RTP + 1.

    Free ports are handed out in FIFO order, so a port just released goes to
    the back: late packets of an ended call do not land in the next one.
    """

    def __init__(self, min_port: int, max_port: int) -> None:
        self.min_port = self.max_port = 0
        self._free: deque[int] = deque()
        self._used: set[int] = set()
        self.configure(min_port, max_port)

    def configure(self, min_port: int, max_port: int) -> None:
        """A new range (a reload): new calls get ports from it; ports in use stay with
        their calls, and those outside the range are not handed out again."""
        if not 0 < min_port < max_port <= 65535:
            raise ValueError(f"bad RTP port range {min_port}-{max_port}")
        if (min_port, max_port) == (self.min_port, self.max_port):
            return
        first = min_port + (min_port & 1)
        free = deque(p for p in range(first, max_port, 2) if p not in self._used)
        if not free and not self._used:
            raise ValueError(f"RTP port range {min_port}-{max_port} holds no even/odd pair")
        self.min_port, self.max_port, self._free = min_port, max_port, free  # p + 1 <= max

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        if not self._free:
            raise PortsExhausted(f"all {self.capacity} RTP port pairs in use")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            if self.min_port <= port < self.max_port and not port & 1:
                self._free.append(port)

    def open_pair(self, host: str, *,
                  attempts: int = 32) -> tuple[int, socket.socket, socket.socket]:
        """Allocate a port pair and bind both sockets; ports taken by others are skipped."""
        last: OSError | None = None
        for _ in range(min(attempts, max(1, len(self._free)))):
            port = self.allocate()
            try:
                rtp = _udp_socket(host, port)
            except OSError as exc:
                last = exc
                self.release(port)
                continue
            try:
                rtcp = _udp_socket(host, port + 1)
            except OSError as exc:
                last = exc
                rtp.close()
                self.release(port)
                continue
            return port, rtp, rtcp
        raise PortsExhausted(f"no bindable RTP port pair on {host}: {last}")


class MediaIO:
    """The receive loop for every media socket (see the module docstring)."""

    def __init__(self, *, use_epoll: bool | None = None, batch: int = BATCH,
                 coalesce: float = DEFAULT_COALESCE,
                 coalesce_below: int = DEFAULT_COALESCE_BELOW,
                 on_fault: Callable[[str, BaseException, str], object] | None = None) -> None:
        if use_epoll is None:
            use_epoll = hasattr(select, "epoll")
        self._ep = select.epoll() if use_epoll else None
        self._handlers: dict[int, tuple[socket.socket, Handler]] = {}
        self._batch = batch
        self.coalesce = coalesce
        self.coalesce_below = coalesce_below
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[int, trio.CancelScope] = {}
        self.wakeups = 0
        self.packets = 0
        self.handler_errors = 0
        #: where a handler's exception goes (the server's ``Faults.record``)
        self.on_fault = on_fault

    @property
    def sockets(self) -> int:
        return len(self._handlers)

    def register(self, sock: socket.socket, handler: Handler) -> None:
        """``handler(data, source_address, now)``; ``data`` is valid only during the call."""
        fd = sock.fileno()
        self._handlers[fd] = (sock, handler)
        if self._ep is not None:
            self._ep.register(fd, select.EPOLLIN)
        elif self._nursery is not None:
            self._start_fallback(fd)

    def unregister(self, sock: socket.socket) -> None:
        """Forget a socket; call before closing it."""
        fd = sock.fileno()
        if fd < 0 or self._handlers.pop(fd, None) is None:
            return
        if self._ep is not None:
            try:
                self._ep.unregister(fd)
            except (OSError, ValueError):
                pass
        else:
            scope = self._scopes.pop(fd, None)
            if scope is not None:
                scope.cancel()
            trio.lowlevel.notify_closing(sock)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._ep is None:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for fd in list(self._handlers):
                    self._start_fallback(fd)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._nursery = None
            return
        ep = self._ep
        epfd = ep.fileno()
        handlers = self._handlers
        buf = bytearray(MAX_DATAGRAM)
        view = memoryview(buf)
        batch = self._batch
        current_time = trio.current_time
        coalesce = self.coalesce
        coalesce_below = self.coalesce_below
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(epfd)
                self.wakeups += 1
                count = 0
                for fd, _ in ep.poll(0, 1024):
                    entry = handlers.get(fd)
                    if entry is None:
                        continue
                    sock, handler = entry
                    recv = sock.recvfrom_into
                    now = current_time()
                    for _ in range(batch):
                        try:
                            n, addr = recv(buf)
                        except (BlockingIOError, InterruptedError):
                            break
                        except ConnectionRefusedError:  # ICMP for an earlier send
                            continue
                        except OSError:  # closed under us by a handler
                            break
                        count += 1
                        try:
                            handler(view[:n], addr, now)
                        except Exception as exc:  # one packet's bug must not stop them all
                            self._handler_failed(fd, exc)
                self.packets += count
                if coalesce and count < coalesce_below:
                    # Interrupt moderation: let packets gather for a moment instead of paying
                    # a trio wake-up (10-15 us) for each one. Adds at most ``coalesce`` latency.
                    # A big batch took long enough to process that more are already queued.
                    await trio.sleep(coalesce)
        finally:
            ep.close()
            self._ep = None

    def _handler_failed(self, fd: int, exc: Exception) -> None:
        """The media loop's error boundary: the packet is dropped, the fault recorded."""
        self.handler_errors += 1
        if self.on_fault is not None:
            self.on_fault("media", exc, f"RTP handler for fd {fd}")
        elif self.handler_errors <= 10:
            log.error("media handler for fd %d failed; packet dropped", fd, exc_info=exc)

    def _start_fallback(self, fd: int) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._scopes[fd] = scope
        sock, handler = self._handlers[fd]
        self._nursery.start_soon(self._socket_loop, sock, handler, scope)

    async def _socket_loop(self, sock: socket.socket, handler: Handler,
                           scope: trio.CancelScope) -> None:
        buf = bytearray(MAX_DATAGRAM)
        view = memoryview(buf)
        with scope:
            while True:
                # closed (and maybe its fd reused) before this task first ran: not ours any more
                if scope.cancel_called or sock.fileno() < 0:
                    return
                try:
                    await trio.lowlevel.wait_readable(sock)
                except (trio.ClosedResourceError, OSError):
                    return
                now = trio.current_time()
                self.wakeups += 1
                for _ in range(self._batch):
                    try:
                        n, addr = sock.recvfrom_into(buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionRefusedError:
                        continue
                    except OSError:
                        return
                    self.packets += 1
                    try:
                        handler(view[:n], addr, now)
                    except Exception as exc:
                        self._handler_failed(sock.fileno(), exc)
                else:
                    await trio.lowlevel.checkpoint()


class _Channel:
    """One relay socket facing one party, RTP or RTCP, with its latch and counters."""

    __slots__ = ("sock", "port", "latched", "expected", "last_rx", "peer", "packets", "bytes",
                 "foreign", "no_target", "send_drops", "relatches", "relatch_after", "stats",
                 "tap", "muted")

    def __init__(self, sock: socket.socket, port: int, relatch_after: float,
                 stats: StreamStats | None) -> None:
        self.sock = sock
        self.port = port
        self.latched: Address | None = None
        self.expected: Address | None = None
        self.last_rx = -1e18
        self.peer: _Channel = self
        self.packets = 0
        self.bytes = 0
        self.foreign = 0       #: dropped: from a source other than the latched one
        self.no_target = 0     #: dropped: the other party's address is not known yet
        self.send_drops = 0    #: dropped: socket buffer full or send error
        self.relatches = 0
        self.relatch_after = relatch_after
        self.stats = stats     #: RTP only
        self.tap: Callable[[memoryview, float], bool | None] | None = None
        #: counted but not forwarded: the other party hears minisip instead (music on hold)
        self.muted = False

    def on_datagram(self, data: memoryview, addr: Any, now: float) -> None:
        latched = self.latched
        if addr != latched:
            if latched is not None:
                if now - self.last_rx < self.relatch_after and addr != self.expected:
                    self.foreign += 1
                    return
                self.relatches += 1
            self.latched = addr
        self.last_rx = now
        n = len(data)
        self.packets += 1
        self.bytes += n
        stats = self.stats
        if stats is not None and n >= 12 and (data[0] & 0xC0) == 0x80 and not 192 <= data[1] <= 223:
            _, b1, seq, ts, ssrc = HEADER.unpack_from(data)
            stats.update(seq, ts, now, ssrc, b1 & 0x7F, n)
            if self.tap is not None and self.tap(data, now):
                return  # the tap consumed it (DTMF events turned into SIP INFO)
        if self.muted:
            return
        out = self.peer
        dest = out.latched or out.expected
        if dest is None:
            self.no_target += 1
            return
        try:
            out.sock.sendto(data, dest)
        except OSError:  # buffer full, unreachable, ...: media is loss-tolerant, the loop lives on
            self.send_drops += 1


@dataclass(frozen=True)
class LegStats:
    """One leg's figures for ``minisip calls`` and the CDR. ``rtp_*`` count what the party sent."""
    leg: str
    local_rtp_port: int
    remote: Address | None
    rtp_packets: int
    rtp_bytes: int
    expected: int
    lost: int
    loss: float
    jitter_ms: float
    rtcp_packets: int
    rtcp_bytes: int
    dropped_foreign: int
    dropped_no_target: int
    dropped_send: int
    relatches: int

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["remote"] = f"{self.remote[0]}:{self.remote[1]}" if self.remote else None
        d["loss"] = round(self.loss, 6)
        d["jitter_ms"] = round(self.jitter_ms, 3)
        return d


class RelayLeg:
    """The relay's side facing one party: its RTP and RTCP sockets."""

    def __init__(self, name: str, port: int, rtp_sock: socket.socket, rtcp_sock: socket.socket,
                 relatch_after: float, clock_rate: int) -> None:
        self.name = name
        self.rtp_port = port
        self.rtcp_port = port + 1
        self.stats = StreamStats(clock_rate=clock_rate)
        self.rtp = _Channel(rtp_sock, port, relatch_after, self.stats)
        self.rtcp = _Channel(rtcp_sock, port + 1, relatch_after, None)

    def set_remote(self, rtp: Address | None, rtcp: Address | None = None) -> None:
        """The party's RTP address from its SDP (offer, answer or re-INVITE).

        RTCP defaults to RTP + 1 (pass the ``a=rtcp`` address, or the RTP
        address itself for rtcp-mux). When the party names a new address in a
        re-INVITE the latch is dropped so its new source is accepted at once;
        the same address (a private one behind NAT, typically) keeps the latch.
        ``None`` (hold with c=0.0.0.0) keeps everything as it is.
        """
        if rtp is None:
            return
        rtp = (_ip_literal(rtp[0]), int(rtp[1]))
        rtcp = (rtp[0], rtp[1] + 1) if rtcp is None else (_ip_literal(rtcp[0]), int(rtcp[1]))
        if self.rtp.sock.family == socket.AF_INET6:  # dual-stack: IPv4 peers as mapped addresses
            rtp, rtcp = (_mapped(rtp[0]), rtp[1]), (_mapped(rtcp[0]), rtcp[1])
        if self.rtp.expected is not None and self.rtp.expected != rtp:
            self.unlatch()
        self.rtp.expected = rtp
        self.rtcp.expected = rtcp

    def unlatch(self) -> None:
        self.rtp.latched = None
        self.rtcp.latched = None

    def set_clock_rate(self, rate: int) -> None:
        """The negotiated codec's RTP clock (jitter is in its units); 8000 for G.711."""
        self.stats.clock_rate = rate

    def mute(self, muted: bool) -> None:
        """Stop (or resume) forwarding this party's RTP and RTCP to the other party."""
        self.rtp.muted = self.rtcp.muted = muted

    def set_tap(self, tap: Callable[[memoryview, float], bool | None] | None) -> None:
        """See every RTP packet from this party (e.g. a ``DtmfReceiver`` for feature codes).

        A tap returning True consumes the packet: it is not forwarded.
        """
        self.rtp.tap = tap

    @property
    def remote(self) -> Address | None:
        """Where the relay sends to this party: latched source, else the SDP address."""
        return self.rtp.latched or self.rtp.expected

    @property
    def latched(self) -> Address | None:
        return self.rtp.latched

    @property
    def last_packet(self) -> float:
        return max(self.rtp.last_rx, self.rtcp.last_rx)

    def snapshot(self) -> LegStats:
        s = self.stats
        return LegStats(self.name, self.rtp_port, self.remote, self.rtp.packets, self.rtp.bytes,
                        s.expected, s.lost, s.loss_fraction, s.jitter_ms,
                        self.rtcp.packets, self.rtcp.bytes,
                        self.rtp.foreign + self.rtcp.foreign,
                        self.rtp.no_target + self.rtcp.no_target,
                        self.rtp.send_drops + self.rtcp.send_drops,
                        self.rtp.relatches + self.rtcp.relatches)


class RelaySession:
    """The relay for one call: leg ``a`` faces the caller, leg ``b`` the callee.

    Rewrite the SDP going *to* B with ``b``'s port (B sends to leg B) and the
    SDP going to A with ``a``'s port; feed each party's own SDP address to its
    leg with ``set_remote``. ``close()`` (or leaving ``with``) gives the ports back.
    """

    def __init__(self, io: MediaIO, pool: PortPool, host: str, *, call_id: str = "",
                 relatch_after: float = DEFAULT_RELATCH_AFTER,
                 clock_rate: int = DEFAULT_CLOCK_RATE) -> None:
        self.io = io
        self.pool = pool
        self.host = host
        self.call_id = call_id
        self.created = trio.current_time()
        self.closed = False
        legs = []
        try:
            for name in ("A", "B"):
                port, rtp, rtcp = pool.open_pair(host)
                legs.append(RelayLeg(name, port, rtp, rtcp, relatch_after, clock_rate))
        except BaseException:
            for leg in legs:
                self._close_leg(leg)
            raise
        self.a, self.b = legs
        self.a.rtp.peer, self.b.rtp.peer = self.b.rtp, self.a.rtp
        self.a.rtcp.peer, self.b.rtcp.peer = self.b.rtcp, self.a.rtcp
        for leg in legs:
            io.register(leg.rtp.sock, leg.rtp.on_datagram)
            io.register(leg.rtcp.sock, leg.rtcp.on_datagram)

    def __enter__(self) -> RelaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def leg(self, name: str) -> RelayLeg:
        return self.a if name.upper() == "A" else self.b

    def other(self, leg: RelayLeg) -> RelayLeg:
        return self.b if leg is self.a else self.a

    @property
    def ports(self) -> tuple[int, int]:
        return self.a.rtp_port, self.b.rtp_port

    def idle_seconds(self, now: float | None = None) -> float:
        """Seconds since the last packet from either party (since creation if none yet)."""
        if now is None:
            now = trio.current_time()
        last = max(self.a.last_packet, self.b.last_packet, self.created)
        return max(0.0, now - last)

    def stats(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "a": self.a.snapshot().as_dict(),
                "b": self.b.snapshot().as_dict()}

    def _close_leg(self, leg: RelayLeg) -> None:
        for ch in (leg.rtp, leg.rtcp):
            self.io.unregister(ch.sock)
            ch.sock.close()
        self.pool.release(leg.rtp_port)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for leg in (self.a, self.b):
            self._close_leg(leg)


async def wait_media_timeout(session: RelaySession, timeout: float) -> float:
    """Return (the idle time) once ``session`` has had no packet for ``timeout`` seconds.

    Run it in the call's nursery and hang up when it returns; cancel it while
    the call is on hold with ``inactive`` media if holds should not time out.
    One sleep per call, re-armed from the last packet's time: no polling.
    """
    while True:
        idle = session.idle_seconds()
        if idle >= timeout:
            return idle
        await trio.sleep(timeout - idle)
