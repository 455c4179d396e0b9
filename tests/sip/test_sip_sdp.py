"""SDP: read what a PBX needs, rewrite what a relay changes, keep everything else byte for byte."""
from __future__ import annotations

import pytest

from minisip.sip.errors import BadMessage
from minisip.sip.sdp import Connection, parse_sdp_untrusted, rewrite_for_relay_untrusted

OFFER = (b"v=0\r\n"
         b"o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n"
         b"s=-\r\n"
         b"c=IN IP4 192.0.2.101\r\n"
         b"t=0 0\r\n"
         b"a=x-unknown:kept in place\r\n"
         b"m=audio 49170 RTP/AVP 0 8 101\r\n"
         b"a=rtpmap:0 PCMU/8000\r\n"
         b"a=rtpmap:8 PCMA/8000\r\n"
         b"a=rtpmap:101 telephone-event/8000\r\n"
         b"a=fmtp:101 0-16\r\n"
         b"a=rtcp:49171 IN IP4 192.0.2.101\r\n"
         b"a=sendonly\r\n"
         b"m=video 51372/2 RTP/AVP 31\r\n"
         b"i=camera\r\n"
         b"c=IN IP6 2001:db8::1\r\n"
         b"a=rtpmap:31 H261/90000\r\n")


@pytest.mark.parametrize("body", [
    OFFER, OFFER.replace(b"\r\n", b"\n"), OFFER[:-2],  # LF only; no final line end
    b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=\xe2\x98\x83 \xff\r\nt=0 0\r\n\r\n",  # non-UTF-8, blank
])
def test_unchanged_sdp_serializes_to_identical_bytes(body: bytes) -> None:
    assert parse_sdp_untrusted(body).to_bytes() == body


def test_sdp_accessors() -> None:
    sd = parse_sdp_untrusted(OFFER)
    assert sd.connection == Connection("IN", "IP4", "192.0.2.101")
    assert sd.origin is not None and sd.origin.startswith("alice ")
    assert sd.attributes == [("x-unknown", "kept in place")]
    audio, video = sd.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == (
        "audio", 49170, "RTP/AVP", ["0", "8", "101"])
    assert audio.rtpmap == {0: ("PCMU", 8000), 8: ("PCMA", 8000), 101: ("telephone-event", 8000)}
    assert audio.fmtp == {101: "0-16"}
    assert audio.payload_types() == [0, 8, 101] and audio.event_payload_type() == 101
    assert audio.encoding(8) == ("PCMA", 8000) and audio.encoding(101) == ("telephone-event", 8000)
    assert audio.on_hold and not video.on_hold and sd.audio() is audio
    assert audio.direction == "sendonly" and video.direction == "sendrecv"
    assert audio.rtcp == (49171, Connection("IN", "IP4", "192.0.2.101"))
    assert audio.connection is None and audio.effective_connection == sd.connection
    assert video.connection == Connection("IN", "IP6", "2001:db8::1")
    assert video.port == 51372 and video.rtcp is None
    assert ("rtpmap", "31 H261/90000") in video.attributes
    assert audio.attribute("sendonly") == "" and audio.attribute("nothing") is None


def test_relay_rewrites_addresses_and_ports_only() -> None:
    sd = parse_sdp_untrusted(OFFER)
    audio, video = sd.media
    sd.set_connection_address("203.0.113.9")
    audio.port = 40000
    audio.set_rtcp(40001, "203.0.113.9")
    video.port = 40002
    video.direction = "inactive"
    sd.bump_version()
    out = sd.to_bytes()
    expected = (OFFER
                .replace(b"2890844526 IN", b"2890844527 IN")
                .replace(b"c=IN IP4 192.0.2.101", b"c=IN IP4 203.0.113.9")
                .replace(b"49170 RTP", b"40000 RTP")
                .replace(b"a=rtcp:49171 IN IP4 192.0.2.101", b"a=rtcp:40001 IN IP4 203.0.113.9")
                .replace(b"51372/2", b"40002/2")
                .replace(b"c=IN IP6 2001:db8::1", b"c=IN IP4 203.0.113.9")
                + b"a=inactive\r\n")
    assert out == expected
    assert parse_sdp_untrusted(out).media[0].rtcp == (40001, Connection("IN", "IP4", "203.0.113.9"))


def test_connection_is_added_where_rfc4566_puts_it() -> None:
    sd = parse_sdp_untrusted(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"
                             b"i=x\r\na=sendrecv\r\n")
    sd.set_connection_address("2001:db8::5")
    sd.media[0].set_connection_address("192.0.2.7")
    assert sd.to_bytes() == (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n"
                             b"m=audio 1 RTP/AVP 0\r\ni=x\r\nc=IN IP4 192.0.2.7\r\na=sendrecv\r\n")


