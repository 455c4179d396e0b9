"""Dialogs (RFC 3261 12), sans-IO: made from a request and its response, requests in them,
and where those requests go."""
from __future__ import annotations

import pytest

from minisip.dialog.dialog import Dialog
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, make_response
from minisip.sip.peer import Peer

OBSERVED = Peer("udp", "203.0.113.5", 40000)  #: where the peer's messages come from


def invite(*, record_route: tuple[str, ...] = (), contact: str = "<sip:100@203.0.113.5:5060>"
           ) -> Request:
    return Request("INVITE", "sip:101@pbx", [
        ("Via", "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK1"),
        *[("Record-Route", r) for r in record_route],
        ("From", '"A" <sip:100@pbx>;tag=a1'), ("To", "<sip:101@pbx>"), ("Call-ID", "c1"),
        ("CSeq", "7 INVITE"), ("Contact", contact)])


def uas(**kw: object) -> Dialog:
    req = invite(**kw)  # type: ignore[arg-type]
    return Dialog.as_uas(req, make_response(req, 200, to_tag="b1"), OBSERVED, "<sip:101@pbx>")


@pytest.mark.parametrize("routes, contact, expected", [
    # a record-routing proxy: its address, whatever the peer was heard from
    (("<sip:198.51.100.7:5070;lr>",), "<sip:100@203.0.113.5>", Peer("udp", "198.51.100.7", 5070)),
    (("<sip:198.51.100.7;transport=tcp;lr>", "<sip:10.0.0.1;lr>"), "<sip:100@203.0.113.5>",
     Peer("tcp", "198.51.100.7", 5060)),
    (("<sips:[2001:db8::7];lr>",), "<sip:100@203.0.113.5>", Peer("tls", "2001:db8::7", 5061)),
    (("<sip:198.51.100.7>",), "<sip:100@203.0.113.5>", Peer("udp", "198.51.100.7", 5060)),  # strict
    # a proxy known by name: no DNS here, the peer it was heard from
    (("<sip:edge.example.com;lr>",), "<sip:100@203.0.113.5>", OBSERVED),
    # no route set: the remote target, on the host the peer speaks from
    ((), "<sip:100@203.0.113.5:5062>", Peer("udp", "203.0.113.5", 5062)),
    # ... but a private target behind NAT is unreachable: the observed source
    ((), "<sip:100@192.168.1.20:5060>", OBSERVED),
    ((), "<sip:100@phone.lan>", OBSERVED),
    ((), "<sip:100@203.0.113.5;transport=sctp>", OBSERVED),
])
def test_in_dialog_requests_go_by_route_set_then_remote_target(
        routes: tuple[str, ...], contact: str, expected: Peer) -> None:
    assert uas(record_route=routes, contact=contact).destination(OBSERVED) == expected


def test_over_tcp_the_connected_peer_is_used_for_its_own_host() -> None:
    connected = Peer("tcp", "203.0.113.5", 51234)
    d = uas(contact="<sip:100@203.0.113.5:5060;transport=tcp>")
    assert d.destination(connected) == connected


def test_a_uas_dialog_keeps_the_record_route_order_a_uac_one_reverses_it() -> None:
    routes = ("<sip:p1;lr>", "<sip:p2;lr>")
    assert uas(record_route=routes).route_set == list(routes)
    req = invite()
    resp = make_response(req, 200, to_tag="b1",
                         headers=[("Record-Route", r) for r in routes] + [
                             ("Contact", "<sip:101@192.0.2.9>")])
    uac = Dialog.as_uac(req, resp, OBSERVED)
    assert uac.route_set == list(reversed(routes)) and uac.remote_target == "sip:101@192.0.2.9"
    bye = uac.new_request("BYE", via="SIP/2.0/UDP pbx;branch=z9hG4bK2")
    assert bye.headers.get_all("Route") == ["<sip:p2;lr>", "<sip:p1;lr>"]
    assert bye.cseq == (8, "BYE") and bye.uri == "sip:101@192.0.2.9"


def test_a_strict_router_takes_the_request_uri_and_the_target_goes_last() -> None:
    d = uas(record_route=("<sip:198.51.100.7>",))
    req = d.new_request("INFO", via="SIP/2.0/UDP pbx;branch=z9hG4bK3")
    assert req.uri == "sip:198.51.100.7"
    assert req.headers.get_all("Route") == ["<sip:100@203.0.113.5:5060>"]


def test_requests_in_order_refresh_the_target_and_late_ones_are_refused() -> None:
    d = uas()
    def req(cseq: int, method: str, contact: str = "<sip:100@203.0.113.5:7000>") -> Request:
        return Request(method, "sip:101@pbx", [
            ("Via", "SIP/2.0/UDP h;branch=z9hG4bKx"), ("From", "<sip:100@pbx>;tag=a1"),
            ("To", "<sip:101@pbx>;tag=b1"), ("Call-ID", "c1"), ("CSeq", f"{cseq} {method}"),
            ("Contact", contact)])
    assert d.accept_request(req(8, "INVITE")) and d.remote_target == "sip:100@203.0.113.5:7000"
    assert not d.accept_request(req(8, "INFO"))
    assert d.accept_request(req(8, "ACK")) and d.accept_request(req(9, "BYE"))


def test_a_dialog_needs_both_tags_and_a_contact() -> None:
    req = invite()
    with pytest.raises(BadMessage):
        Dialog.as_uas(req, make_response(req, 200), OBSERVED, "<sip:101@pbx>")
    no_contact = make_response(req, 200, to_tag="b1")
    with pytest.raises(BadMessage):
        Dialog.as_uac(req, no_contact, OBSERVED)
