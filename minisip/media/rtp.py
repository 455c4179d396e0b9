"""RTP packets and per-stream reception statistics (sans-IO).

Nothing here touches a socket or a clock: callers pass bytes in and arrival
times as arguments. ``parse_rtp_untrusted`` reads wire bytes and may raise only
``BadMessage``. ``StreamStats`` follows RFC 3550 appendix A.1 (extended
sequence numbers, expected/lost) and A.8 (interarrival jitter).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..sip.errors import BadMessage

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, seq, timestamp, SSRC
HEADER_SIZE = HEADER.size  # 12

#: RFC 3550 A.1 constants
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100

#: static payload types we understand; everything else is dynamic (SDP rtpmap)
PT_PCMU = 0
PT_PCMA = 8
PT_CN = 13
DEFAULT_CLOCK_RATE = 8000


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """True when a datagram is RTCP rather than RTP.

    RFC 5761 section 4: with RTP and RTCP on one port, the second byte tells
    them apart. RTCP packet types are 192..223 (SR 200, RR 201, SDES 202,
    BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207), which as an RTP
    marker+payload-type byte would be PT 64..95, which RTP must not use.
    """
    return len(data) >= 2 and (data[0] & 0xC0) == 0x80 and 192 <= data[1] <= 223


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    #: (profile-defined 16 bits, extension data whose length is a multiple of 4)
    extension: tuple[int, bytes] | None = None
    #: number of padding octets on the wire (0 = none); parse strips them
    padding: int = 0

    def to_bytes(self) -> bytes:
        b0 = 0x80 | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        parts = [HEADER.pack(b0, (0x80 if self.marker else 0) | self.payload_type,
                             self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                             self.ssrc & 0xFFFFFFFF)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4")
            parts.append(struct.pack("!HH", profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise ValueError("padding must be 1..255 octets")
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def make_rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int,
             payload: bytes, marker: bool = False) -> bytes:
    """Serialize the common case (no CSRC, extension or padding) in one call."""
    return HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF) + payload


def parse_rtp_untrusted(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP packet from the wire; raise ``BadMessage`` (status None) if it is not one."""
    n = len(data)
    if n < HEADER_SIZE:
        raise BadMessage(f"RTP packet too short ({n} bytes)", None)
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise BadMessage(f"RTP version {b0 >> 6}", None)
    if 192 <= b1 <= 223:
        raise BadMessage("RTCP packet, not RTP", None)
    cc = b0 & 0x0F
    pos = HEADER_SIZE + 4 * cc
    if pos > n:
        raise BadMessage("RTP CSRC list past the end", None)
    csrc = struct.unpack_from(f"!{cc}I", data, HEADER_SIZE) if cc else ()
    extension = None
    if b0 & 0x10:
        if pos + 4 > n:
            raise BadMessage("RTP extension header past the end", None)
        profile, words = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + 4 * words > n:
            raise BadMessage("RTP extension past the end", None)
        extension = (profile, bytes(data[pos:pos + 4 * words]))
        pos += 4 * words
    end = n
    padding = 0
    if b0 & 0x20:
        padding = data[n - 1]
        if padding == 0 or pos + padding > n:
            raise BadMessage(f"RTP padding count {padding} is invalid", None)
        end = n - padding
    return RtpPacket(payload_type=b1 & 0x7F, sequence=seq, timestamp=ts, ssrc=ssrc,
                     payload=bytes(data[pos:end]), marker=bool(b1 & 0x80),
                     csrc=tuple(csrc), extension=extension, padding=padding)


