"""SDP (RFC 4566): parse, inspect, rewrite addresses and ports, serialize.

A description is its lines, in order, each kept as (type, value, line ending):
the session part, then one block per ``m=`` line. Unknown lines stay where they
were, so an untouched description serializes to the bytes it came from. The
accessors parse the few lines a PBX reads (``c=``, ``m=``, ``a=rtpmap``,
direction, ``a=rtcp``); the setters rewrite just those lines (a media relay
changes ``c=``, the ``m=`` port and ``a=rtcp``).
"""
from __future__ import annotations

from dataclasses import dataclass

from .digits import is_digits
from .errors import BadMessage

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP_LINES = 2000


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
    def rtpmap(self) -> dict[str, str]:
        """Payload type -> 'encoding/clock[/channels]' from a=rtpmap lines."""
        out: dict[str, str] = {}
        for n, v in self.attributes:
            if n == "rtpmap" and v:
                pt, _, enc = v.partition(" ")
                out[pt] = enc.strip()
        return out

    @property
    def fmtp(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for n, v in self.attributes:
            if n == "fmtp" and v:
                pt, _, params = v.partition(" ")
                out[pt] = params.strip()
        return out

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
        if not parts or not is_digits(parts[0]) or len(parts[0]) > 5:
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

    __bytes__ = to_bytes


def parse_sdp_untrusted(body: bytes) -> SessionDescription:
    """An SDP body. Lines must be ``x=...``; blank lines are kept; v= must come first."""
    raw = body.splitlines(keepends=True)
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
