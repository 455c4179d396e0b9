"""INVITE client transaction: RFC 3261 17.1.1 with RFC 6026's Accepted state."""
from __future__ import annotations

from minisip.transaction import events as ev
from minisip.transaction.client_invite import State
from minisip.transaction.keys import ClientKey
from minisip.transaction.layer import TransactionLayer
from minisip.transaction.timers import Timers
from tests.transaction.helpers import (
    TCP, UDP, event_names, request, response, run_timers, start_lines,
)

INVITE_LINE = "INVITE sip:100@pbx.example.com SIP/2.0"


def send_invite(layer: TransactionLayer, peer=UDP, **kw) -> tuple[ClientKey, object]:
    req = request("INVITE", **kw)
    key = layer.send_request(req, peer, 0.0)
    assert start_lines(layer.data_to_send()) == [INVITE_LINE]
    return key, req


def test_invite_retransmits_until_timer_b() -> None:
    layer = TransactionLayer()
    key, _ = send_invite(layer)
    assert layer.get_timer() == 0.5
    sent = run_timers(layer, 100.0)
    # Timer A: T1, 2*T1, 4*T1, ... with no cap, measured from the first send.
    assert sent == [(t, [INVITE_LINE]) for t in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5)]
    assert layer.next_events() == [ev.TransactionTimeout(key), ev.TransactionTerminated(key)]
    assert layer.get_timer() is None
    assert layer.counters.ict == 0 and layer.counters.timeouts == 1


def test_timer_b_fires_at_64_t1() -> None:
    layer = TransactionLayer()
    send_invite(layer)
    run_timers(layer, 31.99)
    assert layer.next_events() == []
    layer.handle_timer(32.0)
    assert event_names(layer) == ["TransactionTimeout", "TransactionTerminated"]


def test_invite_over_reliable_transport_is_never_retransmitted() -> None:
    layer = TransactionLayer()
    key, _ = send_invite(layer, TCP, transport="TCP")
    assert layer.get_timer() == 32.0
    assert run_timers(layer, 100.0) == []
    assert layer.next_events() == [ev.TransactionTimeout(key), ev.TransactionTerminated(key)]


def test_provisional_response_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer)
    run_timers(layer, 0.5)
    ringing = response(req, 180)
    layer.receive(ringing, UDP, 0.7)
    assert layer.next_events() == [ev.ResponseReceived(ringing, key)]
    assert layer._clients[key].state is State.PROCEEDING
    assert layer.get_timer() is None
    layer.receive(response(req, 183), UDP, 5.0)  # every 1xx goes up
    assert event_names(layer) == ["ResponseReceived"]


def test_failure_response_is_acked_by_the_transaction() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer, routes=("<sip:proxy1.example.com;lr>", "<sip:proxy2;lr>"))
    busy = response(req, 486, to_tag="callee-tag")
    layer.receive(busy, UDP, 1.0)
    assert layer.next_events() == [ev.ResponseReceived(busy, key)]
    out = layer.data_to_send()
    assert len(out) == 1 and out[0][1] == UDP
    ack = out[0][0].decode()
    lines = ack.split("\r\n")
    # RFC 3261 17.1.1.3: same Request-URI, branch, Call-ID, From, CSeq number;
    # To from the response (its tag); the INVITE's Route set; one Via.
    assert lines[0] == "ACK sip:100@pbx.example.com SIP/2.0"
    assert [h for h in lines if h.startswith("Via:")] == [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1"]
    assert [h for h in lines if h.startswith("Route:")] == [
        "Route: <sip:proxy1.example.com;lr>", "Route: <sip:proxy2;lr>"]
    assert "To: <sip:100@pbx.example.com>;tag=callee-tag" in lines
    assert "From: <sip:200@pbx.example.com>;tag=ft1" in lines
    assert "Call-ID: call-1" in lines
    assert "CSeq: 1 ACK" in lines
    assert "Content-Length: 0" in lines
    assert layer._clients[key].state is State.COMPLETED


def test_ack_is_resent_on_each_retransmitted_failure_response() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer)
    busy = response(req, 486)
    layer.receive(busy, UDP, 1.0)
    layer.next_events()
    first_ack = layer.data_to_send()
    for t in (1.5, 2.5, 4.5):
        layer.receive(response(req, 486), UDP, t)
        assert layer.data_to_send() == first_ack  # the same bytes, not rebuilt
    assert layer.next_events() == []  # retransmissions are not passed up
    assert layer.counters.retransmissions_absorbed == 3


