"""SDP (RFC 4566): minisip's one SDP model. Parse, inspect, rewrite, serialize.

A description is its lines, in order, each kept as (type, value, line ending):
the session part, then one block per ``m=`` line. Unknown lines stay where they
were, so an untouched description serializes to the bytes it came from. The
accessors parse the few lines a PBX reads (``o=``, ``c=``, ``m=``, ``a=rtpmap``,
``a=fmtp``, direction, ``a=rtcp``, ``a=ptime``) into typed values; the setters
rewrite just those lines. ``rewrite_for_relay_untrusted`` is the media relay's
edit (``c=``, ``o=``, the ``m=`` ports, ``a=rtcp``, ICE dropped);
``minisip.media.sdp_media`` builds offer/answer for minisip's own endpoint on
top of this model.

Everything is validated at parse time, so the accessors of a parsed
description never raise; the parser raises only ``BadMessage``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .digits import is_digits
from .errors import BadMessage

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP_LINES = 2000
MAX_SDP = 65536
TELEPHONE_EVENT = "telephone-event"
#: RFC 3551 static payload types minisip knows without an rtpmap: pt -> (name, clock rate)
STATIC_PT = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
#: ICE would lead the peers around the relay: these attributes are dropped on rewrite
_ICE_ATTRIBUTES = frozenset(("candidate", "ice-ufrag", "ice-pwd", "ice-options",
                             "remote-candidates", "end-of-candidates", "ice-lite", "ice-mismatch"))


def _is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def is_unspecified(addr: str) -> bool:
    """0.0.0.0 or :: (RFC 2543 hold, or "no address yet")."""
    return addr in ("0.0.0.0", "::", "0:0:0:0:0:0:0:0")


def _payload_type(text: str) -> int | None:
    return int(text) if is_digits(text) and len(text) <= 3 and int(text) <= 127 else None


class Line:
    __slots__ = ("eol", "type", "value")

    def __init__(self, type: str, value: str, eol: str = "\r\n") -> None:
        self.type = type  #: one letter ('' for a blank line kept as is)
        self.value = value
        self.eol = eol

    def text(self) -> str:
        return f"{self.type}={self.value}{self.eol}" if self.type else self.eol

    def __repr__(self) -> str:
        return f"Line({self.type!r}, {self.value!r})"


@dataclass(frozen=True, slots=True)
class Connection:
    nettype: str  #: 'IN'
    addrtype: str  #: 'IP4' or 'IP6'
    address: str  #: without any /ttl/count suffix
    suffix: str = ""  #: '/127/3' style multicast suffix, as received

    @classmethod
    def parse_untrusted(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise BadMessage("Bad SDP c= line")
        addr, slash, suffix = parts[2].partition("/")
        if not addr:
            raise BadMessage("Bad SDP c= line")
        return cls(parts[0], parts[1], addr, slash + suffix)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _attributes(lines: list[Line]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for ln in lines:
        if ln.type == "a":
            name, colon, value = ln.value.partition(":")
            out.append((name, value if colon else None))
    return out


def _direction(lines: list[Line]) -> str | None:
    for ln in lines:
        if ln.type == "a" and ln.value in DIRECTIONS:
            return ln.value
    return None


class Media:
    """One ``m=`` block: its m= line first, then its i/c/b/k/a lines."""

    __slots__ = ("_session", "lines")

    def __init__(self, lines: list[Line], session: SessionDescription | None = None) -> None:
        self.lines = lines
        self._session = session
        self._fields()  # validate now: accessors then cannot fail

    def _fields(self) -> list[str]:
        parts = self.lines[0].value.split()
        if len(parts) < 3:
            raise BadMessage("Bad SDP m= line")
        port, _, count = parts[1].partition("/")
        if not is_digits(port) or len(port) > 5 or int(port) > 65535 or (
                count and not is_digits(count)):
            raise BadMessage("Bad SDP m= line: port")
        return parts

    @property
    def kind(self) -> str:
        """'audio', 'video', 'application', ..."""
        return self._fields()[0]

    @property
    def port(self) -> int:
        return int(self._fields()[1].partition("/")[0])

    @port.setter
    def port(self, port: int) -> None:
        parts = self._fields()
        _, slash, count = parts[1].partition("/")
        parts[1] = f"{port}{slash}{count}"
        self.lines[0].value = " ".join(parts)

    @property
    def proto(self) -> str:
        return self._fields()[2]

    @property
    def formats(self) -> list[str]:
        return self._fields()[3:]

    @property
    def attributes(self) -> list[tuple[str, str | None]]:
        return _attributes(self.lines)

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` ('' for a flag), or None."""
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    @property
    def connection(self) -> Connection | None:
        """This media's own ``c=`` (see ``effective_connection`` for the fallback)."""
        for ln in self.lines:
            if ln.type == "c":
                return Connection.parse_untrusted(ln.value)
        return None

    @property
    def effective_connection(self) -> Connection | None:
        c = self.connection
        if c is None and self._session is not None:
            return self._session.connection
        return c

    def set_connection_address(self, address: str) -> None:
        """Rewrite (or add, after the m= line and any i=) this media's c= line."""
        _set_connection(self.lines, address, first_allowed=1)

    @property
    def connection_address(self) -> str | None:
        """The effective connection address (this media's c=, else the session's)."""
        c = self.effective_connection
        return c.address if c is not None else None

    @property
    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate) from well-formed a=rtpmap lines."""
        out: dict[int, tuple[str, int]] = {}
        for n, v in self.attributes:
            if n == "rtpmap" and v:
                pt_text, _, enc = v.partition(" ")
                parts = enc.strip().split("/")
                pt = _payload_type(pt_text)
                if pt is not None and len(parts) >= 2 and is_digits(parts[1]) \
                        and len(parts[1]) <= 9:
                    out[pt] = (parts[0], int(parts[1]))
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        """Payload type -> format parameters from a=fmtp lines."""
        out: dict[int, str] = {}
        for n, v in self.attributes:
            if n == "fmtp" and v:
                pt_text, _, params = v.partition(" ")
                pt = _payload_type(pt_text)
                if pt is not None:
                    out[pt] = params.strip()
        return out

    def payload_types(self) -> list[int]:
        """The m= line's formats that are RTP payload types, in the offerer's order."""
        return [pt for pt in map(_payload_type, self.formats) if pt is not None]

    def encoding(self, pt: int) -> tuple[str, int] | None:
        """(NAME, clock rate) of ``pt`` from rtpmap, or the static table; the name is upper
        case, except ``telephone-event``."""
        rtpmap = self.rtpmap
        if pt in rtpmap:
            name, rate = rtpmap[pt]
            return (TELEPHONE_EVENT if name.lower() == TELEPHONE_EVENT else name.upper()), rate
        return STATIC_PT.get(pt)

    def event_payload_type(self) -> int | None:
        """The telephone-event (RFC 4733) payload type at 8000 Hz offered here, or None."""
        for pt in self.payload_types():
            if self.encoding(pt) == (TELEPHONE_EVENT, 8000):
                return pt
        return None

    @property
    def ptime(self) -> int | None:
        v = (self.attribute("ptime") or "").strip()
        return int(v) if is_digits(v) and len(v) <= 4 else None

    @property
    def rtcp_mux(self) -> bool:
        return self.attribute("rtcp-mux") is not None

    @property
    def on_hold(self) -> bool:
        """sendonly/inactive, or the old c=0.0.0.0 hold."""
        addr = self.connection_address
        return self.direction in ("sendonly", "inactive") or (
            addr is not None and is_unspecified(addr))

    @property
    def rtp_address(self) -> tuple[str, int] | None:
        """Where to send RTP, or None (stream rejected, c=0.0.0.0 hold, or not an IP literal:
        a host name here would cost a blocking DNS look-up per packet)."""
        addr = self.connection_address
        if self.port == 0 or addr is None or is_unspecified(addr) or not _is_ip(addr):
            return None
        return addr, self.port

    @property
    def rtcp_target(self) -> tuple[str, int] | None:
        """Where to send RTCP: RTP's address with a=rtcp-mux, else a=rtcp, else RTP + 1."""
        rtp = self.rtp_address
        if rtp is None:
            return None
        if self.rtcp_mux:
            return rtp
        rtcp = self.rtcp
        if rtcp is None:
            return rtp[0], rtp[1] + 1
        addr = rtcp[1].address if rtcp[1] is not None and _is_ip(rtcp[1].address) else rtp[0]
        return addr, rtcp[0]

    @property
    def direction(self) -> str:
        """Media-level direction, else session-level, else 'sendrecv' (RFC 4566 6)."""
        d = _direction(self.lines)
        if d is None and self._session is not None:
            d = _direction(self._session.lines)
        return d or "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in DIRECTIONS:
            raise ValueError(f"not an SDP direction: {value!r}")
        for ln in self.lines:
            if ln.type == "a" and ln.value in DIRECTIONS:
                ln.value = value
                return
        self.lines.append(Line("a", value, self.lines[0].eol))

    @property
    def rtcp(self) -> tuple[int, Connection | None] | None:
        """RFC 3605 ``a=rtcp:port [IN IP4 addr]``."""
        v = self.attribute("rtcp")
        if v is None:
            return None
        parts = v.split(maxsplit=1)
        if not parts or not is_digits(parts[0]) or len(parts[0]) > 5 or int(parts[0]) > 65535:
            raise BadMessage("Bad SDP a=rtcp")
        conn = Connection.parse_untrusted(parts[1]) if len(parts) > 1 else None
        return int(parts[0]), conn

    def set_rtcp(self, port: int, address: str | None = None) -> None:
        """Rewrite an existing a=rtcp (a relay keeps the 'port+1' default when there is none)."""
        value = f"rtcp:{port}" if address is None else \
            f"rtcp:{port} IN {_addrtype(address)} {address}"
        for ln in self.lines:
            if ln.type == "a" and (ln.value == "rtcp" or ln.value.startswith("rtcp:")):
                ln.value = value
                return
        self.lines.append(Line("a", value, self.lines[0].eol))

    def remove_attribute(self, name: str) -> int:
        before = len(self.lines)
        self.lines = [ln for ln in self.lines if not (
            ln.type == "a" and ln.value.partition(":")[0] == name)]
        return before - len(self.lines)

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.lines.append(Line("a", name if value is None else f"{name}:{value}",
                               self.lines[0].eol))

    def add_payload_type(self, pt: int, encoding: str, fmtp: str | None = None) -> None:
        """Offer one more format: ``pt`` on the m= line, its a=rtpmap (and a=fmtp)."""
        parts = self._fields()
        self.lines[0].value = " ".join([*parts, str(pt)])
        self.add_attribute("rtpmap", f"{pt} {encoding}")
        if fmtp is not None:
            self.add_attribute("fmtp", f"{pt} {fmtp}")


