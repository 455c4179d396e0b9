"""The one SDP model under fuzz: parse raises only BadMessage, and a parsed description's
views and edits never raise (they were validated at parse time).

Inputs: seeds (a phone's offer, ours, RFC 4566 examples, the crash inputs of issue 8)
mutated by byte flips, truncations, insertions of SDP-significant text and
duplications; and arbitrary bytes after ``v=0``.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisip.media.sdp_media import answer_offer_untrusted, negotiated_from_answer_untrusted
from minisip.pbx.media import sdp_address, sdp_audio, sdp_on_hold
from minisip.sip.errors import BadMessage
from minisip.sip.sdp import SessionDescription, parse_sdp_untrusted, rewrite_for_relay_untrusted
from tests.fuzz.mutations import mutated

SEEDS = [
    (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\ns=-\r\n"
     b"c=IN IP4 192.168.1.20\r\nt=0 0\r\na=ice-ufrag:abcd\r\nm=audio 49170 RTP/AVP 8 0 101\r\n"
     b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
     b"a=fmtp:101 0-15\r\na=rtcp:49171 IN IP4 192.168.1.20\r\n"
     b"a=candidate:1 1 UDP 2130706431 192.168.1.20 49170 typ host\r\na=ptime:20\r\n"
     b"a=sendrecv\r\n"),
    (b"v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nt=0 0\r\na=sendonly\r\n"
     b"m=audio 4000/2 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\na=rtcp-mux\r\n"
     b"m=video 0 RTP/AVP 96\r\nc=IN IP4 224.2.1.1/127/3\r\na=rtpmap:96 H264/90000\r\n"),
    (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
     b"m=audio 5000 RTP/AVP 0 8\r\na=inactive\r\n"),
    # issue 8's crash inputs: non-ASCII digits where numbers belong
    b"v=0\r\no=- 1 \xc2\xb2 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=ptime:\xc2\xb2\r\na=rtpmap:\xc2\xb2 PCMU/8000\r\n",
    b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio \xc2\xb20000 RTP/AVP 0\r\n",
]
INSERTS = [b"\r\n", b" ", b":", b"/", b"=", b"0", b"\xc2\xb2", b"\xd9\xa3", b"-1", b"99999999",
           b"m=audio 1 RTP/AVP 0\r\n", b"c=IN IP6 ::\r\n", b"a=rtcp:", b"a=rtpmap:",
           b"a=sendonly\r\n", b"\x00", b"\xff", b"IN IP4 "]




def views(sd: SessionDescription) -> None:
    """Every accessor of a parsed description: none may raise."""
    _ = (sd.connection, sd.origin, sd.attributes, sd.direction, sd.on_hold, sd.audio())
    for m in sd.media:
        _ = (m.kind, m.port, m.proto, m.formats, m.attributes, m.connection,
             m.effective_connection, m.connection_address, m.rtpmap, m.fmtp, m.direction,
             m.rtcp, m.ptime, m.rtcp_mux, m.on_hold, m.rtp_address, m.rtcp_target,
             m.event_payload_type())
        for pt in m.payload_types():
            m.encoding(pt)


def exercise(body: bytes) -> None:
    try:
        sd = parse_sdp_untrusted(body)
    except BadMessage:
        sd = None
    if sd is not None:
        views(sd)
        sd.bump_version()
        sd.set_origin_address("2001:db8::9")
        again = parse_sdp_untrusted(sd.to_bytes())  # what we edit still parses
        views(again)
    for reader in (lambda: rewrite_for_relay_untrusted(body, "203.0.113.1", [30000]),
                   lambda: answer_offer_untrusted(body, "10.0.0.1", 20000, session_id=1),
                   lambda: negotiated_from_answer_untrusted(body)):
        try:
            out = reader()
        except BadMessage:
            continue
        if isinstance(out, bytes):  # the relay's rewrite parses back, and is the relay's
            views(parse_sdp_untrusted(out))
    # the PBX's own readers swallow bad SDP entirely
    sdp_audio(body), sdp_address(body), sdp_on_hold(body)


FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(mutated(SEEDS, INSERTS))
def test_mutated_sdp_parses_or_raises_bad_message_and_views_never_raise(body: bytes) -> None:
    exercise(body)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_sdp_lines_raise_only_bad_message(data: bytes) -> None:
    exercise(b"v=0\r\n" + data)


def test_every_seed_truncated_at_every_byte() -> None:
    for seed in SEEDS:
        for i in range(len(seed) + 1):
            exercise(seed[:i])
