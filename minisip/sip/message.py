"""SIP requests and responses: header text kept as received, structure parsed on demand.

A message holds its ``Headers`` (text) and ``body`` (bytes). The structured views
(``vias``, ``cseq``, ``from_addr``...) are parsed the first time they are read and
cached in ``headers.cache``; any change made through the ``Headers`` API clears that
cache, so a view never disagrees with the text that will be sent. The views read
wire data, so they raise ``BadMessage`` (never anything else) on bad content.
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

from .digits import digits_untrusted, is_digits
from .errors import BadMessage
from .headers import Headers
from .status import reason_phrase
from .tokens import random_hex
from .uri import (
    URI,
    Address,
    Via,
    parse_address_untrusted,
    parse_addresses_untrusted,
    parse_uri_untrusted,
    parse_via_untrusted,
)

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 8.1.1.7
MAX_CSEQ = 2**32 - 1
MAX_EXPIRES = 2**32 - 1  # RFC 3261 20.19: larger values mean this

HeaderInput = Headers | Iterable[tuple[str, str]] | None


def _headers(h: HeaderInput) -> Headers:
    if isinstance(h, Headers):
        return h
    return Headers(h)


def _digits_untrusted(v: str, what: str, limit: int | None = None) -> int:
    v = v.strip()
    if not is_digits(v):
        raise BadMessage(f"Bad {what} header")
    if limit is not None and len(v) > 10:
        return limit  # clamp without converting a huge string
    return int(v)


def parse_cseq_untrusted(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise BadMessage("Bad CSeq header")
    num, method = parts
    n = digits_untrusted(num, "CSeq header")
    if n > MAX_CSEQ:
        raise BadMessage("Bad CSeq header: number too large")
    return n, method


# The views, as functions of a header's values (None: absent), shared with the parser.

def call_id_view_untrusted(values: list[str] | None) -> str:
    if not values:
        raise BadMessage("Missing Call-ID")
    if len(values) > 1:
        raise BadMessage("Multiple Call-ID headers")
    v = values[0].strip()
    if not v or " " in v or "\t" in v:
        raise BadMessage("Bad Call-ID header")
    return v


def cseq_view_untrusted(values: list[str] | None) -> tuple[int, str]:
    if not values:
        raise BadMessage("Missing CSeq")
    if len(values) > 1:
        raise BadMessage("Multiple CSeq headers")
    return parse_cseq_untrusted(values[0])


def vias_view_untrusted(values: list[str] | None) -> list[Via]:
    if not values:
        return []
    if len(values) == 1:
        return parse_via_untrusted(values[0])
    out: list[Via] = []
    for v in values:
        out += parse_via_untrusted(v)
    return out


def address_view_untrusted(values: list[str] | None, label: str) -> Address:
    if not values:
        raise BadMessage(f"Missing {label}")
    if len(values) > 1:
        raise BadMessage(f"Multiple {label} headers")
    try:
        return parse_address_untrusted(values[0])
    except BadMessage:
        raise BadMessage(f"Bad {label} header") from None


def max_forwards_view_untrusted(values: list[str] | None) -> int | None:
    if not values:
        return None
    if len(values) > 1:
        raise BadMessage("Multiple Max-Forwards headers")
    v = values[0]
    n = digits_untrusted(v, "Max-Forwards header")
    if n > 255:
        raise BadMessage("Bad Max-Forwards header")
    return n


def contacts_view_untrusted(values: list[str] | None) -> list[Address]:
    out: list[Address] = []
    try:
        for v in values or ():
            if v != "*":
                out += parse_addresses_untrusted(v)
    except BadMessage:
        raise BadMessage("Bad Contact header") from None
    return out


class Message:
    """What requests and responses share: headers, body and the lazy header views."""

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    # -- views: parsed on first use, cached in headers.cache ---------------------------
    @property
    def call_id(self) -> str:
        c = self.headers.cache
        v = c.get("call-id")
        if v is None:
            v = c["call-id"] = call_id_view_untrusted(self.headers._idx().get("call-id"))
        return v

    @property
    def cseq(self) -> tuple[int, str]:
        c = self.headers.cache
        v = c.get("cseq")
        if v is None:
            v = c["cseq"] = cseq_view_untrusted(self.headers._idx().get("cseq"))
        return v

    @property
    def vias(self) -> list[Via]:
        c = self.headers.cache
        v = c.get("vias")
        if v is None:
            v = c["vias"] = vias_view_untrusted(self.headers._idx().get("via"))
        return v

    # The views below are read several times per message by every layer: they look in
    # the cache first instead of going through the view property (a call less each).
    @property
    def top_via(self) -> Via:
        vias = self.headers.cache.get("vias") or self.vias
        if not vias:
            raise BadMessage("Missing Via")
        return vias[0]

    @property
    def branch(self) -> str | None:
        return self.top_via.params.get("branch")

    @property
    def from_addr(self) -> Address:
        c = self.headers.cache
        v = c.get("from")
        if v is None:
            v = c["from"] = address_view_untrusted(self.headers._idx().get("from"), "From")
        return v

    @property
    def to_addr(self) -> Address:
        c = self.headers.cache
        v = c.get("to")
        if v is None:
            v = c["to"] = address_view_untrusted(self.headers._idx().get("to"), "To")
        return v

    @property
    def from_tag(self) -> str | None:
        return (self.headers.cache.get("from") or self.from_addr).params.get("tag")

    @property
    def to_tag(self) -> str | None:
        return (self.headers.cache.get("to") or self.to_addr).params.get("tag")

    @property
    def max_forwards(self) -> int | None:
        return max_forwards_view_untrusted(self.headers._idx().get("max-forwards"))

    @property
    def contacts(self) -> list[Address]:
        """Contact addresses (a ``*`` is not one: see ``contact_star``)."""
        c = self.headers.cache
        v = c.get("contacts")
        if v is None:
            v = c["contacts"] = contacts_view_untrusted(self.headers._idx().get("contact"))
        return v

    @property
    def contact_star(self) -> bool:
        return any(v == "*" for v in self.headers.values("contact"))

    @property
    def expires(self) -> int | None:
        v = self.headers.get("expires")
        return None if v is None else _digits_untrusted(v, "Expires", MAX_EXPIRES)

    @property
    def content_type(self) -> str | None:
        v = self.headers.get("content-type")
        return None if v is None else v.strip()

    @property
    def mime_type(self) -> str | None:
        """``type/subtype`` of the body, lower case, without parameters."""
        v = self.headers.get("content-type")
        return None if v is None else v.partition(";")[0].strip().lower()

    def compact(self) -> None:
        """Keep the text only (see ``Headers.compact``): views are parsed again on use."""
        self.headers.compact()

    # -- serialization -------------------------------------------------------------
    @abstractmethod  # (for the type checker only: an ABC metaclass slows isinstance 3x)
    def start_line(self) -> str:
        """The request line or the status line."""

    def to_bytes(self) -> bytes:
        body = self.body
        lines = self.headers.lines(len(body))
        lines.insert(0, self.start_line())
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    __slots__ = ("_ruri", "method", "uri")

    def __init__(self, method: str, uri: str, headers: HeaderInput = None,
                 body: bytes = b"") -> None:
        self.method = method
        self.uri = uri  #: the Request-URI text as received (or as set)
        self.headers = _headers(headers)
        self.body = body
        self.version = SIP_VERSION
        self._ruri: tuple[str, URI] | None = None

    @property
    def request_uri(self) -> URI:
        """The parsed Request-URI; BadMessage(416) for schemes other than sip/sips/tel."""
        cached = self._ruri
        if cached is not None and cached[0] is self.uri:
            return cached[1]
        uri = parse_uri_untrusted(self.uri)
        if uri.opaque is not None:
            raise BadMessage("Unsupported URI Scheme", 416)
        self._ruri = (self.uri, uri)
        return uri

    def compact(self) -> None:
        super().compact()
        self._ruri = None

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str | None = None, headers: HeaderInput = None,
                 body: bytes = b"") -> None:
        self.status = int(status)
        self.reason = reason_phrase(status) if reason is None else reason
        self.headers = _headers(headers)
        self.body = body
        self.version = SIP_VERSION

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def unechoed(self) -> bytes:
        """These bytes without the lines echoed from the request (Via, From, Call-ID and
        CSeq; RFC 3261 8.2.6.2): what a non-INVITE server transaction keeps for Timer J's
        32 s, about half of a 200 to a BYE or a REGISTER. ``echoed`` puts them back
        from a retransmission of the request."""
        body = self.body
        lines = self.headers.lines(len(body), _RESPONSE_COPY)
        lines.insert(0, self.start_line())
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


#: what a response echoes of its request as is (To too, but it may add a tag)
_RESPONSE_COPY = frozenset({"via", "from", "call-id", "cseq"})
_SHARED_VIEWS = ("vias", "from", "call-id", "cseq")


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None,
                  headers: Iterable[tuple[str, str]] = ()) -> Response:
    """RFC 3261 8.2.6.2: a response echoing Via, From, To, Call-ID and CSeq as text.

    Copied lines keep their bytes; only a To without a tag is rewritten (``to_tag``).
    """
    items: list[Any] = []
    for e in request.headers._items:
        c = e[1]
        if c in _RESPONSE_COPY:
            items.append(e)
        elif c == "to":
            if to_tag is not None and "tag" not in request.to_addr.params:
                items.append((e[0], c, f"{e[2]};tag={to_tag}", None))
            else:
                items.append(e)
    h = Headers(headers)
    h._items[:0] = items
    # The echoed lines are the request's text, so its parsed views hold for them too:
    # the transaction layer keys the response without parsing its Via again.
    src = request.headers.cache
    for key in _SHARED_VIEWS:
        view = src.get(key)
        if view is not None:
            h.cache[key] = view
    return Response(status, reason, h)


def echoed(kept: bytes, request: Request) -> bytes:
    """A response kept by ``Response.unechoed``, whole again: the lines ``request`` (a
    retransmission of its request) echoes go back in, in its order, with the kept To
    (the first line after the status line, as ``make_response`` puts the echo first)
    where the request has its own: the bytes that were sent the first time."""
    start, _, rest = kept.partition(b"\r\n")
    to, _, rest = rest.partition(b"\r\n")
    parts = [start]
    for n, c, v, raw in request.headers._items:
        if c in _RESPONSE_COPY:
            parts.append((raw or f"{n}: {v}").encode("utf-8", "surrogateescape"))
        elif c == "to":
            parts.append(to)
            to = b""
    if to:  # (a request without a To is refused before it has a transaction)
        parts.append(to)
    parts.append(rest)
    return b"\r\n".join(parts)


# -- identifiers -----------------------------------------------------------------------

def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits."""
    return BRANCH_MAGIC + random_hex(8)


def new_tag() -> str:
    return random_hex(5)


def new_call_id() -> str:
    return random_hex(15)
