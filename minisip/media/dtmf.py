"""DTMF as RFC 4733 telephone-events and as SIP INFO bodies (sans-IO).

Sender theory: one key press is one *event*. Every packet of it carries the
same RTP timestamp (the instant the key went down) and a growing duration; the
first has the marker bit; updates follow every packet interval; the last is
sent three times with the E bit and the final duration (RFC 4733 2.5.1.4), each
with a fresh sequence number, as RTP requires.

Receiver theory: an event is named by (SSRC, timestamp). It is reported once,
when its first end packet arrives; anything later for that name (redundant
ends, a late update) is ignored. If a new event starts while the previous one
never showed an end (all three lost), the previous one is reported then, and
``expire(now)`` reports one left hanging at the end of a call. Reordered
packets of an earlier event therefore can neither repeat a digit nor lose one.
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from ..sip.digits import digits_untrusted, is_digits
from ..sip.errors import BadMessage
from .rtp import RtpPacket, parse_rtp_untrusted

EVENT_DIGITS = "0123456789*#ABCD"
DIGIT_EVENTS = {d: i for i, d in enumerate(EVENT_DIGITS)}
FLASH_EVENT = 16
DEFAULT_PT = 101
DEFAULT_VOLUME = 10  # -10 dBm0
_PAYLOAD = struct.Struct("!BBH")


def digit_to_event(digit: str) -> int:
    try:
        return DIGIT_EVENTS[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r}") from None


def event_to_digit(event: int) -> str | None:
    return EVENT_DIGITS[event] if 0 <= event < len(EVENT_DIGITS) else None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int  #: in timestamp units (8 kHz: 160 = 20 ms)

    def to_bytes(self) -> bytes:
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F),
                             self.duration & 0xFFFF)


def parse_event_untrusted(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise BadMessage("telephone-event payload shorter than 4 bytes", None)
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key press as call control sees it, whatever it arrived as."""
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class EventPacket:
    """One RTP packet of an event, to be sent at ``offset`` seconds after the key went down."""
    offset: float
    marker: bool
    timestamp: int
    payload: bytes


