"""Micro-benchmark of the sans-IO SIP layer: CPU per message of a few typical kinds.

For each kind: parse, read the views the PBX reads (Via, From/To and tags, Call-ID,
CSeq, Contact, Request-URI, Max-Forwards, Content-Type), then for a request
``make_response`` and its ``to_bytes``, for a response its own ``to_bytes``. Every
message of a run has its own branch, tags and Call-ID (as on the wire: only the
users' URIs recur), so caches keyed by text see what they would see in service.

    .venv/bin/python bench/parse.py [--count 2000]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minisip.sip.message import Message, Request, make_response  # noqa: E402
from minisip.sip.parser import parse_message_untrusted  # noqa: E402

_SDP = (b"v=0\r\no=- 3912 3912 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")
_UA = ("User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
       "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, SUBSCRIBE, UPDATE\r\n")

# {n}: a per-message number (branch, tags, Call-ID); {cl}: Content-Length.
TEMPLATES: dict[str, tuple[str, bytes]] = {
    "REGISTER+auth": (
        "REGISTER sip:pbx.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{n}a;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:100@pbx.example.com>;tag={n}f\r\n"
        "To: \"Alice\" <sip:100@pbx.example.com>\r\n"
        "Call-ID: {n}c@192.0.2.10\r\nCSeq: 2 REGISTER\r\n"
        "Contact: <sip:100@192.0.2.10:5062;transport=udp>;expires=3600\r\n"
        "Authorization: Digest username=\"100\", realm=\"minisip\", nonce=\"{n}\", "
        "uri=\"sip:pbx.example.com\", response=\"9f86d081884c7d659a2feaa0c55ad015\", "
        "algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n"
        + _UA + "Expires: 3600\r\nContent-Length: {cl}\r\n\r\n", b""),
    "INVITE": (
        "INVITE sip:200@pbx.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{n}b;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:100@pbx.example.com>;tag={n}f\r\n"
        "To: <sip:200@pbx.example.com>\r\n"
        "Call-ID: {n}c@192.0.2.10\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:100@192.0.2.10:5062>\r\n" + _UA +
        "Supported: replaces, timer\r\nContent-Type: application/sdp\r\n"
        "Content-Length: {cl}\r\n\r\n", _SDP),
    "200": (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK{n}d;rport=5060\r\n"
        "From: <sip:100@pbx.example.com>;tag={n}e\r\n"
        "To: <sip:200@192.0.2.20:5064>;tag={n}t\r\n"
        "Call-ID: {n}d@203.0.113.5\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:200@192.0.2.20:5064>\r\n" + _UA +
        "Content-Type: application/sdp\r\nContent-Length: {cl}\r\n\r\n", _SDP),
    "ACK": (
        "ACK sip:203.0.113.5:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{n}k;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:100@pbx.example.com>;tag={n}f\r\n"
        "To: <sip:200@pbx.example.com>;tag={n}g\r\n"
        "Call-ID: {n}c@192.0.2.10\r\nCSeq: 1 ACK\r\nContent-Length: {cl}\r\n\r\n", b""),
    "BYE": (
        "BYE sip:203.0.113.5:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{n}y;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:100@pbx.example.com>;tag={n}f\r\n"
        "To: <sip:200@pbx.example.com>;tag={n}g\r\n"
        "Call-ID: {n}c@192.0.2.10\r\nCSeq: 2 BYE\r\n" + _UA +
        "Content-Length: {cl}\r\n\r\n", b""),
}


def messages(kind: str, count: int) -> list[bytes]:
    head, body = TEMPLATES[kind]
    return [head.format(n=f"{i:08x}", cl=len(body)).encode() + body for i in range(count)]


def views(msg: Message) -> None:
    """What the transaction layer and the PBX read of most messages."""
    msg.top_via.branch  # noqa: B018
    msg.from_tag  # noqa: B018
    msg.to_tag  # noqa: B018
    msg.from_addr.uri.user  # noqa: B018
    msg.to_addr.uri.user  # noqa: B018
    msg.call_id  # noqa: B018
    msg.cseq  # noqa: B018
    msg.contacts  # noqa: B018
    msg.mime_type  # noqa: B018
    if isinstance(msg, Request):
        msg.request_uri  # noqa: B018
        msg.max_forwards  # noqa: B018


def handle(data: bytes) -> bytes:
    msg = parse_message_untrusted(data)
    views(msg)
    if isinstance(msg, Request):
        if msg.method == "ACK":
            return b""
        return make_response(msg, 200, to_tag="as8d7f9").to_bytes()
    return msg.to_bytes()


def per_message(fn: Callable[[bytes], object], data: list[bytes]) -> float:
    """Best of 7 runs over ``data``, CPU seconds per message (load-independent)."""
    best = float("inf")
    for _ in range(7):
        t0 = time.process_time()
        for d in data:
            fn(d)
        best = min(best, time.process_time() - t0)
    return best / len(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    total = 0.0
    for kind in TEMPLATES:
        data = messages(kind, args.count)
        parse = per_message(parse_message_untrusted, data)
        full = per_message(handle, data)
        total += full
        print(f"{kind:14} parse {1e6 * parse:5.1f} us, with views, response, bytes "
              f"{1e6 * full:5.1f} us")
    print(f"{'sum':14} {1e6 * total:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
