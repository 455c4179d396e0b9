"""Bytes to messages: one datagram at a time, or a byte stream framed by Content-Length.

Theory of operation: the head (start line and header lines) is decoded once with
``surrogateescape`` and split into lines; each header line is partitioned at its
first colon into (name, value) text. Nothing else is parsed up front except what
a server must check before it can answer at all (RFC 3261 8.2 and 18.3): the start
line, the mandatory headers and their syntax (Via, From, To, Call-ID, CSeq), the
CSeq method, Content-Length against the body. Those views are cached on the
message, so the layers above get them for free; everything else stays text
until somebody asks.

A request that fails raises ``BadMessage(reason, status)`` so the caller can
answer it; a bad response raises ``BadMessage(reason, None)``: it is dropped.
"""
from __future__ import annotations

import re
from typing import Final

from .digits import digits_untrusted, is_digits
from .errors import BadMessage
from .headers import _WIRE_NAMES, Entry, Headers, wire_name_untrusted
from .message import (
    SIP_VERSION,
    Request,
    Response,
    address_view_untrusted,
    call_id_view_untrusted,
    cseq_view_untrusted,
    max_forwards_view_untrusted,
    vias_view_untrusted,
)

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_VERSION = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)
_KNOWN_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS",
                            "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER",
                            "MESSAGE", "UPDATE"})
_MANDATORY: Final = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"),
                     ("cseq", "CSeq"))
_URI_SCHEMES = frozenset({"sip", "sips", "tel"})

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


def _split_head_untrusted(data: bytes) -> tuple[list[str], bytes]:
    """(lines of the head, the bytes after the blank line)."""
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 7.5: CRLFs before the start line are ignored
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
        rest = data[end + 4:]
    else:
        # Liberal: bare-LF senders, or a datagram with no blank line after the headers.
        end = data.find(b"\n\n")
        if end >= 0:
            text = data[:end].decode("utf-8", "surrogateescape")
            rest = data[end + 2:]
        else:
            text = data.decode("utf-8", "surrogateescape").rstrip("\r\n")
            rest = b""
        lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if not lines[0]:
        raise BadMessage("Empty message", None)
    return lines, rest


def _unfold_untrusted(lines: list[str]) -> list[str]:
    """RFC 3261 7.3.1: a line starting with SP/HT continues the previous one."""
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and line:
            if len(out) == 1:
                raise BadMessage("Bad header folding")
            out[-1] = out[-1].rstrip(" \t") + " " + line.lstrip(" \t")
        else:
            out.append(line)
    return out


class _Folded(Exception):
    pass


def _parse_headers_untrusted(lines: list[str]) -> Headers:
    try:
        return _header_lines_untrusted(lines)
    except _Folded:
        pass
    try:
        return _header_lines_untrusted(_unfold_untrusted(lines))
    except _Folded:  # a continuation of an empty line: nothing sane to fold onto
        raise BadMessage("Bad header folding") from None


def _header_lines_untrusted(lines: list[str]) -> Headers:
    items: list[Entry] = []
    index: dict[str, list[str]] = {}
    known = _WIRE_NAMES
    for line in lines[1:]:
        raw_name, sep, value = line.partition(":")
        # Cached names were validated when first seen and never start with a blank.
        hit = known.get(raw_name) if sep else None
        if hit is None:
            if line[:1] in (" ", "\t") and line:
                raise _Folded  # rare: only then pay for unfolding
            if not sep:
                raise BadMessage("Header line without colon")
            hit = wire_name_untrusted(raw_name)
        canon = hit[1]
        value = value.strip(" \t")
        items.append((hit[0], canon, value, line))
        lst = index.get(canon)
        if lst is None:
            index[canon] = [value]
        else:
            lst.append(value)
    return Headers._from_wire(items, index)


def _body_untrusted(headers: Headers, rest: bytes) -> bytes:
    """The body per Content-Length; a datagram's extra bytes are dropped (RFC 3261 18.3)."""
    cls = headers._idx().get("content-length")
    if cls is None:
        return rest  # over UDP Content-Length is optional: the body runs to the end
    if len(cls) > 1:
        raise BadMessage("Multiple Content-Length headers")
    v = cls[0]
    n = digits_untrusted(v, "Content-Length header", max_len=9)
    if n > len(rest):
        raise BadMessage("Content-Length exceeds body")
    return rest if n == len(rest) else rest[:n]


def parse_message_untrusted(data: bytes) -> Request | Response:
    """One datagram (or one message cut out by ``StreamFramer``) into a Request or Response."""
    lines, rest = _split_head_untrusted(data)
    first = lines[0]
    if first[:4] == "SIP/":
        try:
            return _parse_response_untrusted(first, lines, rest)
        except BadMessage as exc:
            raise BadMessage(exc.reason, None) from None
    return _parse_request_untrusted(first, lines, rest)


