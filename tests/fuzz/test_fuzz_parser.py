"""Untrusted input can only raise BadMessage: parser, lazy views, framer, SDP, digest, URIs.

Inputs: arbitrary bytes, valid messages (ours and RFC 4475's) mutated by byte flips,
truncations and insertions, and all of them fed to the StreamFramer whole, in
random chunks and byte by byte.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisip.sip.digest import DigestAuthenticator, parse_credentials_untrusted
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response, make_response
from minisip.sip.parser import PING, StreamFramer, parse_message_untrusted
from minisip.sip.sdp import parse_sdp_untrusted
from minisip.sip.uri import parse_address_untrusted, parse_uri_untrusted, parse_via_untrusted
from tests.fuzz.mutations import mutated

TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "rfc4475"
PLACEHOLDERS = {b"{HOST}": b"127.0.0.1", b"{PORT}": b"5060", b"{LHOST}": b"127.0.0.1",
                b"{LPORT}": b"5070"}

OURS = [
    (b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:100@pbx.example.com>\r\n"
    b"From: \"Desk\" <sip:100@pbx.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\nCSeq: 2 REGISTER\r\n"
    b"Contact: <sip:100@[2001:db8::10]:5062;transport=udp>;expires=3600, sip:x@h;q=0.5\r\n"
    b"Authorization: Digest username=\"100\", realm=\"minisip\", nonce=\"abc\", uri=\"sip:pbx\", "
    b"response=\"00\", algorithm=SHA-256, cnonce=\"c\", qop=auth, nc=00000001\r\n"
    b"Expires: 3600\r\nContent-Length: 0\r\n\r\n"),
    (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 58\r\n\r\nv=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\n"),
]


def _torture() -> list[bytes]:
    if not (TORTURE / "cases.json").exists():
        return []
    out = []
    for name in sorted(json.loads((TORTURE / "cases.json").read_text())):
        data = (TORTURE / f"{name}.sip").read_bytes()
        for k, v in PLACEHOLDERS.items():
            data = data.replace(k, v)
        out.append(data)
    return out


SEEDS = OURS + _torture()
VIEWS = ("call_id", "cseq", "vias", "top_via", "branch", "from_addr", "to_addr", "from_tag",
         "to_tag", "max_forwards", "contacts", "contact_star", "expires", "content_type",
         "mime_type", "request_uri")
AUTH = DigestAuthenticator("minisip", secret=b"k" * 32)


def only_bad_message(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BadMessage as exc:
        assert exc.status is None or 400 <= exc.status < 600
        return None


def exercise(data: bytes) -> None:
    """Parse, then touch every view, then what the layers above do with a message."""
    m = only_bad_message(lambda: parse_message_untrusted(data))
    if m is None:
        return
    assert isinstance(m, (Request, Response))
    for view in VIEWS:
        only_bad_message(lambda view=view: getattr(m, view, None))
    for c in only_bad_message(lambda: m.contacts) or ():
        str(c)
    for v in only_bad_message(lambda: m.vias) or ():
        str(v)
    for value in m.headers.get_all("authorization"):
        creds = only_bad_message(lambda value=value: parse_credentials_untrusted(value))
        if creds is not None:
            AUTH.verify(creds, "REGISTER", "pw", 0.0)
    if m.body:
        only_bad_message(lambda: parse_sdp_untrusted(m.body))
    out = m.to_bytes()
    assert isinstance(out, bytes)
    if isinstance(m, Request):
        assert make_response(m, 400, to_tag="t").to_bytes()
        # What we send must parse back as what we parsed (if it parsed at all).
        again = parse_message_untrusted(out)
        assert isinstance(again, Request) and again.method == m.method


def frame(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    pieces, last = [], 0
    for c in sorted(set(cuts)):
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    try:
        for piece in pieces:
            framer.feed(piece)
            while (msg := framer.next_message()) is not None:
                if msg is not PING:
                    exercise(msg)
    except BadMessage:
        pass  # the connection would be closed


INSERTS = [b"\r\n", b" ", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"@", b"\x00",
           b"\xff", b"\r\n ", b"[", b"]", b"=", b"SIP/2.0", b"99999999999", b"\r\n\r\n"]


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_bad_message(data: bytes) -> None:
    exercise(data)
    exercise(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    exercise(b"SIP/2.0 200 OK\r\n" + data)


@FUZZ
@given(mutated(SEEDS, INSERTS))
def test_mutated_messages_raise_only_bad_message(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(mutated(SEEDS, INSERTS), st.lists(st.integers(0, 2000), max_size=12))
def test_framer_on_mutated_streams_raises_only_bad_message(data: bytes, cuts: list[int]) -> None:
    frame(b"\r\n\r\n" + data + data + b"\r\n", cuts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_header_value_parsers_raise_only_bad_message(text: str) -> None:
    for fn in (parse_uri_untrusted, parse_address_untrusted, parse_via_untrusted,
               parse_credentials_untrusted):
        only_bad_message(lambda: fn(text))  # noqa: B023


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_sdp_raises_only_bad_message(data: bytes) -> None:
    sd = only_bad_message(lambda: parse_sdp_untrusted(b"v=0\r\n" + data))
    if sd is not None:
        for m in sd.media:
            _ = (m.kind, m.port, m.proto, m.formats, m.rtpmap, m.direction, m.rtcp, m.connection)
        assert sd.to_bytes() == b"v=0\r\n" + data


def test_every_seed_truncated_at_every_byte() -> None:
    for data in SEEDS:
        for i in range(0, len(data), 3):
            exercise(data[:i])


def test_every_seed_framed_whole_and_byte_by_byte() -> None:
    for data in SEEDS:
        frame(data + data, [])
        frame(data, list(range(len(data))))