def test_timer_d_holds_completed_for_32_seconds_over_udp() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer)
    layer.receive(response(req, 404), UDP, 2.0)
    layer.next_events()
    assert layer.get_timer() == 34.0  # A and B stopped, D = 32 s
    assert run_timers(layer, 33.9) == []
    layer.handle_timer(34.0)
    assert layer.next_events() == [ev.TransactionTerminated(key)]


def test_timer_d_is_zero_over_reliable_transport() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer, TCP, transport="TCP")
    layer.receive(response(req, 603), TCP, 2.0)
    assert event_names(layer) == ["ResponseReceived", "TransactionTerminated"]
    assert start_lines(layer.data_to_send()) == ["ACK sip:100@pbx.example.com SIP/2.0"]
    assert layer.get_timer() is None


def test_2xx_enters_accepted_and_further_2xx_go_up_until_timer_m() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer)
    ok = response(req, 200, to_tag="fork-a")
    layer.receive(ok, UDP, 1.0)
    assert layer.next_events() == [ev.ResponseReceived(ok, key)]
    assert layer.data_to_send() == []  # the ACK for a 2xx is the TU's
    assert layer._clients[key] is None  # settled: the layer keeps Accepted over UDP
    assert layer.get_timer() == 33.0  # Timer M = 64*T1
    again = response(req, 200, to_tag="fork-a")
    other_fork = response(req, 200, to_tag="fork-b")
    layer.receive(again, UDP, 2.0)
    layer.receive(other_fork, UDP, 3.0)
    assert layer.next_events() == [ev.ResponseReceived(again, key),
                                   ev.ResponseReceived(other_fork, key)]
    layer.handle_timer(33.0)
    assert layer.next_events() == [ev.TransactionTerminated(key)]
    late = response(req, 200, to_tag="fork-a")
    layer.receive(late, UDP, 40.0)
    assert layer.next_events() == [ev.StrayResponse(late, UDP)]


def test_failure_response_after_2xx_is_absorbed() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer)
    layer.receive(response(req, 200), UDP, 1.0)
    layer.next_events()
    layer.receive(response(req, 500, to_tag="other"), UDP, 1.1)
    assert layer.next_events() == [] and layer.data_to_send() == []


def test_2xx_over_reliable_transport_still_waits_timer_m() -> None:
    layer = TransactionLayer(Timers(t1=0.25))
    key, req = send_invite(layer, TCP, transport="TCP")
    layer.receive(response(req, 200), TCP, 1.0)
    assert layer.get_timer() == 17.0


def test_transport_error_in_calling_informs_the_tu_and_terminates() -> None:
    layer = TransactionLayer()
    key, _ = send_invite(layer)
    layer.transport_error(key, 0.1)
    assert layer.next_events() == [ev.TransportFailure(key), ev.TransactionTerminated(key)]
    assert layer.get_timer() is None


def test_transport_error_in_accepted_keeps_the_transaction() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer, TCP, transport="TCP")
    layer.receive(response(req, 200), TCP, 1.0)
    layer.next_events()
    layer.transport_error(TCP, 1.5)
    assert layer.next_events() == [ev.TransportFailure(key)]
    assert layer._clients[key].state is State.ACCEPTED  # type: ignore[union-attr]


def test_settled_accepted_has_nothing_to_send_so_no_transport_error() -> None:
    layer = TransactionLayer()
    key, req = send_invite(layer)
    layer.receive(response(req, 200), UDP, 1.0)
    layer.next_events()
    layer.transport_error(UDP, 1.5)
    layer.transport_error(key, 1.5)
    assert layer.next_events() == [] and layer._by_peer == {}
    layer.receive(response(req, 486), UDP, 2.0)  # not a 2xx: absorbed
    assert layer.next_events() == [] and layer.counters.retransmissions_absorbed == 1
    layer.handle_timer(33.0)
    assert layer.next_events() == [ev.TransactionTerminated(key)]
    assert layer._clients == {} and layer.counters.ict == 0
