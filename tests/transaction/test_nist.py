"""Non-INVITE server transaction: RFC 3261 17.2.2."""
from __future__ import annotations

from minisip.transaction import events as ev
from minisip.transaction.layer import TransactionLayer
from minisip.transaction.server_non_invite import State
from tests.transaction.helpers import TCP, UDP, request, response, run_timers, start_lines


def receive_register(layer: TransactionLayer, peer=UDP, at: float = 0.0, **kw):
    req = request("REGISTER", **kw)
    layer.receive(req, peer, at)
    events = layer.next_events()
    assert events == [ev.RequestReceived(req, peer, events[0].key)]
    return events[0].key, req


def test_retransmission_in_trying_is_absorbed_silently() -> None:
    layer = TransactionLayer()
    key, req = receive_register(layer)
    layer.receive(request("REGISTER"), UDP, 0.5)
    assert layer.next_events() == [] and layer.data_to_send() == []
    assert layer.counters.retransmissions_absorbed == 1
    assert layer._servers[key].state is State.TRYING


def test_retransmission_in_proceeding_resends_the_last_provisional() -> None:
    layer = TransactionLayer()
    key, req = receive_register(layer)
    layer.send_response(response(req, 100), 0.1)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying"]
    layer.receive(request("REGISTER"), UDP, 0.5)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying"]
    assert layer.next_events() == []


def test_retransmission_in_completed_resends_the_final_response_until_timer_j() -> None:
    layer = TransactionLayer()
    key, req = receive_register(layer)
    layer.send_response(response(req, 401), 0.2)
    final = layer.data_to_send()
    assert start_lines(final) == ["SIP/2.0 401 Unauthorized"]
    assert layer._servers == {} and hash(key) in layer._settled  # settled: kept by the layer
    assert layer.get_timer() == 32.2  # Timer J = 64*T1
    for t in (0.5, 1.5, 3.5):
        layer.receive(request("REGISTER"), UDP, t)
        assert layer.data_to_send() == final  # the cached bytes
    assert layer.next_events() == []
    assert run_timers(layer, 32.1) == [] and layer.counters.nist == 1
    layer.handle_timer(32.2)
    assert layer._settled == {} and layer.counters.nist == 0 and layer.next_events() == []
    layer.receive(request("REGISTER"), UDP, 33.0)  # after J: a new request again
    assert [type(e) for e in layer.next_events()] == [ev.RequestReceived]


def test_timer_j_is_zero_over_reliable_transport() -> None:
    layer = TransactionLayer()
    key, req = receive_register(layer, TCP, transport="TCP")
    layer.send_response(response(req, 200), 0.1)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 200 OK"]
    assert layer._servers == {} and layer._settled == {}
    assert layer.get_timer() is None and layer.counters.nist == 0


def test_second_final_response_from_the_tu_is_discarded() -> None:
    layer = TransactionLayer()
    key, req = receive_register(layer)
    layer.send_response(response(req, 200), 0.1)
    layer.data_to_send()
    layer.send_response(response(req, 500), 0.2)
    layer.send_response(response(req, 180), 0.3)
    assert layer.data_to_send() == []
    assert layer.counters.responses_dropped == 2
    layer.receive(request("REGISTER"), UDP, 0.5)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 200 OK"]


def test_responses_go_to_the_peer_the_request_came_from() -> None:
    layer = TransactionLayer()
    nat = UDP.__class__("udp", "203.0.113.9", 61000)  # the Via says 192.0.2.10:5060
    key, req = receive_register(layer, nat)
    layer.send_response(response(req, 200), 0.1)
    assert [p for _, p in layer.data_to_send()] == [nat]


def test_transport_error_in_trying_terminates() -> None:
    layer = TransactionLayer()
    key, req = receive_register(layer)
    layer.transport_error(key, 0.2)
    assert layer.next_events() == [ev.TransportFailure(key)]
    assert layer._servers == {} and layer.counters.nist == 0
