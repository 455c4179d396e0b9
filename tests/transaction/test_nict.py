"""Non-INVITE client transaction: RFC 3261 17.1.2."""
from __future__ import annotations

from minisip.transaction import events as ev
from minisip.transaction.client_non_invite import State
from minisip.transaction.keys import ClientKey
from minisip.transaction.layer import TransactionLayer
from tests.transaction.helpers import (
    TCP, UDP, event_names, request, response, run_timers, start_lines,
)

OPTIONS_LINE = "OPTIONS sip:100@pbx.example.com SIP/2.0"


def send_options(layer: TransactionLayer, peer=UDP, at: float = 0.0, **kw):
    req = request("OPTIONS", **kw)
    key = layer.send_request(req, peer, at)
    assert start_lines(layer.data_to_send()) == [OPTIONS_LINE]
    return key, req


def test_request_retransmits_doubling_up_to_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    key, _ = send_options(layer)
    sent = run_timers(layer, 100.0)
    # Timer E: 0.5, 1, 2, then 4 s (T2) flat, from 0 until Timer F = 32 s.
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(lines == [OPTIONS_LINE] for _, lines in sent)
    assert layer.next_events() == [ev.TransactionTimeout(key), ev.TransactionTerminated(key)]
    assert layer.counters.nict == 0 and layer.counters.timeouts == 1


def test_request_over_reliable_transport_is_never_retransmitted() -> None:
    layer = TransactionLayer()
    key, _ = send_options(layer, TCP, transport="TCP")
    assert run_timers(layer, 100.0) == []
    assert layer.next_events() == [ev.TransactionTimeout(key), ev.TransactionTerminated(key)]


def test_provisional_response_pins_timer_e_at_t2() -> None:
    layer = TransactionLayer()
    key, req = send_options(layer)
    assert run_timers(layer, 0.5) == [(0.5, [OPTIONS_LINE])]  # next E due at 1.5 (interval 1)
    trying = response(req, 100)
    layer.receive(trying, UDP, 0.8)
    assert layer.next_events() == [ev.ResponseReceived(trying, key)]
    assert layer._clients[key].state is State.PROCEEDING
    sent = run_timers(layer, 100.0)
    # E keeps its 1.5 deadline, then fires every T2; F still ends it at 32.
    assert [t for t, _ in sent] == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert event_names(layer) == ["TransactionTimeout", "TransactionTerminated"]


def test_final_response_goes_up_once_and_timer_k_absorbs_its_retransmissions() -> None:
    layer = TransactionLayer()
    key, req = send_options(layer)
    ok = response(req, 200)
    layer.receive(ok, UDP, 0.3)
    assert layer.next_events() == [ev.ResponseReceived(ok, key)]
    assert layer.get_timer() == 5.3  # E and F stopped, K = T4
    layer.receive(response(req, 200), UDP, 1.0)
    layer.receive(response(req, 100), UDP, 1.1)
    assert layer.next_events() == [] and layer.data_to_send() == []
    assert layer.counters.retransmissions_absorbed == 2
    assert run_timers(layer, 100.0) == []
    assert layer.next_events() == [ev.TransactionTerminated(key)]


def test_failure_response_completes_the_transaction_too() -> None:
    layer = TransactionLayer()
    key, req = send_options(layer)
    layer.receive(response(req, 100), UDP, 0.1)
    layer.receive(response(req, 407), UDP, 0.2)
    assert event_names(layer) == ["ResponseReceived", "ResponseReceived"]
    assert layer._clients[key].state is State.COMPLETED


def test_timer_k_is_zero_over_reliable_transport() -> None:
    layer = TransactionLayer()
    key, req = send_options(layer, TCP, transport="TCP")
    layer.receive(response(req, 200), TCP, 0.3)
    assert event_names(layer) == ["ResponseReceived", "TransactionTerminated"]
    assert layer.get_timer() is None and layer.counters.nict == 0


def test_cancel_is_a_client_transaction_of_its_own_on_the_invite_branch() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bK-call")
    invite_key = layer.send_request(invite, UDP, 0.0)
    cancel = request("CANCEL", branch="z9hG4bK-call")  # RFC 3261 9.1: same branch
    cancel_key = layer.send_request(cancel, UDP, 0.1)
    assert invite_key == ClientKey("z9hG4bK-call", "INVITE")
    assert cancel_key == ClientKey("z9hG4bK-call", "CANCEL")
    ok = response(cancel, 200)
    terminated = response(invite, 487)
    layer.receive(ok, UDP, 0.2)
    layer.receive(terminated, UDP, 0.3)
    assert layer.next_events() == [ev.ResponseReceived(ok, cancel_key),
                                   ev.ResponseReceived(terminated, invite_key)]
    assert layer.counters.ict == 1 and layer.counters.nict == 1


def test_ack_cannot_open_a_client_transaction() -> None:
    layer = TransactionLayer()
    try:
        layer.send_request(request("ACK"), UDP, 0.0)
    except ValueError:
        pass
    else:
        raise AssertionError("ACK accepted")
    layer.send_stateless(request("ACK"), UDP)
    assert start_lines(layer.data_to_send()) == ["ACK sip:100@pbx.example.com SIP/2.0"]
    assert layer.counters.nict == 0 and layer.get_timer() is None


def test_transport_error_in_trying_informs_the_tu_and_terminates() -> None:
    layer = TransactionLayer()
    key, _ = send_options(layer)
    layer.transport_error(key, 0.1)
    assert layer.next_events() == [ev.TransportFailure(key), ev.TransactionTerminated(key)]