def _parse_request_untrusted(first: str, lines: list[str], rest: bytes) -> Request:
    parts = first.split(" ")
    if len(parts) != 3:
        parts = first.split()  # liberal: extra spaces (RFC 4475 lwsstart, trws)
        if len(parts) != 3:
            raise BadMessage("Bad request line")
    method, uri, version = parts
    if method not in _KNOWN_METHODS and not _TOKEN.fullmatch(method):
        raise BadMessage("Bad request method")
    if version != SIP_VERSION:
        if not _VERSION.fullmatch(version):
            raise BadMessage("Bad request line")
        if version.upper() != SIP_VERSION:
            raise BadMessage("Version Not Supported", 505)
        version = SIP_VERSION
    scheme, colon, opaque = uri.partition(":")
    if not colon or not opaque or not _SCHEME.fullmatch(scheme):
        raise BadMessage("Bad Request-URI")
    headers = _parse_headers_untrusted(lines)
    req = Request(method, uri, headers, _body_untrusted(headers, rest))
    req.version = version
    if scheme.lower() in _URI_SCHEMES:
        try:
            req.request_uri  # noqa: B018 - parse and cache now: 400 if it is bad
        except BadMessage:
            raise BadMessage("Bad Request-URI") from None
    # RFC 3261 8.2: what a server checks before it can answer at all.
    idx = headers._index
    assert idx is not None
    cache = headers.cache
    vias = idx.get("via")
    if not vias:
        raise BadMessage("Missing Via")
    cache["vias"] = vias_view_untrusted(vias)
    cache["from"] = address_view_untrusted(idx.get("from"), "From")
    cache["to"] = address_view_untrusted(idx.get("to"), "To")
    cache["call-id"] = call_id_view_untrusted(idx.get("call-id"))
    cseq = cache["cseq"] = cseq_view_untrusted(idx.get("cseq"))
    if cseq[1] != method:
        raise BadMessage("CSeq method does not match")
    mf = idx.get("max-forwards")
    if mf is not None:
        max_forwards_view_untrusted(mf)
    return req


def _parse_response_untrusted(first: str, lines: list[str], rest: bytes) -> Response:
    version, _, tail = first.partition(" ")
    code, _, reason = tail.partition(" ")
    if version.upper() != SIP_VERSION:
        raise BadMessage("Bad status line")
    if len(code) != 3 or not is_digits(code) or code[0] not in "123456":
        raise BadMessage("Bad status code")
    headers = _parse_headers_untrusted(lines)
    resp = Response(int(code), reason, headers, _body_untrusted(headers, rest))
    # What the transaction layer matches on must be sound; the rest stays lazy.
    idx = headers._idx()
    for key, label in _MANDATORY:
        if key not in idx:
            raise BadMessage(f"Missing {label}")
    resp.top_via  # noqa: B018
    resp.cseq  # noqa: B018
    resp.call_id  # noqa: B018
    return resp


# -- streams (TCP, TLS) -------------------------------------------------------------------

#: Returned by ``StreamFramer.next_message()`` for an RFC 5626 CRLFCRLF keep-alive ping.
PING: Final[bytes] = b"\r\n\r\n"

_CL_NAMES = (b"content-length", b"l")


class StreamFramer:
    """Cuts a byte stream into messages by Content-Length (RFC 3261 18.3).

    Between messages a CRLFCRLF is a keep-alive ping (``PING`` is returned so the
    transport answers a CRLF pong) and a lone CRLF a pong (skipped). A message
    without Content-Length, or bigger than the limits, loses the framing:
    ``BadMessage`` is raised and the connection should be closed.
    """

    __slots__ = ("_buf", "_need", "_scan", "max_body", "max_header", "pings")

    def __init__(self, max_header: int = MAX_HEADER_BYTES,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the search for the blank line resumes
        self._need = -1  # total length of the message at the front, once known
        self.pings = 0
        self.max_header = max_header
        self.max_body = max_body

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    @property
    def pending(self) -> bool:
        """True while part of a message (not just keep-alive CRLFs) is buffered."""
        buf = self._buf
        return bool(buf) and bool(buf.lstrip(b"\r\n"))

    def next_message(self) -> bytes | None:
        """One whole message, ``PING``, or None when more bytes are needed."""
        buf = self._buf
        if self._need < 0:
            while buf and buf[0] in (13, 10):  # CR, LF
                if buf[:4] == b"\r\n\r\n":
                    del buf[:4]
                    self.pings += 1
                    return PING
                if buf[:2] == b"\r\n":
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        return None  # a ping or a pong: the next bytes tell
                    del buf[:2]  # a pong
                elif buf[:1] == b"\r" and len(buf) == 1:
                    return None
                else:
                    del buf[:1]  # a stray LF or CR
            if not buf:
                return None
            end = buf.find(b"\r\n\r\n", self._scan)
            if end < 0:
                if len(buf) > self.max_header:
                    raise BadMessage("Message header too large", 513)
                self._scan = max(0, len(buf) - 3)
                return None
            if end > self.max_header:
                raise BadMessage("Message header too large", 513)
            self._scan = 0
            self._need = end + 4 + self._content_length_untrusted(bytes(buf[:end]))
        if len(buf) < self._need:
            return None
        msg = bytes(buf[:self._need])
        del buf[:self._need]
        self._need = -1
        return msg

    def _content_length_untrusted(self, head: bytes) -> int:
        found: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.strip(b" \t").lower() in _CL_NAMES:
                v = value.strip()
                if not v.isdigit() or len(v) > 9:  # bytes.isdigit(): ASCII only
                    raise BadMessage("Bad Content-Length header")
                n = int(v)
                if found is not None and found != n:
                    raise BadMessage("Multiple Content-Length headers")
                found = n
        if found is None:
            raise BadMessage("Missing Content-Length on a stream")
        if found > self.max_body:
            raise BadMessage("Message body too large", 513)
        return found
