"""Numbers from the wire are ASCII digits: '²', '٣', signs, spaces and '_' are refused."""
from __future__ import annotations

import pytest

from minisip.media.dtmf import parse_info_untrusted
from minisip.sip.digits import digits_untrusted, is_digits
from minisip.sip.errors import BadMessage
from minisip.sip.message import Response
from minisip.sip.sdp import parse_sdp_untrusted
from minisip.transaction.layer import _via_destination


@pytest.mark.parametrize("text, ok", [
    ("0", True), ("5060", True), ("", False), ("²", False), ("٣", False), ("-1", False),
    ("+1", False), (" 1", False), ("1_0", False), ("1.0", False), ("１", False),
])
def test_is_digits_accepts_only_ascii_digits(text: str, ok: bool) -> None:
    assert is_digits(text) is ok


def test_digits_untrusted_raises_bad_message_never_value_error() -> None:
    assert digits_untrusted("42", "x") == 42
    for bad in ("²", "٣", "-1", "1" * 11, ""):
        with pytest.raises(BadMessage):
            digits_untrusted(bad, "x")


def test_sdp_version_bump_skips_a_non_ascii_version() -> None:
    sd = parse_sdp_untrusted(b"v=0\r\no=- 1 \xc2\xb2 IN IP4 h\r\ns=-\r\n")
    sd.bump_version()
    assert b"o=- 1 \xc2\xb2 IN IP4 h" in sd.to_bytes()


def test_rport_that_is_no_number_falls_back_to_the_via_port() -> None:
    resp = Response(200, headers=[("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport=abc"),
                                  ("CSeq", "1 OPTIONS")])
    peer = _via_destination(resp)
    assert peer is not None and peer.port == 5070


@pytest.mark.parametrize("body", [b"Signal=\xc2\xb2\r\nDuration=100\r\n",
                                  b"Signal=5\r\nDuration=\xc2\xb2\r\n"])
def test_dtmf_info_with_a_non_ascii_digit_is_a_bad_message(body: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_info_untrusted("application/dtmf-relay", body)


def test_a_providers_numbers_are_ascii_digits_too() -> None:
    from minisip.pbx.lines.registration import _seconds, granted_expires
    assert _seconds("\u00b2") is None and _seconds(" 30 ") == 30 and _seconds(None) is None
    resp = Response(200, headers=[("Contact", "<sip:a@b>;expires=\u00b2"), ("Expires", "60")])
    assert granted_expires(resp, "sip:a@b", 300) == 60
    resp = Response(200, headers=[("Contact", "<sip:a@b>;expires=120")])
    assert granted_expires(resp, "sip:a@b", 300) == 120