@dataclass(slots=True)
class StreamStats:
    """Reception statistics for the RTP arriving from one party (RFC 3550 A.1, A.8).

    ``update`` is on the relay's hot path: it takes the header fields already
    unpacked, not a parsed packet. Differences from the appendix, on purpose:

    * no probation: a relay counts from the first packet (latching, not the
      statistics, decides whom we accept);
    * a new SSRC (re-INVITE, music on hold switched in) starts a new source,
      but the totals of the earlier sources are kept so that per-leg figures
      cover the whole call;
    * jitter skips packets whose timestamp repeats the previous one (RFC 4733
      updates and redundant end packets share the event's start timestamp and
      would count as 20 ms of jitter each) and restarts its reference when the
      payload type changes.
    """

    clock_rate: int = DEFAULT_CLOCK_RATE
    packets: int = 0          #: every RTP packet taken into account, duplicates included
    bytes: int = 0            #: UDP payload octets of those packets
    # RFC 3550 A.1 per-source state
    ssrc: int | None = None
    max_seq: int = 0
    cycles: int = 0
    base_seq: int = 0
    bad_seq: int = RTP_SEQ_MOD + 1
    received: int = 0
    # earlier sources (SSRC changes or re-syncs), folded in
    _prior_expected: int = 0
    _prior_received: int = 0
    # RFC 3550 A.8
    transit: float | None = None
    jitter: float = 0.0       #: in timestamp units
    _last_ts: int = -1
    _last_pt: int = -1
    restarts: int = field(default=0)  #: sequence re-syncs after a big jump

    def _init_seq(self, seq: int) -> None:
        self._prior_expected += self._source_expected()
        self._prior_received += self.received
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0

    def _source_expected(self) -> int:
        if self.received == 0:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    def update(self, seq: int, timestamp: int, arrival: float, ssrc: int = 0,
               payload_type: int = 0, size: int = 0) -> bool:
        """Account for one packet; ``arrival`` in seconds. False if it was taken for a stray."""
        self.packets += 1
        self.bytes += size
        if ssrc != self.ssrc:
            self.ssrc = ssrc
            self._init_seq(seq)
            self.transit = None
        elif self.received:
            udelta = (seq - self.max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if seq < self.max_seq:  # wrapped
                    self.cycles += RTP_SEQ_MOD
                self.max_seq = seq
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                # a very large jump: believe it only if the next packet follows it
                if seq == self.bad_seq:
                    self.restarts += 1
                    self._init_seq(seq)
                else:
                    self.bad_seq = (seq + 1) & 0xFFFF
                    return False
            # else: duplicate or reordered packet, counted but max_seq unchanged
        else:
            self._init_seq(seq)
        self.received += 1
        # A.8 interarrival jitter
        if payload_type != self._last_pt:
            self._last_pt = payload_type
            self.transit = None
        if timestamp != self._last_ts:
            self._last_ts = timestamp
            transit = arrival * self.clock_rate - timestamp
            if self.transit is not None:
                d = transit - self.transit
                if d < 0:
                    d = -d
                if d < 1 << 30:  # a timestamp jump (new talk spurt base) is not jitter
                    self.jitter += (d - self.jitter) / 16.0
            self.transit = transit
        return True

    @property
    def expected(self) -> int:
        """Packets expected: extended highest sequence number - base + 1, over all sources."""
        return self._prior_expected + self._source_expected()

    @property
    def lost(self) -> int:
        """Cumulative packets lost (RFC 3550: may go negative with duplicates; clamped here)."""
        return max(0, self.expected - self._prior_received - self.received)

    @property
    def loss_fraction(self) -> float:
        exp = self.expected
        return self.lost / exp if exp else 0.0

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    def as_dict(self) -> dict[str, float | int]:
        return {"packets": self.packets, "bytes": self.bytes, "expected": self.expected,
                "lost": self.lost, "loss": round(self.loss_fraction, 6),
                "jitter_ms": round(self.jitter_ms, 3)}


class RtpStream:
    """What one of our senders puts on the wire: one SSRC, one sequence space, one clock.

    The player, the DTMF sender and music on hold for a call share one stream,
    so the far end sees a single continuous source. Timestamps follow the
    sampling clock: after a pause (between prompts, around a DTMF event) the
    next talk spurt starts at the timestamp the wall clock says, with the
    marker bit set (RFC 3550 5.1, RFC 3551 4.1).
    """

    def __init__(self, ssrc: int | None = None, sequence: int | None = None,
                 timestamp: int | None = None, clock_rate: int = DEFAULT_CLOCK_RATE) -> None:
        import secrets
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self.clock_rate = clock_rate
        self._last_time: float | None = None  #: wall time at which ``timestamp`` was current
        self._marker = True
        self.packets_sent = 0
        self.octets_sent = 0

    def packet(self, payload_type: int, payload: bytes, timestamp: int,
               marker: bool = False) -> bytes:
        """Serialize one packet with the next sequence number."""
        data = make_rtp(payload_type, self.sequence, timestamp, self.ssrc, payload, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data

    def timestamp_at(self, now: float) -> int:
        """The timestamp for a frame sampled at ``now``: never behind what was already sent."""
        if self._last_time is not None:
            ahead = round((now - self._last_time) * self.clock_rate)
            if ahead > 0:
                return (self.timestamp + ahead) & 0xFFFFFFFF
        return self.timestamp

    def start_talkspurt(self, now: float) -> None:
        """Call before the first frame after a pause: jump the clock, set the marker."""
        self.timestamp = self.timestamp_at(now)
        self._last_time = now
        self._marker = True

    def audio(self, payload_type: int, payload: bytes, now: float,
              samples: int | None = None) -> bytes:
        """The next audio frame (G.711: one octet per sample, so ``samples`` defaults to len)."""
        marker, self._marker = self._marker, False
        data = self.packet(payload_type, payload, self.timestamp, marker)
        n = len(payload) if samples is None else samples
        self.timestamp = (self.timestamp + n) & 0xFFFFFFFF
        # the new timestamp is the sampling instant of the next frame
        self._last_time = now + n / self.clock_rate
        return data

    def skip_to(self, timestamp: int, now: float) -> None:
        """After sending something at ``timestamp`` (a DTMF event), continue from there."""
        if ((timestamp - self.timestamp) & 0xFFFFFFFF) < 0x80000000:
            self.timestamp = timestamp & 0xFFFFFFFF
        self._last_time = now
        self._marker = True
