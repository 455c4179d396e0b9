"""Offer/answer for minisip's own endpoint (the SDP model itself: tests/sip/test_sip_sdp.py)."""
from __future__ import annotations

import pytest

from minisip.media.sdp_media import (NotAcceptable, answer_offer_untrusted, make_offer,
                                     negotiated_from_answer_untrusted)
from minisip.sip.errors import BadMessage
from minisip.sip.sdp import parse_sdp_untrusted, rewrite_for_relay_untrusted
from tests.sip.test_sip_sdp import RELAY_OFFER

OFFER = RELAY_OFFER


@pytest.mark.parametrize("body", [b"garbage", b"v=0\r\nm=audio x RTP/AVP 0\r\n",
                                  b"v=0\r\nc=IN\r\n", b"v=0\r\nm=audio\r\n"])
def test_bad_sdp_raises_bad_message(body: bytes) -> None:
    with pytest.raises(BadMessage):
        rewrite_for_relay_untrusted(body, "1.2.3.4", [1000])
    with pytest.raises(BadMessage):
        parse_sdp_untrusted(body)


def test_answering_an_offer_picks_the_offerers_first_common_codec_and_dtmf() -> None:
    body, neg = answer_offer_untrusted(OFFER, "198.51.100.1", 20000, session_id=77)
    assert (neg.codec, neg.payload_type, neg.dtmf_payload_type) == ("PCMA", 8, 101)
    assert neg.remote == ("192.168.1.20", 49170)
    assert neg.remote_rtcp == ("192.168.1.20", 49171)
    assert neg.direction == "sendrecv"
    ans = parse_sdp_untrusted(body).audio()
    assert ans is not None and ans.port == 20000 and ans.payload_types() == [8, 101]
    assert ans.connection_address == "198.51.100.1"
    assert b"a=fmtp:101 0-15\r\n" in body  # the offerer's event list, echoed


@pytest.mark.parametrize("offered,ours", [("sendonly", "recvonly"), ("inactive", "inactive"),
                                          ("recvonly", "sendonly")])
def test_answer_direction_mirrors_the_offer(offered: str, ours: str) -> None:
    offer = OFFER.replace(b"a=sendrecv", b"a=" + offered.encode())
    _, neg = answer_offer_untrusted(offer, "198.51.100.1", 20000, session_id=1)
    assert neg.direction == ours


def test_offer_without_our_codecs_is_not_acceptable_488() -> None:
    offer = OFFER.replace(b"m=audio 49170 RTP/AVP 8 0 101", b"m=audio 49170 RTP/AVP 18 101")
    with pytest.raises(NotAcceptable) as info:
        answer_offer_untrusted(offer, "198.51.100.1", 20000, session_id=1)
    assert info.value.status == 488


def test_answer_keeps_the_m_line_count_rejecting_other_streams() -> None:
    offer = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
             b"m=video 5000 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0\r\n")
    body, neg = answer_offer_untrusted(offer, "10.0.0.2", 20000, session_id=1)
    media = parse_sdp_untrusted(body).media
    assert [(m.kind, m.port) for m in media] == [("video", 0), ("audio", 20000)]
    assert neg.dtmf_payload_type is None


def test_our_offer_and_the_peers_answer() -> None:
    offer = make_offer("10.0.0.2", 20000, session_id=5)
    parsed = parse_sdp_untrusted(offer).audio()
    assert parsed is not None and parsed.payload_types() == [0, 8, 101]
    assert parsed.encoding(101) == ("telephone-event", 8000)
    answer = (b"v=0\r\no=bob 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
              b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    neg = negotiated_from_answer_untrusted(answer)
    assert (neg.codec, neg.dtmf_payload_type, neg.remote) == ("PCMU", 101, ("10.0.0.9", 6000))
    assert neg.can_send and neg.can_receive


def test_a_host_name_in_c_is_not_an_address_to_send_to() -> None:
    sdp = OFFER.replace(b"c=IN IP4 192.168.1.20", b"c=IN IP4 media.example.com")
    audio = parse_sdp_untrusted(sdp).audio()
    assert audio is not None and audio.rtp_address is None and audio.rtcp_target is None


# -- moving a party: codecs and the o= line -------------------------------------------------

from minisip.media.sdp_media import (  # noqa: E402
    event_payload_type_untrusted, g711_codecs_untrusted, session_codec_untrusted, with_origin,
)


def _sdp(fmts: str, *rtpmaps: str, origin: str = "o=a 5 7 IN IP4 10.0.0.1") -> bytes:
    lines = ["v=0", origin, "s=-", "c=IN IP4 10.0.0.1", "t=0 0", f"m=audio 4000 RTP/AVP {fmts}",
             *rtpmaps]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_g711_codecs_in_order() -> None:
    assert g711_codecs_untrusted(_sdp("8 18 0 101", "a=rtpmap:101 telephone-event/8000")) == [
        "PCMA", "PCMU"]
    assert g711_codecs_untrusted(_sdp("96", "a=rtpmap:96 opus/48000/2")) == []
    assert g711_codecs_untrusted(b"") == []


def test_the_codec_a_party_speaks_is_narrowed_by_the_answer() -> None:
    offer, answer = _sdp("8 0"), _sdp("0")
    assert session_codec_untrusted(offer, answer) == "PCMU"  # the party offered
    assert session_codec_untrusted(answer, offer) == "PCMU"  # the party answered
    assert session_codec_untrusted(_sdp("8 0"), b"") == "PCMA"
    assert session_codec_untrusted(_sdp("18"), _sdp("0")) is None


def test_event_payload_type() -> None:
    assert event_payload_type_untrusted(
        _sdp("0 96", "a=rtpmap:96 telephone-event/8000")) == 96
    assert event_payload_type_untrusted(_sdp("0")) is None


def test_a_new_offer_continues_the_origin_the_party_knows() -> None:
    ours = _sdp("0", origin="o=minisip 99 1 IN IP4 192.0.2.1")
    out = with_origin(ours, _sdp("0 8", origin="o=pbx 1234 41 IN IP4 192.0.2.9"))
    assert b"o=pbx 1234 42 IN IP4 192.0.2.9\r\n" in out and b"m=audio 4000" in out
    assert with_origin(ours, b"") == ours