@pytest.mark.parametrize("body", [
    b"", b"o=- 1 1 IN IP4 h\r\n", b"v=0\r\nthis is not sdp\r\n", b"v=0\r\nm=audio\r\n",
    b"v=0\r\nm=audio port RTP/AVP 0\r\n", b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n",
    b"v=0\r\nc=IN IP4\r\n", b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:x\r\n", b"V=0\r\n",
])
def test_bad_sdp_raises_bad_message(body: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_sdp_untrusted(body)


# -- the media relay's rewrite, hold ---------------------------------------------------------

#: a phone's offer: ICE candidate, RTCP port, telephone-event
RELAY_OFFER = (b"v=0\r\n"
               b"o=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\n"
               b"s=-\r\n"
               b"c=IN IP4 192.168.1.20\r\n"
               b"t=0 0\r\n"
               b"a=ice-ufrag:abcd\r\n"
               b"m=audio 49170 RTP/AVP 8 0 101\r\n"
               b"a=rtpmap:8 PCMA/8000\r\n"
               b"a=rtpmap:0 PCMU/8000\r\n"
               b"a=rtpmap:101 telephone-event/8000\r\n"
               b"a=fmtp:101 0-15\r\n"
               b"a=rtcp:49171 IN IP4 192.168.1.20\r\n"
               b"a=candidate:1 1 UDP 2130706431 192.168.1.20 49170 typ host\r\n"
               b"a=ptime:20\r\n"
               b"a=sendrecv\r\n")


def test_rewrite_points_connection_ports_and_rtcp_at_the_relay() -> None:
    out = rewrite_for_relay_untrusted(RELAY_OFFER, "203.0.113.5", [30000])
    assert out == (b"v=0\r\n"
                   b"o=alice 2890844526 2890844526 IN IP4 203.0.113.5\r\n"
                   b"s=-\r\n"
                   b"c=IN IP4 203.0.113.5\r\n"
                   b"t=0 0\r\n"
                   b"m=audio 30000 RTP/AVP 8 0 101\r\n"
                   b"a=rtpmap:8 PCMA/8000\r\n"
                   b"a=rtpmap:0 PCMU/8000\r\n"
                   b"a=rtpmap:101 telephone-event/8000\r\n"
                   b"a=fmtp:101 0-15\r\n"
                   b"a=rtcp:30001 IN IP4 203.0.113.5\r\n"
                   b"a=ptime:20\r\n"
                   b"a=sendrecv\r\n")


def test_rewrite_handles_media_level_connection_extra_streams_and_ipv6() -> None:
    sdp = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"
           b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\na=rtcp:4001\r\n"
           b"m=video 4002 RTP/AVP 96\r\nc=IN IP4 10.0.0.1\r\n")
    out = parse_sdp_untrusted(rewrite_for_relay_untrusted(sdp, "2001:db8::1", [31000]))
    audio, video = out.media
    assert (audio.port, audio.connection_address, audio.rtcp_target) == (
        31000, "2001:db8::1", ("2001:db8::1", 31001))
    assert out.origin == "- 1 1 IN IP6 2001:db8::1"  # RFC 4566 5.2: o= names the family too
    assert video.port == 0  # nothing relays it: rejected rather than leaking the real address
    assert b"c=IN IP6 2001:db8::1" in rewrite_for_relay_untrusted(sdp, "2001:db8::1", [31000])


def test_rewrite_keeps_old_style_hold_and_rejected_streams() -> None:
    held = RELAY_OFFER.replace(b"c=IN IP4 192.168.1.20", b"c=IN IP4 0.0.0.0")
    out = rewrite_for_relay_untrusted(held, "203.0.113.5", [30000])
    assert b"c=IN IP4 0.0.0.0" in out
    assert parse_sdp_untrusted(out).on_hold
    rejected = RELAY_OFFER.replace(b"m=audio 49170", b"m=audio 0")
    out = rewrite_for_relay_untrusted(rejected, "203.0.113.5", [30000])
    assert b"m=audio 0 " in out and b"a=rtcp" not in out


@pytest.mark.parametrize("change,held", [
    ((b"a=sendrecv", b"a=sendrecv"), False),
    ((b"a=sendrecv", b"a=sendonly"), True),
    ((b"a=sendrecv", b"a=inactive"), True),
    ((b"a=sendrecv", b"a=recvonly"), False),
    ((b"c=IN IP4 192.168.1.20", b"c=IN IP4 0.0.0.0"), True),
])
def test_hold_detection(change: tuple[bytes, bytes], held: bool) -> None:
    assert parse_sdp_untrusted(RELAY_OFFER.replace(*change)).on_hold is held


def test_session_level_direction_applies_to_media() -> None:
    sdp = RELAY_OFFER.replace(b"a=sendrecv\r\n", b"").replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert parse_sdp_untrusted(sdp).on_hold
