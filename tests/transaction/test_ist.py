"""INVITE server transaction: RFC 3261 17.2.1 with RFC 6026's Accepted state."""
from __future__ import annotations

from minisip.transaction import events as ev
from minisip.transaction.layer import TransactionLayer
from minisip.transaction.server_invite import State
from tests.transaction.helpers import (
    TCP, UDP, event_names, request, response, run_timers, start_lines,
)


def receive_invite(layer: TransactionLayer, peer=UDP, **kw):
    req = request("INVITE", **kw)
    layer.receive(req, peer, 0.0)
    events = layer.next_events()
    assert len(events) == 1 and isinstance(events[0], ev.RequestReceived)
    return events[0].key, req


def ack_for(req, **kw):
    return request("ACK", cseq_method="ACK", to_tag="tt1", **kw)


def test_invite_is_answered_100_trying_at_once() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    out = layer.data_to_send()
    assert start_lines(out) == ["SIP/2.0 100 Trying"] and out[0][1] == UDP
    assert b"\r\nTo: <sip:100@pbx.example.com>\r\n" in out[0][0]  # no tag on a 100
    assert layer.get_timer() is None  # Proceeding runs no timer


def test_invite_retransmission_gets_the_latest_provisional_and_is_not_passed_up() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    layer.data_to_send()
    layer.receive(request("INVITE"), UDP, 0.5)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying"]
    layer.send_response(response(req, 180), 1.0)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 180 Ringing"]
    layer.receive(request("INVITE"), UDP, 1.5)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 180 Ringing"]
    assert layer.next_events() == []
    assert layer.counters.retransmissions_absorbed == 2


def test_failure_response_is_retransmitted_with_timer_g_capped_at_t2_until_timer_h() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    layer.send_response(response(req, 486), 0.0)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying", "SIP/2.0 486 Busy Here"]
    sent = run_timers(layer, 100.0)
    # Timer G: 0.5, 1, 2, 4, 4, ... (capped at T2) until Timer H = 64*T1.
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(lines == ["SIP/2.0 486 Busy Here"] for _, lines in sent)
    assert layer.next_events() == [ev.TransactionTimeout(key)]  # (a server one ends quietly)
    assert layer.counters.ist == 0


def test_failure_response_over_reliable_transport_is_not_retransmitted() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer, TCP, transport="TCP", via_port=None)
    layer.send_response(response(req, 486), 0.0)
    layer.data_to_send()
    assert layer.get_timer() == 32.0  # Timer H only
    assert run_timers(layer, 100.0) == []
    assert event_names(layer) == ["TransactionTimeout"] and layer.counters.ist == 0


def test_invite_retransmission_in_completed_resends_the_final_response() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    layer.send_response(response(req, 404), 0.0)
    final = layer.data_to_send()[-1]
    layer.receive(request("INVITE"), UDP, 0.2)
    assert layer.data_to_send() == [final]
    assert layer.next_events() == []


def test_ack_confirms_and_timer_i_absorbs_ack_retransmissions() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    layer.send_response(response(req, 486), 0.0)
    layer.data_to_send()
    run_timers(layer, 0.5)  # one retransmission
    layer.receive(ack_for(req), UDP, 0.7)
    assert layer.next_events() == []  # the ACK of a non-2xx stays in the transaction
    assert layer._servers[key].state is State.CONFIRMED
    assert layer.get_timer() == 5.7  # G and H stopped, Timer I = T4
    layer.receive(ack_for(req), UDP, 1.0)
    layer.receive(request("INVITE"), UDP, 1.1)  # absorbed too: nothing to resend in Confirmed
    assert layer.next_events() == [] and layer.data_to_send() == []
    assert run_timers(layer, 100.0) == []
    assert layer.next_events() == [] and layer.counters.ist == 0


def test_timer_i_is_zero_over_reliable_transport() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer, TCP, transport="TCP")
    layer.send_response(response(req, 486), 0.0)
    layer.receive(ack_for(req, transport="TCP"), TCP, 0.1)
    assert layer.next_events() == [] and layer.counters.ist == 0
    assert layer.get_timer() is None


def test_2xx_enters_accepted_absorbing_invite_retransmissions_and_passing_acks_up() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    layer.send_response(response(req, 200), 1.0)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert layer._servers == {} and layer._settled == {hash(key): None}  # settled (UDP)
    assert layer.get_timer() == 33.0  # Timer L = 64*T1, and no Timer G for a 2xx
    layer.receive(request("INVITE"), UDP, 1.5)
    assert layer.data_to_send() == [] and layer.next_events() == []  # absorbed, not re-answered
    ack = ack_for(req)  # an ACK on the INVITE's branch (RFC 2543-style peers, some proxies)
    layer.receive(ack, UDP, 2.0)
    assert layer.next_events() == [ev.AckReceived(ack, UDP)]
    run_timers(layer, 33.0)
    assert layer._settled == {} and layer.counters.ist == 0 and layer.get_timer() is None


def test_tu_2xx_retransmissions_go_out_through_the_accepted_state() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer)
    ok = response(req, 200)
    layer.send_response(ok, 1.0)
    layer.data_to_send()
    layer.send_response(ok, 1.5)  # RFC 3261 13.3.1.4: the TU retransmits the 2xx
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 200 OK"]
    assert layer.get_timer() == 33.0  # Timer L not restarted
    layer.send_response(response(req, 486), 2.0)  # a non-2xx after a 2xx is discarded
    assert layer.data_to_send() == [] and layer.counters.responses_dropped == 1
    assert layer.counters.stateless_responses == 0  # (the transaction is alive)


def test_accepted_over_tcp_keeps_its_transaction() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer, TCP, transport="TCP")
    ok = response(req, 200)
    layer.send_response(ok, 1.0)
    assert layer._servers[key].state is State.ACCEPTED and layer._settled == {}
    layer.send_response(ok, 1.5)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK",
                                                 "SIP/2.0 200 OK"]
    run_timers(layer, 33.0)
    assert layer._servers == {} and layer.counters.ist == 0


def test_2xx_after_the_transaction_ended_goes_out_statelessly_by_the_via() -> None:
    layer = TransactionLayer()
    req = request("INVITE", via_port=5070)
    req.top_via.params.update(received="203.0.113.5", rport="40123")  # what the driver stamps
    req.headers.set("Via", str(req.top_via))
    layer.receive(req, UDP, 0.0)
    ok = response(req, 200)
    layer.send_response(ok, 1.0)
    run_timers(layer, 40.0)
    layer.data_to_send()
    assert layer.counters.ist == 0
    layer.send_response(ok, 41.0)
    out = layer.data_to_send()
    assert start_lines(out) == ["SIP/2.0 200 OK"]
    assert (out[0][1].transport, out[0][1].host, out[0][1].port) == ("udp", "203.0.113.5", 40123)
    assert layer.counters.stateless_responses == 1


def test_transport_error_in_proceeding_informs_the_tu_and_terminates() -> None:
    layer = TransactionLayer()
    key, req = receive_invite(layer, TCP, transport="TCP")
    layer.transport_error(TCP, 0.5)  # the connection went away
    assert layer.next_events() == [ev.TransportFailure(key)] and layer.counters.ist == 0
    assert layer._by_peer == {}
