"""minisip's own end of an RTP session (IVR, voicemail, music on hold, park) (trio).

One RTP/RTCP port pair from the pool, served by the shared ``MediaIO`` loop.
It latches to the party like a relay leg does, parses what arrives, keeps
``StreamStats``, hands packets to consumers (a ``Recorder``), and turns
RFC 4733 events into digits on ``digits`` (a trio channel). Digits that came
as SIP INFO are pushed into the same channel with ``inject_digit``, so a
service reads key presses one way whatever the phone sends.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ..sip.errors import BadMessage
from .dtmf import DtmfDigit, DtmfReceiver
from .player import Player
from .relay import DEFAULT_RELATCH_AFTER, Address, MediaIO, PortPool, _ip_literal
from .rtp import RtpPacket, RtpStream, StreamStats, is_rtcp, parse_rtp_untrusted
from .sdp_media import Negotiated

Consumer = Callable[[RtpPacket, float], None]
DTMF_EXPIRE = 1.0


class MediaEndpoint:
    def __init__(self, io: MediaIO, pool: PortPool, host: str, *,
                 relatch_after: float = DEFAULT_RELATCH_AFTER, digit_buffer: int = 32) -> None:
        self.io = io
        self.pool = pool
        self.rtp_port, self._rtp, self._rtcp = pool.open_pair(host)
        self.rtcp_port = self.rtp_port + 1
        self.relatch_after = relatch_after
        self.expected: Address | None = None
        self.expected_rtcp: Address | None = None
        self.latched: Address | None = None
        self.latched_rtcp: Address | None = None
        self._last_rx = -1e18
        self.last_packet = trio.current_time()  #: so a party that never sends times out too
        self.stream = RtpStream()
        self.stats = StreamStats()
        self.codec = "PCMU"
        self.payload_type = 0
        self.dtmf: DtmfReceiver | None = DtmfReceiver()
        self.consumers: list[Consumer] = []
        self._digit_send, self.digits = trio.open_memory_channel[DtmfDigit](digit_buffer)
        self.digits_dropped = 0
        self.bad_packets = 0
        self.foreign = 0
        self.send_drops = 0
        self.rtcp_packets = 0
        self.closed = False
        io.register(self._rtp, self._on_rtp)
        io.register(self._rtcp, self._on_rtcp)

    # ---- configuration from offer/answer -------------------------------------------------

    def configure(self, negotiated: Negotiated) -> None:
        """Apply offer/answer: codec, payload types and where the party's media goes."""
        self.codec = negotiated.codec
        self.payload_type = negotiated.payload_type
        pt = negotiated.dtmf_payload_type
        if pt is None:
            self.dtmf = None
        elif self.dtmf is None or self.dtmf.payload_type != pt:
            self.dtmf = DtmfReceiver(pt)
        self.set_remote(negotiated.remote, negotiated.remote_rtcp)

    def set_remote(self, rtp: Address | None, rtcp: Address | None = None) -> None:
        """The party's SDP address (IP literals only: ``ValueError`` otherwise)."""
        if rtp is None:
            return
        rtp = (_ip_literal(rtp[0]), int(rtp[1]))
        if rtcp is not None:
            rtcp = (_ip_literal(rtcp[0]), int(rtcp[1]))
        if self.expected is not None and self.expected != rtp:
            self.latched = self.latched_rtcp = None
        self.expected = rtp
        self.expected_rtcp = rtcp or (rtp[0], rtp[1] + 1)

    @property
    def remote(self) -> Address | None:
        return self.latched or self.expected

    def player(self, *, dtmf_payload_type: int | None = -1) -> Player:
        """A player sending from this endpoint's socket on its (shared) stream."""
        dpt = (self.dtmf.payload_type if self.dtmf else None) if dtmf_payload_type == -1 \
            else dtmf_payload_type
        return Player(self.send, codec=self.codec, payload_type=self.payload_type,
                      stream=self.stream, dtmf_payload_type=dpt)

    # ---- I/O -----------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        dest = self.latched or self.expected
        if dest is None or self.closed:
            return False
        try:
            self._rtp.sendto(data, dest)
            return True
        except OSError:  # buffer full, unreachable: media is loss-tolerant
            self.send_drops += 1
            return False

    def _latch(self, addr: Any, now: float, rtcp: bool) -> bool:
        latched = self.latched_rtcp if rtcp else self.latched
        if addr == latched:
            return True
        expected = self.expected_rtcp if rtcp else self.expected
        if latched is not None and now - self._last_rx < self.relatch_after and addr != expected:
            self.foreign += 1
            return False
        if rtcp:
            self.latched_rtcp = addr
        else:
            self.latched = addr
        return True

    def _on_rtcp(self, data: memoryview, addr: Any, now: float) -> None:
        if self._latch(addr, now, True):
            self.rtcp_packets += 1
            self.last_packet = now

    def _on_rtp(self, data: memoryview, addr: Any, now: float) -> None:
        if is_rtcp(data):  # rtcp-mux
            self._on_rtcp(data, addr, now)
            return
        if not self._latch(addr, now, False):
            return
        try:
            packet = parse_rtp_untrusted(data)
        except BadMessage:
            self.bad_packets += 1
            return
        self._last_rx = self.last_packet = now
        self.stats.update(packet.sequence, packet.timestamp, now, packet.ssrc,
                          packet.payload_type, len(data))
        dtmf = self.dtmf
        if dtmf is not None:
            for d in dtmf.feed(packet, now) or dtmf.expire(now, DTMF_EXPIRE):
                self.inject_digit(d)
        for consumer in self.consumers:
            consumer(packet, now)

    def inject_digit(self, digit: DtmfDigit) -> None:
        """A digit from elsewhere (SIP INFO) joins the RFC 4733 ones."""
        try:
            self._digit_send.send_nowait(digit)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.digits_dropped += 1

    def idle_seconds(self, now: float | None = None) -> float:
        now = trio.current_time() if now is None else now
        return now - self.last_packet

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self._rtp, self._rtcp):
            self.io.unregister(sock)
            sock.close()
        self.pool.release(self.rtp_port)
        self._digit_send.close()

    def __enter__(self) -> MediaEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


