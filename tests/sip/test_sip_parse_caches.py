"""The text-keyed parse caches of sip/uri.py never change what a parse returns."""
from __future__ import annotations

import pytest

from minisip.sip.errors import BadMessage
from minisip.sip.uri import parse_address_untrusted, parse_via_untrusted


def test_cached_name_addr_gives_independent_objects() -> None:
    a = parse_address_untrusted('"Alice" <sip:100@pbx.example.com>;tag=1')
    a.uri.params["x"] = "y"
    a.params["tag"] = "changed"
    b = parse_address_untrusted('"Alice" <sip:100@pbx.example.com>;tag=2')
    assert b.display_name == "Alice" and b.uri.params == {} and b.tag == "2"
    assert str(b) == '"Alice" <sip:100@pbx.example.com>;tag=2'


def test_cached_name_addr_still_checks_what_follows() -> None:
    parse_address_untrusted("<sip:100@pbx.example.com>;tag=1")
    with pytest.raises(BadMessage):
        parse_address_untrusted("<sip:100@pbx.example.com> junk")
    with pytest.raises(BadMessage):
        parse_address_untrusted("<sip:100@pbx.example.com>;bad param=1")
    assert parse_address_untrusted("<sip:100@pbx.example.com>").params == {}


def test_display_name_with_angle_bracket() -> None:
    for tag in ("1", "2"):
        a = parse_address_untrusted(f'"a>b" <sip:100@pbx.example.com>;tag={tag}')
        assert a.display_name == "a>b" and a.uri.user == "100" and a.tag == tag


def test_cached_sent_by_still_checks_params() -> None:
    v = parse_via_untrusted("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport")[0]
    v.params["received"] = "203.0.113.1"
    w = parse_via_untrusted("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK2")[0]
    assert (w.transport, w.host, w.port, w.params) == ("UDP", "192.0.2.1", 5060,
                                                      {"branch": "z9hG4bK2"})
    with pytest.raises(BadMessage):
        parse_via_untrusted("SIP/2.0/UDP 192.0.2.1:5060;branch=")
    with pytest.raises(BadMessage):
        parse_via_untrusted("SIP/2.0/UDP 192.0.2.1:5060;bad name")
    assert parse_via_untrusted("SIP / 2.0 / tcp 192.0.2.1:5060")[0].transport == "TCP"
    assert parse_via_untrusted('SIP/2.0/UDP 192.0.2.1;x="a;b"')[0].params == {"x": '"a;b"'}


def test_long_texts_are_not_cached() -> None:
    """Keys are bounded in length too: a flood of huge values cannot fill memory."""
    from minisip.sip import headers, uri
    host = "h" * 300 + ".example.com"
    parse_address_untrusted(f"<sip:100@{host}>;tag=1")
    parse_via_untrusted(f"SIP/2.0/UDP {host};branch=z9hG4bK1")
    caches = (uri._URI_CACHE, uri._HOSTPORT_CACHE, uri._NAME_ADDR_CACHE, uri._SENT_BY_CACHE)
    assert not any(host in key for cache in caches for key in cache)
    name = "X-" + "a" * 100
    assert headers.wire_name_untrusted(name) == (name, name.lower())
    assert name not in headers._WIRE_NAMES
