"""UDP listener: the drained receive loop from PERFORMANCE.md.

One non-blocking socket per listen address. Each wake-up drains up to
``BATCH`` datagrams, hands each to ``on_datagram`` synchronously (no task per
packet), then calls ``on_batch_end`` so the layers above can group-commit and
flush what they queued. Sends never block the loop: a full socket buffer drops
the datagram (UDP senders retransmit) and counts it.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable

import trio

from ..sip.peer import Peer

log = logging.getLogger(__name__)

BATCH = 256
MAX_DATAGRAM = 65535
SOCKET_BUFFER = 4 * 1024 * 1024  # a few MB, or retransmission storms start above ~10k msg/s
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same
_TIMESPEC = struct.Struct("@qq")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)


#: requests already wait this long in the socket's queue: answers will soon come after
#: T1 (0.5 s) and clients would retransmit, adding load
OVERLOAD_DELAY = 0.3
#: ... and have done so this long: only then is it overload. A queue that built up
#: during one short stall of ours (a collection, a big commit) drains in milliseconds;
#: answering it with 503 would turn a 0.3 s pause into hundreds of failed calls.
OVERLOAD_SUSTAINED = 1.0
#: the queueing delay is looked at no more often than this (seconds)
LOOK_EVERY = 0.01


class OverloadDetector:
    """Sustained queueing delay (RFC 7339's idea, Kamailio ratelimit's practice):
    overloaded once every look for ``sustained`` seconds saw the oldest datagram
    wait ``threshold`` or more; one look below half the threshold clears it."""

    def __init__(self, threshold: float = OVERLOAD_DELAY,
                 sustained: float = OVERLOAD_SUSTAINED) -> None:
        self.threshold, self.sustained = threshold, sustained
        self.since: float | None = None  #: when the delay went over the threshold

    def observe(self, delay: float, now: float) -> None:
        if delay >= self.threshold:
            if self.since is None:
                self.since = now
        elif delay < self.threshold / 2:
            self.since = None

    def overloaded(self, now: float) -> bool:
        return self.since is not None and now - self.since >= self.sustained


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def udp_socket(host: str, port: int, buffer: int = SOCKET_BUFFER, *,
               v6only: bool = True) -> socket.socket:
    """A bound, non-blocking UDP socket with big buffers (SIP listeners, RTP relays).

    SIP's IPv6 sockets are v6-only: IPv4 has its own socket, so "::" and
    "0.0.0.0" can both be listened on. A relay bound on "::" takes both.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, buffer)
            except OSError:  # capped by net.core.rmem_max: take what the kernel gives
                pass
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpListener:
    def __init__(self, host: str, port: int) -> None:
        sock = udp_socket(host, port)
        self.sock = sock
        self.family = sock.family
        self.host, self.port = sock.getsockname()[:2]
        self.received = 0
        self.sent = 0
        #: how long the oldest queued datagram had waited at the last look (seconds):
        #: the queueing delay every request now suffers, the true measure of overload
        self.delay = 0.0
        self.overload = OverloadDetector()
        try:  # the kernel stamps each datagram on arrival; we read one stamp per batch
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._stamps = True
        except OSError:
            self._stamps = False
        self.send_dropped = 0
        self._next_look = 0.0  #: monotonic time of the next queueing-delay look

    def _measure_delay(self, sock: socket.socket) -> None:
        """Peek at the oldest queued datagram's arrival stamp (it stays queued), at most
        every ``LOOK_EVERY``: a peek with its control message was a third of a wake-up's
        cost, and overload is a delay held for a second."""
        if not self._stamps:
            return
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + LOOK_EVERY
        try:
            _, anc, _, _ = sock.recvmsg(1, _ANC_SIZE, socket.MSG_PEEK)
        except OSError:
            return
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(data)
                self.delay = max(0.0, time.time() - (sec + nsec * 1e-9))
                self.overload.observe(self.delay, now)

    def overloaded(self) -> bool:
        return self.overload.overloaded(time.monotonic())

    @property
    def name(self) -> str:
        return f"udp:{_bracket(self.host)}:{self.port}"

    def send(self, data: bytes, peer: Peer) -> bool:
        """False when the datagram certainly cannot reach ``peer`` (a transport error);
        a full socket buffer is a loss like any other (UDP senders retransmit)."""
        try:
            self.sock.sendto(data, (peer.host, peer.port))
            self.sent += 1
            return True
        except (BlockingIOError, InterruptedError):
            self.send_dropped += 1
            return True
        except OSError as exc:  # unreachable peer, bad address: that peer's problem only
            self.send_dropped += 1
            log.debug("%s: cannot send to %s: %s", self.name, peer, exc)
            return False

    async def serve(self, on_datagram: Callable[[bytes, Peer], None],
                    on_batch_end: Callable[[], None]) -> None:
        sock = self.sock
        buf = bytearray(MAX_DATAGRAM)
        view = memoryview(buf)
        peers: dict[tuple[str, int], Peer] = {}
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                self._measure_delay(sock)
                for _ in range(BATCH):
                    try:
                        n, addr = sock.recvfrom_into(buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionRefusedError:  # ICMP from an earlier send
                        continue
                    self.received += 1
                    key = addr[:2]
                    peer = peers.get(key)
                    if peer is None:
                        if len(peers) > 100_000:  # a cache, not a registry: keep it bounded
                            peers.clear()
                        peer = peers[key] = Peer("udp", key[0], key[1])
                    on_datagram(bytes(view[:n]), peer)
                else:  # a full batch: let other tasks run before draining more
                    on_batch_end()
                    await trio.lowlevel.checkpoint()
                    self._measure_delay(sock)
                    continue
                on_batch_end()
        finally:
            sock.close()
