"""Rule 4 for media: every ``_untrusted`` reader raises only BadMessage.

Fed whole, truncated at every byte, and with random byte flips (seeded, bounded).
"""
from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from minisip.media.dtmf import parse_event_untrusted, parse_info_untrusted
from minisip.media.rtp import RtpPacket, parse_rtp_untrusted
from minisip.media.sdp_media import answer_offer_untrusted, negotiated_from_answer_untrusted
from minisip.sip.errors import BadMessage
from minisip.sip.sdp import parse_sdp_untrusted, rewrite_for_relay_untrusted

SDP = (b"v=0\r\no=alice 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
       b"m=audio 49170/2 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\n"
       b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
       b"a=rtcp:49171 IN IP4 192.168.1.20\r\na=ptime:20\r\na=sendonly\r\n"
       b"m=video 5000 RTP/AVP 96\r\nc=IN IP6 ::1\r\na=rtcp-mux\r\n")
RTP = RtpPacket(101, 7, 8, 9, b"\x05\x8a\x00\xa0", marker=True, csrc=(1,),
                extension=(0xBEDE, b"abcd"), padding=2).to_bytes()
INFO = b"Signal=5\r\nDuration=160\r\n"

READERS: list[tuple[str, bytes, Callable[[bytes], object]]] = [
    ("rtp", RTP, parse_rtp_untrusted),
    ("telephone-event", RTP[-8:], parse_event_untrusted),
    ("info", INFO, lambda b: parse_info_untrusted("application/dtmf-relay", b)),
    ("sdp", SDP, parse_sdp_untrusted),
    ("rewrite", SDP, lambda b: rewrite_for_relay_untrusted(b, "203.0.113.1", [30000, 30002])),
    ("answer", SDP, lambda b: answer_offer_untrusted(b, "10.0.0.1", 20000, session_id=1)),
    ("negotiated", SDP, negotiated_from_answer_untrusted),
]


def mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = [data[:i] for i in range(len(data) + 1)]
    for _ in range(count):
        b = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(b))
            b[pos] = rnd.choice([0, 0xFF, 0x0A, 0x0D, 0x20, 0x3A, 0x2F, rnd.randrange(256)])
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("name,sample,reader", READERS, ids=[r[0] for r in READERS])
def test_untrusted_readers_raise_only_bad_message(name: str, sample: bytes,
                                                  reader: Callable[[bytes], object]) -> None:
    for data in mutations(sample, 400, seed=len(name)):
        try:
            reader(data)
        except BadMessage:
            pass
