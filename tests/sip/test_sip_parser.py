"""The datagram parser, table-driven: what it accepts (and what it sees), what it rejects and how."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response
from minisip.sip.parser import parse_message_untrusted

VIA = "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport"
BASE = {
    "via": VIA,
    "from": "From: <sip:100@pbx.example.com>;tag=1928301774",
    "to": "To: <sip:100@pbx.example.com>",
    "call-id": "Call-ID: a84b4c76e66710@192.0.2.10",
    "cseq": "CSeq: 2 REGISTER",
    "max-forwards": "Max-Forwards: 70",
}


def msg(*extra: str, start: str = "REGISTER sip:pbx.example.com SIP/2.0", body: bytes = b"",
        drop: tuple[str, ...] = (), replace: dict[str, str] | None = None,
        length: bool = True) -> bytes:
    """A request: the BASE headers (minus ``drop``, with ``replace``), then ``extra`` lines."""
    base = dict(BASE, **(replace or {}))
    lines = [start] + [v for k, v in base.items() if k not in drop] + list(extra)
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


Check = dict[str, Any]  # attribute path (dotted, [i] allowed through a lambda) -> expected


def _get(m: Request | Response, path: str | Callable[[Any], Any]) -> Any:
    if callable(path):
        return path(m)
    obj: Any = m
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


ACCEPT: list[tuple[str, bytes, list[tuple[Any, Any]]]] = [
    ("typical REGISTER", msg(), [
        ("method", "REGISTER"), ("uri", "sip:pbx.example.com"), ("call_id", "a84b4c76e66710@192.0.2.10"),
        ("cseq", (2, "REGISTER")), ("branch", "z9hG4bK776asdhds"), ("top_via.rport", ""),
        ("top_via.host", "192.0.2.10"), ("top_via.port", 5062), ("top_via.transport", "UDP"),
        ("from_tag", "1928301774"), ("to_tag", None), ("max_forwards", 70), ("body", b""),
        ("request_uri.host", "pbx.example.com"), ("expires", None), ("contacts", [])]),
    ("compact forms", (b"REGISTER sip:pbx SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bKx\r\n"
     b"f: <sip:a@pbx>;tag=1\r\nt: sip:a@pbx\r\ni: cid\r\nCSeq: 1 REGISTER\r\n"
     b"m: <sip:a@192.0.2.1>\r\nl: 0\r\nk: path, gruu\r\nc: text/plain\r\n\r\n"), [
        ("call_id", "cid"), ("top_via.transport", "TCP"), ("from_tag", "1"),
        (lambda m: str(m.contacts[0].uri), "sip:a@192.0.2.1"),
        (lambda m: m.headers.values("Supported"), ["path", "gruu"]),
        ("content_type", "text/plain"), (lambda m: m.headers.get("Content-Length"), "0")]),
    ("header names are case-insensitive", msg("cOnTaCt: <sip:a@h>", "EXPIRES: 60"), [
        (lambda m: m.headers.get("CONTACT"), "<sip:a@h>"), ("expires", 60),
        (lambda m: "contact" in m.headers, True)]),
    ("several values on one line and over lines", msg(
        "Contact: <sip:a@h1>;q=0.5, \"A, B\" <sip:b@h2>;expires=30", "Contact: sip:c@h3;expires=10",
        "Allow: INVITE, ACK,BYE", "Allow: OPTIONS"), [
        (lambda m: [str(c.uri) for c in m.contacts], ["sip:a@h1", "sip:b@h2", "sip:c@h3"]),
        (lambda m: m.contacts[1].display_name, "A, B"),
        (lambda m: m.contacts[2].params, {"expires": "10"}),
        (lambda m: m.headers.values("allow"), ["INVITE", "ACK", "BYE", "OPTIONS"])]),
    ("two Vias on one line", msg(replace={"via": (
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP "
        "[2001:db8::10]:5070;branch=z9hG4bK2;received=192.0.2.1")}), [
        (lambda m: [v.host for v in m.vias], ["a.example.com", "2001:db8::10"]),
        (lambda m: m.vias[1].port, 5070), (lambda m: m.vias[1].received, "192.0.2.1")]),
    ("header folding", msg("Subject: first\r\n  second\r\n\tthird"), [
        (lambda m: m.headers.get("subject"), "first second third")]),
    ("folded mandatory header", msg("CSeq: 2\r\n REGISTER", drop=("cseq",)), [
        ("cseq", (2, "REGISTER"))]),
    ("name-addr with quoted display name and params", msg(
        replace={"from": 'From: "Alice \\"A\\" Smith" <sip:alice@example.com;transport=tcp>;tag=88'}), [
        ("from_addr.display_name", 'Alice "A" Smith'), ("from_addr.uri.params", {"transport": "tcp"}),
        ("from_tag", "88")]),
    ("addr-spec: params after a bare URI belong to the header", msg(
        replace={"from": "From: sip:alice@example.com;tag=77;transport=udp"}), [
        ("from_tag", "77"), ("from_addr.uri.params", {}),
        ("from_addr.params", {"tag": "77", "transport": "udp"})]),
    ("unquoted display name", msg(replace={"to": "To: Bob Smith<sip:bob@example.com>"}), [
        ("to_addr.display_name", "Bob Smith")]),
    ("escaped user in URI", msg(start="INVITE sip:I%20have%20spaces%40x@example.net SIP/2.0",
                                replace={"cseq": "CSeq: 1 INVITE"}), [
        ("request_uri.user", "I have spaces@x"),
        (lambda m: str(m.request_uri), "sip:I%20have%20spaces%40x@example.net")]),
    ("IPv6 reference with port", msg(start="OPTIONS sip:100@[2001:DB8::10]:5070;transport=tcp SIP/2.0",
                                     replace={"cseq": "CSeq: 9 OPTIONS"}), [
        ("request_uri.host", "2001:db8::10"), ("request_uri.port", 5070),
        ("request_uri.transport", "tcp"),
        (lambda m: str(m.request_uri), "sip:100@[2001:db8::10]:5070;transport=tcp")]),
    ("sips Request-URI", msg(start="REGISTER sips:pbx.example.com:5061 SIP/2.0"), [
        ("request_uri.scheme", "sips"), ("request_uri.port", 5061)]),
    ("tel Request-URI", msg(start="INVITE tel:+1-201-555-0123;phone-context=example.com SIP/2.0",
                            replace={"cseq": "CSeq: 1 INVITE"}), [
        ("request_uri.scheme", "tel"), ("request_uri.user", "+1-201-555-0123"),
        ("request_uri.host", ""), ("request_uri.params", {"phone-context": "example.com"})]),
    ("URI with password and headers", msg(
        "Contact: <sip:user:secret@h.example.com;lr?subject=hi&priority=urgent>"), [
        (lambda m: m.contacts[0].uri.password, "secret"),
        (lambda m: m.contacts[0].uri.headers, {"subject": "hi", "priority": "urgent"})]),
    ("body with Content-Length", msg("Content-Type: application/sdp",
                                     start="INVITE sip:b@h SIP/2.0", body=b"v=0\r\n",
                                     replace={"cseq": "CSeq: 1 INVITE"}), [
        ("body", b"v=0\r\n"), ("mime_type", "application/sdp")]),
    ("datagram bytes beyond Content-Length are dropped", msg(body=b"abc") + b"trailing junk", [
        ("body", b"abc")]),
    ("no Content-Length over UDP: body runs to the end", msg(length=False) + b"hello", [
        ("body", b"hello")]),
    ("leading CRLFs are skipped", b"\r\n\r\n" + msg(), [("method", "REGISTER")]),
    ("bare LF line ends", msg().replace(b"\r\n", b"\n"), [("cseq", (2, "REGISTER"))]),
    ("non-UTF-8 bytes are kept", msg().replace(b"Max-", b"User-Agent: caf\xc3\xa9 \xff\r\nMax-"), [
        (lambda m: m.headers.get("user-agent"), "caf\xe9 \udcff"),
        (lambda m: m.headers.get("user-agent").encode("utf-8", "surrogateescape"),
         b"caf\xc3\xa9 \xff")]),
    ("Contact star", msg("Contact: *", "Expires: 0"), [("contact_star", True), ("contacts", []),
                                                       ("expires", 0)]),
    ("huge Expires is clamped", msg("Expires: 99999999999999999999"), [("expires", 2**32 - 1)]),
    ("spaces around colons and in the start line", msg(
        "Contact  :  <sip:a@h> ;  expires = 60").replace(
        b"REGISTER sip:pbx.example.com SIP/2.0", b"REGISTER  sip:pbx.example.com SIP/2.0 "), [
        (lambda m: m.contacts[0].params, {"expires": "60"})]),
    ("unknown URI scheme in the Request-URI parses (416 is the caller's)", msg(
        start="OPTIONS urn:service:sos SIP/2.0", replace={"cseq": "CSeq: 1 OPTIONS"}), [
        ("uri", "urn:service:sos")]),
    ("unknown method", msg(start="FOO sip:a@b SIP/2.0", replace={"cseq": "CSeq: 1 FOO"}), [
        ("method", "FOO")]),
    ("response", b"SIP/2.0 180 Ringing\r\n" + b"\r\n".join(
        v.encode() for v in BASE.values()) + b"\r\nContent-Length: 0\r\n\r\n", [
        ("status", 180), ("reason", "Ringing"), ("branch", "z9hG4bK776asdhds")]),
    ("response with empty reason", b"SIP/2.0 100 \r\n" + b"\r\n".join(
        v.encode() for v in BASE.values()) + b"\r\n\r\n", [("status", 100), ("reason", "")]),
]


@pytest.mark.parametrize(("name", "data", "checks"), ACCEPT, ids=[c[0] for c in ACCEPT])
def test_parser_accepts_and_reads(name: str, data: bytes, checks: list[tuple[Any, Any]]) -> None:
    m = parse_message_untrusted(data)
    for path, expected in checks:
        assert _get(m, path) == expected, path


REJECT: list[tuple[str, bytes, int | None, str]] = [
    ("garbage", b"hello world\r\n\r\n", 400, "request line"),
    ("empty", b"\r\n\r\n", None, "Empty"),
    ("SIP/3.0 request", msg(start="REGISTER sip:pbx SIP/3.0"), 505, "Version"),
    ("HTTP request line", msg(start="GET / HTTP/1.1"), 400, "Request"),
    ("missing version", msg(start="REGISTER sip:pbx"), 400, "request line"),
    ("embedded LWS in Request-URI", msg(start="INVITE sip:a@b; lr SIP/2.0"), 400, "request line"),
    ("<> around Request-URI", msg(start="REGISTER <sip:pbx> SIP/2.0"), 400, "Request-URI"),
    ("Request-URI that does not parse", msg(start="REGISTER sip:user@[::1 SIP/2.0"), 400,
     "Request-URI"),
    ("bad method token", msg(start="REG(IS)TER sip:pbx SIP/2.0"), 400, "method"),
    ("header line without colon", msg("This is not a header"), 400, "without colon"),
    ("bad header name", msg("Bad Name: x"), 400, "header name"),
    ("folding before any header", b"REGISTER sip:pbx SIP/2.0\r\n x: y\r\n" + msg()[25:], 400,
     "folding"),
    ("Content-Length larger than body", msg("Content-Length: 10", length=False) + b"abc",
     400, "exceeds body"),
    ("negative Content-Length", msg("Content-Length: -1", length=False), 400,
     "Content-Length"),
    ("two Content-Lengths", msg("Content-Length: 0"), 400, "Multiple Content-Length"),
    ("missing Via", msg(drop=("via",)), 400, "Missing Via"),
    ("missing From", msg(drop=("from",)), 400, "Missing From"),
    ("missing To", msg(drop=("to",)), 400, "Missing To"),
    ("missing Call-ID", msg(drop=("call-id",)), 400, "Missing Call-ID"),
    ("missing CSeq", msg(drop=("cseq",)), 400, "Missing CSeq"),
    ("two To headers", msg("To: <sip:x@y>"), 400, "Multiple To"),
    ("two Call-IDs", msg("i: other"), 400, "Multiple Call-ID"),
    ("CSeq method mismatch", msg(replace={"cseq": "CSeq: 2 INVITE"}), 400, "does not match"),
    ("CSeq number too large", msg(replace={"cseq": "CSeq: 4294967296 REGISTER"}), 400, "CSeq"),
    ("CSeq not a number", msg(replace={"cseq": "CSeq: two REGISTER"}), 400, "CSeq"),
    ("CSeq without method", msg(replace={"cseq": "CSeq: 2"}), 400, "CSeq"),
    ("empty Via params", msg(replace={"via": "Via: SIP/2.0/UDP h:5060;;,;,,"}), 400, "Via"),
    ("Via without host", msg(replace={"via": "Via: SIP/2.0/UDP"}), 400, "Via"),
    ("Via with bad port", msg(replace={"via": "Via: SIP/2.0/UDP h:99999;branch=z9hG4bK1"}), 400,
     "Via"),
    ("Via of another protocol", msg(replace={"via": "Via: HTTP/1.1/TCP h"}), 400, "Via"),
    ("unterminated quote in To", msg(replace={"to": 'To: "Mr. J. User <sip:j@h>'}), 400, "Bad To"),
    ("To without closing >", msg(replace={"to": "To: <sip:j@h"}), 400, "Bad To"),
    ("From that is not an address", msg(replace={"from": "From: nobody;tag=1"}), 400, "Bad From"),
    ("Max-Forwards too big", msg(replace={"max-forwards": "Max-Forwards: 300"}), 400,
     "Max-Forwards"),
    ("response with bad code", msg(start="SIP/2.0 4294967301 Big"), None, "status"),
    ("response with 2-digit code", msg(start="SIP/2.0 99 Small"), None, "status"),
    ("response without Via", msg(start="SIP/2.0 200 OK", drop=("via",)), None, "Via"),
    ("response with huge CSeq", msg(
        start="SIP/2.0 200 OK", replace={"cseq": "CSeq: 92923948347723040233 OPTIONS"}), None, "CSeq"),
    ("response of another version", msg(start="SIP/3.0 200 OK"), None, "status line"),
]


@pytest.mark.parametrize(("name", "data", "status", "reason"), REJECT, ids=[c[0] for c in REJECT])
def test_parser_rejects_with_status_and_reason(name: str, data: bytes, status: int | None,
                                               reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse_message_untrusted(data)
    assert info.value.status == status
    assert reason.lower() in info.value.reason.lower()


def test_request_uri_of_unknown_scheme_raises_416() -> None:
    m = parse_message_untrusted(msg(start="OPTIONS urn:service:sos SIP/2.0",
                                    replace={"cseq": "CSeq: 1 OPTIONS"}))
    assert isinstance(m, Request)
    with pytest.raises(BadMessage) as info:
        m.request_uri  # noqa: B018
    assert info.value.status == 416


LAZY_ERRORS: list[tuple[str, bytes, Callable[[Any], Any], str]] = [
    ("bad Contact", msg("Contact: <sip:a@h>;;;"), lambda m: m.contacts, "Contact"),
    ("bad Expires", msg("Expires: soon"), lambda m: m.expires, "Expires"),
    ("bad Contact URI", msg("Contact: <sip:@>"), lambda m: m.contacts, "Contact"),
]


@pytest.mark.parametrize(("name", "data", "read", "reason"), LAZY_ERRORS,
                         ids=[c[0] for c in LAZY_ERRORS])
def test_lazy_views_raise_bad_message(name: str, data: bytes, read: Callable[[Any], Any],
                                      reason: str) -> None:
    m = parse_message_untrusted(data)
    with pytest.raises(BadMessage, match=reason):
        read(m)


ROUND_TRIP = [c[1] for c in ACCEPT if c[0] not in (
    "header folding", "folded mandatory header", "datagram bytes beyond Content-Length are dropped",
    "no Content-Length over UDP: body runs to the end", "leading CRLFs are skipped",
    "bare LF line ends", "spaces around colons and in the start line",
    "response with empty reason")]  # (that one has no Content-Length: one is added)


@pytest.mark.parametrize("data", ROUND_TRIP)
def test_unchanged_message_serializes_to_identical_bytes(data: bytes) -> None:
    m = parse_message_untrusted(data)
    m.vias, m.from_addr, m.to_addr  # noqa: B018 - parsing views must not change the text
    assert m.to_bytes() == data


def test_odd_spacing_in_a_header_line_survives_a_round_trip() -> None:
    data = msg("Subject  :   hello   ", "X-Odd:\tvalue")
    assert parse_message_untrusted(data).to_bytes() == data


def test_content_length_is_rewritten_in_place_with_the_real_length() -> None:
    m = parse_message_untrusted(msg("l: 0", length=False) + b"")
    m.body = b"hello"
    out = m.to_bytes()
    assert b"\r\nl: 5\r\n" in out and out.endswith(b"\r\n\r\nhello")
    assert out.count(b"Content-Length") == 0