def _set_connection(lines: list[Line], address: str, first_allowed: int) -> None:
    for ln in lines:
        if ln.type == "c":
            old = Connection.parse_untrusted(ln.value)
            ln.value = f"{old.nettype} {_addrtype(address)} {address}{old.suffix}"
            return
    # RFC 4566 5: c= comes after v o s i u e p; for media after m and i.
    pos = first_allowed
    order = "vosiuep" if first_allowed == 0 else "mi"
    while pos < len(lines) and lines[pos].type in order:
        pos += 1
    eol = lines[0].eol if lines else "\r\n"
    lines.insert(pos, Line("c", f"IN {_addrtype(address)} {address}", eol))


class SessionDescription:
    __slots__ = ("lines", "media")

    def __init__(self, lines: list[Line] | None = None, media: list[Media] | None = None) -> None:
        self.lines = lines if lines is not None else []  #: session-level lines
        self.media = media if media is not None else []
        for m in self.media:
            m._session = self

    @property
    def connection(self) -> Connection | None:
        for ln in self.lines:
            if ln.type == "c":
                return Connection.parse_untrusted(ln.value)
        return None

    def set_connection_address(self, address: str, *, media: bool = True) -> None:
        """Rewrite the session c= (and, by default, every media's own c=)."""
        _set_connection(self.lines, address, first_allowed=0)
        if media:
            for m in self.media:
                if m.connection is not None:
                    m.set_connection_address(address)

    @property
    def origin(self) -> str | None:
        for ln in self.lines:
            if ln.type == "o":
                return ln.value
        return None

    def set_origin_address(self, address: str) -> None:
        """Rewrite the o= line's address type and address (RFC 4566 5.2), if well formed."""
        for ln in self.lines:
            if ln.type == "o":
                parts = ln.value.split()
                if len(parts) == 6:
                    parts[4:6] = [_addrtype(address), address]
                    ln.value = " ".join(parts)
                return

    def audio(self) -> Media | None:
        """The first audio stream not rejected (port 0), or None."""
        for m in self.media:
            if m.kind == "audio" and m.port != 0:
                return m
        return None

    @property
    def on_hold(self) -> bool:
        a = self.audio()
        return a is not None and a.on_hold

    @property
    def attributes(self) -> list[tuple[str, str | None]]:
        return _attributes(self.lines)

    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, if any."""
        return _direction(self.lines)

    def bump_version(self) -> None:
        """Increment the o= session version (RFC 3264 8: a changed offer must)."""
        for ln in self.lines:
            if ln.type == "o":
                parts = ln.value.split()
                if len(parts) == 6 and is_digits(parts[2]):
                    parts[2] = str(int(parts[2]) + 1)
                    ln.value = " ".join(parts)
                return

    def to_bytes(self) -> bytes:
        out = [ln.text() for ln in self.lines]
        for m in self.media:
            out += [ln.text() for ln in m.lines]
        return "".join(out).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def parse_sdp_untrusted(body: bytes) -> SessionDescription:
    """An SDP body. Lines must be ``x=...``; blank lines are kept; v= must come first."""
    if len(body) > MAX_SDP:
        raise BadMessage("SDP body too large")
    raw = bytes(body).splitlines(keepends=True)
    if len(raw) > MAX_SDP_LINES:
        raise BadMessage("SDP too long")
    session: list[Line] = []
    blocks: list[list[Line]] = []
    current = session
    for chunk in raw:
        content = chunk.rstrip(b"\r\n")
        eol = chunk[len(content):].decode("ascii")
        text = content.decode("utf-8", "surrogateescape")
        if not text:
            current.append(Line("", "", eol))
            continue
        if len(text) < 2 or text[1] != "=" or not ("a" <= text[0] <= "z"):
            raise BadMessage("Bad SDP line")
        ln = Line(text[0], text[2:], eol)
        if ln.type == "m":
            current = [ln]
            blocks.append(current)
        else:
            current.append(ln)
    first = next((ln for ln in session if ln.type), None)
    if first is None or first.type != "v":
        raise BadMessage("SDP does not start with v=")
    sd = SessionDescription(session, [])
    sd.media = [Media(b, sd) for b in blocks]
    # Validate the lines the accessors parse, so later reads cannot fail.
    sd.connection  # noqa: B018
    for m in sd.media:
        m.connection  # noqa: B018
        m.rtcp  # noqa: B018
    return sd


def rewrite_for_relay_untrusted(body: bytes, address: str, ports: list[int]) -> bytes:
    """Point an SDP at a media relay: ``address`` in o= and c= lines, ``ports[i]`` in the
    i-th m= line.

    What it keeps, on purpose: c=0.0.0.0 (old-style hold must still read as
    hold), m= port 0 (a rejected stream stays rejected), every other line byte
    for byte. m= lines beyond ``len(ports)`` get port 0: nothing would relay
    them. An existing a=rtcp becomes the relay's RTP+1 (with the address when
    the original named one); ICE attributes are dropped, since they would lead
    the peers around the relay. The o= address follows the relay's, so a party
    of the other address family reads an SDP of its own family (RFC 4566 5.2);
    the o= version is the party's own and moves when the party's does.
    """
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"relay address must be an IP address: {address!r}") from None
    sd = parse_sdp_untrusted(body)
    sd.set_origin_address(address)
    sc = sd.connection
    if sc is not None and not is_unspecified(sc.address):
        sd.set_connection_address(address, media=False)
    sd.lines = [ln for ln in sd.lines if not _is_ice(ln)]
    for i, m in enumerate(sd.media):
        port = ports[i] if i < len(ports) and m.port != 0 else 0
        m.port = port
        mc = m.connection
        if mc is not None and not is_unspecified(mc.address):
            m.set_connection_address(address)
        rtcp = m.rtcp
        if rtcp is not None:
            if port == 0:
                m.remove_attribute("rtcp")
            else:
                m.set_rtcp(port + 1, address if rtcp[1] is not None else None)
        m.lines = [ln for ln in m.lines if not _is_ice(ln)]
    return sd.to_bytes()


def _is_ice(line: Line) -> bool:
    return line.type == "a" and line.value.partition(":")[0] in _ICE_ATTRIBUTES