def event_packets(digit: str, timestamp: int, duration_ms: int = 100, *,
                  volume: int = DEFAULT_VOLUME, clock_rate: int = 8000,
                  ptime: float = 0.020) -> list[EventPacket]:
    """The packets of one key press: start (marker), updates, then three end packets.

    Sequence numbers are the sender's to give (``RtpStream.packet``). The
    packets are due every ``ptime``; the three end packets too.
    """
    event = digit_to_event(digit)
    step = int(clock_rate * ptime)
    total = max(step, int(clock_rate * duration_ms / 1000))
    total = min(total, 0xFFFF)  # longer events would need segments (RFC 4733 2.5.2.3)
    packets = []
    duration = step
    n = 0
    while duration < total:
        packets.append(EventPacket(n * ptime, n == 0, timestamp,
                                   TelephoneEvent(event, False, volume, duration).to_bytes()))
        n += 1
        duration += step
    end = TelephoneEvent(event, True, volume, total).to_bytes()
    for i in range(3):
        packets.append(EventPacket((n + i) * ptime, n == 0 and i == 0, timestamp, end))
    return packets


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each reported exactly once."""

    def __init__(self, payload_type: int = DEFAULT_PT, clock_rate: int = 8000) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._done: deque[tuple[int, int]] = deque(maxlen=32)
        self._pending: tuple[tuple[int, int], TelephoneEvent] | None = None
        self._pending_since = 0.0

    def _report(self, key: tuple[int, int], ev: TelephoneEvent) -> DtmfDigit | None:
        self._done.append(key)
        if self._pending is not None and self._pending[0] == key:
            self._pending = None
        digit = event_to_digit(ev.event)
        if digit is None:
            return None
        return DtmfDigit(digit, ev.duration * 1000 // self.clock_rate)

    def feed(self, packet: RtpPacket, now: float = 0.0) -> list[DtmfDigit]:
        """Digits completed by this packet (usually none, or one); other PTs are ignored."""
        if packet.payload_type != self.payload_type:
            return []
        try:
            ev = parse_event_untrusted(packet.payload)
        except BadMessage:
            return []
        key = (packet.ssrc, packet.timestamp)
        if key in self._done:
            return []
        out: list[DtmfDigit] = []
        if self._pending is not None and self._pending[0] != key:
            # a new event began: the previous one lost all its end packets
            d = self._report(*self._pending)
            if d:
                out.append(d)
        if ev.end:
            d = self._report(key, ev)
            if d:
                out.append(d)
        else:
            self._pending = (key, ev)
            self._pending_since = now
        return out

    def tap_untrusted(self, data: memoryview, now: float) -> list[DtmfDigit] | None:
        """A relayed datagram: None when it is not one of our events (let it pass),
        else the digits it completes (a broken event packet completes none)."""
        if len(data) < 2 or (data[1] & 0x7F) != self.payload_type:
            return None
        try:
            return self.feed(parse_rtp_untrusted(bytes(data)), now)
        except BadMessage:
            return []

    def expire(self, now: float, after: float = 1.0) -> list[DtmfDigit]:
        """Report an event whose end never came, ``after`` seconds after its last packet."""
        if self._pending is not None and now - self._pending_since >= after:
            d = self._report(*self._pending)
            return [d] if d else []
        return []

    def get_timer(self, after: float = 1.0) -> float | None:
        return self._pending_since + after if self._pending is not None else None


# ---- SIP INFO ---------------------------------------------------------------------------

DTMF_RELAY = "application/dtmf-relay"
DTMF_PLAIN = "application/dtmf"


def parse_info_untrusted(content_type: str, body: bytes) -> DtmfDigit:
    """A SIP INFO body (application/dtmf-relay or application/dtmf) -> the digit.

    dtmf-relay is ``Signal=5\\r\\nDuration=160\\r\\n`` (Duration in ms; some
    phones use ``Signal= 5`` or bare LF); application/dtmf is the digit alone
    (or the event number, 10 for ``*``, 11 for ``#``).
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    try:
        text = bytes(body).decode("ascii")
    except UnicodeDecodeError:
        raise BadMessage("DTMF INFO body is not ASCII") from None
    if ctype == DTMF_RELAY:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k.strip().lower()] = v.strip()
        signal = fields.get("signal", "")
        digit = _signal_to_digit(signal)
        dur = fields.get("duration", "")
        duration = 250
        if dur:
            duration = digits_untrusted(dur, f"DTMF Duration {dur!r}", max_len=6)
        return DtmfDigit(digit, duration)
    if ctype == DTMF_PLAIN:
        return DtmfDigit(_signal_to_digit(text.strip()), 250)
    raise BadMessage(f"not a DTMF body: {ctype}", 415)


def _signal_to_digit(signal: str) -> str:
    if len(signal) == 1 and signal.upper() in DIGIT_EVENTS:
        return signal.upper()
    if is_digits(signal) and len(signal) <= 2 and event_to_digit(int(signal)) is not None:
        return event_to_digit(int(signal))  # type: ignore[return-value]
    raise BadMessage(f"bad DTMF Signal {signal!r}")


def make_info(digit: str, duration_ms: int = 250, *,
              content_type: str = DTMF_RELAY) -> tuple[str, bytes]:
    """(Content-Type, body) of a SIP INFO carrying one digit."""
    digit_to_event(digit)  # validates
    if content_type == DTMF_RELAY:
        return DTMF_RELAY, f"Signal={digit.upper()}\r\nDuration={int(duration_ms)}\r\n".encode()
    if content_type == DTMF_PLAIN:
        return DTMF_PLAIN, f"{digit.upper()}\r\n".encode()
    raise ValueError(f"unknown DTMF INFO content type {content_type}")


def info_to_events(content_type: str, body: bytes, timestamp: int, *,
                   clock_rate: int = 8000) -> list[EventPacket]:
    """INFO -> RFC 4733: the packets to send toward a party that wants telephone-events."""
    d = parse_info_untrusted(content_type, body)
    return event_packets(d.digit, timestamp, d.duration_ms, clock_rate=clock_rate)


def digit_to_info(d: DtmfDigit, *, content_type: str = DTMF_RELAY) -> tuple[str, bytes]:
    """RFC 4733 (as reported by ``DtmfReceiver``) -> INFO body toward a party that wants INFO."""
    return make_info(d.digit, d.duration_ms, content_type=content_type)
