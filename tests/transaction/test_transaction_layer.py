"""The layer around the machines: matching, merged requests, strays, timers, config."""
from __future__ import annotations

import gc
import random

import pytest

from minisip.sip.message import Request
from minisip.sip.peer import Peer
from minisip.transaction import events as ev
from minisip.transaction.client_non_invite import ClientNonInviteTransaction
from minisip.transaction.keys import ServerKey
from minisip.transaction.layer import TransactionLayer
from minisip.transaction.timers import Timers
from tests.transaction.helpers import (TCP, UDP, UDP2, event_names, request, response, run_timers,
                                       start_lines)


def test_timers_follow_rfc_3261_table_4_and_rfc_6026() -> None:
    t = Timers()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert (t.A, t.B, t.E, t.F, t.G, t.H, t.L, t.M) == (0.5, 32, 0.5, 32, 0.5, 32, 32, 32)
    assert (t.D(False), t.I(False), t.J(False), t.K(False)) == (32, 5, 32, 5)
    assert (t.D(True), t.I(True), t.J(True), t.K(True)) == (0, 0, 0, 0)
    fast = Timers(t1=0.1, t2=0.8, t4=1.5)
    assert (fast.B, fast.F, fast.H, fast.J(False), fast.K(False), fast.I(False)) == (
        6.4, 6.4, 6.4, 6.4, 1.5, 1.5)
    assert fast.D(False) == 32  # "at least 32 seconds"
    assert Timers(t1=1.0).D(False) == 64
    with pytest.raises(ValueError):
        Timers(t1=5.0, t2=4.0)


def test_configured_t1_t2_t4_are_honoured() -> None:
    layer = TransactionLayer(Timers(t1=0.1, t2=0.8, t4=1.5))
    req = request("OPTIONS")
    layer.send_request(req, UDP, 0.0)
    layer.data_to_send()
    sent = run_timers(layer, 2.0)
    assert [round(t, 6) for t, _ in sent] == [0.1, 0.3, 0.7, 1.5]  # E: 0.1, 0.2, 0.4, 0.8 (T2)
    layer.receive(response(req, 200), UDP, 2.0)
    assert layer.get_timer() == 3.5  # K = T4
    server = TransactionLayer(Timers(t1=0.1, t2=0.8, t4=1.5))
    server.receive(request("REGISTER", branch="z9hG4bK-s"), UDP, 0.0)
    server.send_response(response(request("REGISTER", branch="z9hG4bK-s"), 200), 0.0)
    assert server.get_timer() == pytest.approx(6.4)  # J = 64*T1


def test_merged_request_is_answered_482_by_the_layer() -> None:
    layer = TransactionLayer()
    first = request("INVITE", branch="z9hG4bK-path-a")
    layer.receive(first, UDP, 0.0)
    assert event_names(layer) == ["RequestReceived"]
    layer.data_to_send()
    # The same request, forked back to us along another path: new branch, no To tag.
    merged = request("INVITE", branch="z9hG4bK-path-b", via_host="192.0.2.99")
    layer.receive(merged, UDP2, 0.1)
    assert layer.next_events() == []  # never passed up
    out = layer.data_to_send()
    assert start_lines(out) == ["SIP/2.0 482 Loop Detected"] and out[0][1] == UDP2
    assert b"branch=z9hG4bK-path-b" in out[0][0]
    assert layer.counters.merged == 1
    layer.receive(request("INVITE", branch="z9hG4bK-path-b", via_host="192.0.2.99"), UDP2, 0.2)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 482 Loop Detected"]  # retransmission
    assert layer.counters.merged == 1
    layer.send_response(response(first, 486), 0.3)
    run_timers(layer, 100.0)  # the 482's Timers G and H run silently: the TU never knew it
    first_key = ServerKey("z9hG4bK-path-a", "192.0.2.10", 5060, "INVITE")
    assert layer.next_events() == [ev.TransactionTimeout(first_key)]
    assert layer.counters.ist == 0 and layer.counters.timeouts == 2


def test_merged_non_invite_is_answered_482_and_silent_to_the_end() -> None:
    layer = TransactionLayer()
    layer.receive(request("REGISTER", branch="z9hG4bK-a"), UDP, 0.0)
    first_key = layer.next_events()[0].key
    layer.receive(request("REGISTER", branch="z9hG4bK-b"), UDP, 0.1)
    assert layer.next_events() == []
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 482 Loop Detected"]
    layer.send_response(response(request("REGISTER", branch="z9hG4bK-a"), 200), 0.2)
    assert hash(first_key) in layer._settled
    run_timers(layer, 100.0)
    assert layer.next_events() == [] and layer.counters.nist == 0 and layer._merge == {}


def test_an_accepted_invite_still_merges_its_forks_until_timer_l() -> None:
    layer = TransactionLayer()
    first = request("INVITE", branch="z9hG4bK-path-a")
    layer.receive(first, UDP, 0.0)
    layer.send_response(response(first, 200), 0.1)
    assert layer._servers == {} and len(layer._merge) == 1  # settled, still a merge entry
    layer.next_events()
    layer.data_to_send()
    fork = request("INVITE", branch="z9hG4bK-path-b", via_host="192.0.2.99")
    layer.receive(fork, UDP2, 0.2)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 482 Loop Detected"]
    assert layer.next_events() == []
    run_timers(layer, 100.0)
    assert layer._merge == {} and layer._settled == {} and layer._servers == {}
    assert layer.counters.ist == 0


def test_a_settled_non_invite_answers_a_repeat_where_it_came_from() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    layer.receive(req, UDP, 0.0)
    layer.send_response(response(req, 200), 0.1)
    first = layer.data_to_send()
    layer.receive(request("REGISTER"), UDP2, 1.0)  # the NAT mapped it anew
    again = layer.data_to_send()
    assert again == [(first[0][0], UDP2)] and layer.next_events()[1:] == []


def test_requests_with_a_to_tag_are_never_merged() -> None:
    layer = TransactionLayer()
    layer.receive(request("BYE", branch="z9hG4bK-a", to_tag="x"), UDP, 0.0)
    layer.receive(request("BYE", branch="z9hG4bK-b", to_tag="x"), UDP, 0.0)
    assert event_names(layer) == ["RequestReceived", "RequestReceived"]
    assert layer.counters.merged == 0


def test_same_request_after_its_transaction_ended_is_not_merged() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch="z9hG4bK-a")
    layer.receive(req, TCP, 0.0)
    layer.send_response(response(req, 200), 0.0)  # TCP: Timer J = 0
    layer.next_events()
    layer.receive(request("OPTIONS", branch="z9hG4bK-b"), TCP, 1.0)
    assert event_names(layer) == ["RequestReceived"]


def test_cancel_opens_a_server_transaction_of_its_own() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bK-call")
    layer.receive(invite, UDP, 0.0)
    cancel = request("CANCEL", branch="z9hG4bK-call")
    layer.receive(cancel, UDP, 1.0)
    events = layer.next_events()
    assert [type(e) for e in events] == [ev.RequestReceived, ev.RequestReceived]
    invite_key, cancel_key = events[0].key, events[1].key
    assert cancel_key == ServerKey("z9hG4bK-call", "192.0.2.10", 5060, "CANCEL")
    assert cancel_key._replace(method="INVITE") == invite_key  # how the TU finds the INVITE
    layer.data_to_send()
    layer.send_response(response(cancel, 200), 1.0)
    layer.send_response(response(invite, 487), 1.0)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 200 OK",
                                                 "SIP/2.0 487 Request Terminated"]
    assert layer.counters.merged == 0 and layer.counters.nist == 1 and layer.counters.ist == 1


def test_ack_for_a_2xx_is_passed_up_as_ack_received() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bK-inv")
    layer.receive(invite, UDP, 0.0)
    layer.send_response(response(invite, 200), 0.5)
    layer.next_events()
    ack = request("ACK", branch="z9hG4bK-ack", to_tag="tt1")  # a 2xx ACK has its own branch
    layer.receive(ack, UDP, 0.6)
    assert layer.next_events() == [ev.AckReceived(ack, UDP)]
    assert layer.counters.ist == 1 and layer.counters.nist == 0


def test_stray_2xx_is_passed_up() -> None:
    layer = TransactionLayer()
    stray = response(request("INVITE", branch="z9hG4bK-unknown"), 200)
    layer.receive(stray, UDP, 0.0)
    assert layer.next_events() == [ev.StrayResponse(stray, UDP)]
    assert layer.counters.strays == 1


def test_response_matches_by_branch_and_cseq_method_only() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch="z9hG4bK-o")
    key = layer.send_request(req, UDP, 0.0)
    wrong_method = response(request("INFO", branch="z9hG4bK-o"), 200)
    layer.receive(wrong_method, UDP, 0.1)
    assert event_names(layer) == ["StrayResponse"]
    ok = response(req, 200)
    layer.receive(ok, UDP2, 0.2)  # a response from anywhere, same branch and method: ours
    assert layer.next_events() == [ev.ResponseReceived(ok, key)]


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS", branch="z9hG4bK-x", call_id="a"), UDP, 0.0)
    layer.receive(request("OPTIONS", branch="z9hG4bK-x", call_id="b", via_host="192.0.2.20"),
                  UDP2, 0.0)
    assert event_names(layer) == ["RequestReceived", "RequestReceived"]


def test_rfc_2543_requests_match_by_call_id_from_tag_cseq_and_via() -> None:
    layer = TransactionLayer()
    old = request("INVITE", branch="")  # no branch at all
    layer.receive(old, UDP, 0.0)
    [received] = layer.next_events()
    assert received.key.branch.startswith("2543/")
    layer.data_to_send()
    layer.receive(request("INVITE", branch=""), UDP, 0.5)  # retransmission: absorbed
    assert layer.next_events() == []
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 100 Trying"]
    layer.send_response(response(old, 486), 1.0)
    layer.data_to_send()
    layer.receive(request("ACK", branch="", cseq_method="ACK", to_tag="tt1"), UDP, 1.1)
    assert layer.next_events() == []  # the ACK matched the INVITE transaction
    assert run_timers(layer, 1.5) == []  # Confirmed: Timer G stopped
    layer.receive(request("INVITE", branch="", cseq=2), UDP, 2.0)  # a new CSeq: new request
    assert event_names(layer) == ["RequestReceived"]


def test_non_cookie_branches_use_rfc_2543_matching_too() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS", branch="1234"), UDP, 0.0)
    layer.receive(request("OPTIONS", branch="1234", call_id="other"), UDP, 0.0)
    assert event_names(layer) == ["RequestReceived", "RequestReceived"]


def test_response_without_a_transaction_or_via_is_dropped_and_counted() -> None:
    layer = TransactionLayer()
    from minisip.sip.message import Response
    layer.send_response(Response(200, headers=[("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-q"),
                                               ("CSeq", "1 OPTIONS"), ("Call-ID", "c"),
                                               ("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>")]),
                        0.0)
    [(data, peer)] = layer.data_to_send()
    assert (peer.transport, peer.host, peer.port) == ("udp", "192.0.2.10", 5060)
    layer.send_response(Response(200, headers=[("CSeq", "1 OPTIONS")]), 0.0)
    assert layer.data_to_send() == []
    assert layer.counters.responses_dropped == 1 and layer.counters.stateless_responses == 1


def test_message_with_a_bad_header_is_dropped_and_counted() -> None:
    layer = TransactionLayer()
    bad = Request("OPTIONS", "sip:x", [("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-1"),
                                       ("From", "<sip:a@b>;tag=1"), ("To", "<<<"),
                                       ("Call-ID", "c"), ("CSeq", "1 OPTIONS")])
    layer.receive(bad, UDP, 0.0)
    assert layer.next_events() == [] and layer.counters.bad_messages == 1


def test_transport_error_for_a_peer_ends_every_transaction_on_it() -> None:
    layer = TransactionLayer()
    server_req = request("REGISTER", branch="z9hG4bK-s", transport="TCP")
    layer.receive(server_req, TCP, 0.0)
    client_key = layer.send_request(request("OPTIONS", branch="z9hG4bK-c", transport="TCP"),
                                    TCP, 0.0)
    udp_key = layer.send_request(request("OPTIONS", branch="z9hG4bK-u"), UDP, 0.0)
    server_key = layer.next_events()[0].key
    layer.transport_error(TCP, 1.0)
    events = layer.next_events()
    assert {e.key for e in events if isinstance(e, ev.TransportFailure)} == {server_key, client_key}
    assert {e.key for e in events if isinstance(e, ev.TransactionTerminated)} == {client_key}
    assert list(layer._clients) == [udp_key] and layer._servers == {}


def _brute_force_earliest(layer: TransactionLayer) -> float | None:
    deadlines = [d for t in [*layer._clients.values(), *layer._servers.values()] if t
                 for d in (t.retx_at, t.end_at) if d is not None]
    deadlines += [b.deadline for buckets in layer._settling.values() for b in buckets]
    return min(deadlines, default=None)


def test_get_timer_always_returns_the_earliest_deadline() -> None:
    rng = random.Random(3261)
    layer = TransactionLayer()
    now = 0.0
    live: list[Request] = []
    for i in range(3000):
        now += rng.random() * 0.05
        op = rng.random()
        if op < 0.3:
            method = rng.choice(["INVITE", "OPTIONS", "REGISTER"])
            req = request(method, branch=f"z9hG4bK-c{i}", call_id=f"c{i}")
            layer.send_request(req, rng.choice([UDP, TCP]), now)
            live.append(req)
        elif op < 0.55 and live:
            req = live.pop(rng.randrange(len(live)))
            layer.receive(response(req, rng.choice([100, 180, 200, 404, 486])), UDP, now)
        elif op < 0.8:
            method = rng.choice(["INVITE", "REGISTER"])
            req = request(method, branch=f"z9hG4bK-s{i}", call_id=f"s{i}")
            layer.receive(req, rng.choice([UDP, TCP]), now)
            layer.send_response(response(req, rng.choice([180, 200, 486])), now)
        else:
            t = layer.get_timer()
            if t is not None:
                now = max(now, t)
            layer.handle_timer(now)
        assert layer.get_timer() == _brute_force_earliest(layer)
        layer.data_to_send()
        layer.next_events()
    run_timers(layer, now + 1000)
    assert layer.get_timer() is None
    # What is left waits in Proceeding, where RFC 3261 runs no timer: the TU
    # CANCELs its INVITEs or answers the ones it received.
    left = [*layer._clients.values(), *layer._servers.values()]
    assert left and all(t.state.value == "Proceeding" for t in left)


def test_stale_timer_entries_are_purged_under_churn() -> None:
    layer = TransactionLayer()
    for i in range(20000):  # each OPTIONS arms E and F, the 200 cancels both and arms K
        req = request("OPTIONS", branch=f"z9hG4bK-{i}")
        layer.send_request(req, UDP, 0.0)
        layer.receive(response(req, 200), UDP, 0.0)
    layer.data_to_send()
    layer.next_events()
    assert len(layer._heap) == 40000  # the cancelled Timer E and F entries
    layer.handle_timer(0.1)
    assert layer._heap == []  # purged in one pass: nothing live was in the heap
    assert layer.get_timer() == 5.0  # Timer K
    assert sum(len(q) for q in layer._queues.values()) == 20000


def test_an_ended_transaction_is_freed_at_its_end_not_at_its_cancelled_timeout() -> None:
    """A stale Timer F (32 s) entry must not keep a NICT that Timer K ended at 5 s."""
    layer = TransactionLayer()
    for i in range(10000):
        req = request("OPTIONS", branch=f"z9hG4bK-{i}")
        layer.send_request(req, UDP, 0.0)
        layer.receive(response(req, 200), UDP, 0.0)
    layer.data_to_send()
    layer.next_events()
    run_timers(layer, 6.0)  # Timer K fired; F would be due at 32 s
    layer.next_events()
    assert layer.counters.nict == 0 and layer.get_timer() is None
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, ClientNonInviteTransaction)]


def test_timers_armed_with_time_going_backwards_still_fire_in_order() -> None:
    layer = TransactionLayer()
    late = layer.send_request(request("OPTIONS", branch="z9hG4bK-late"), TCP, 10.0)
    early = layer.send_request(request("OPTIONS", branch="z9hG4bK-early"), TCP, 5.0)
    assert layer.get_timer() == 37.0
    layer.handle_timer(37.0)
    assert layer.next_events() == [ev.TransactionTimeout(early), ev.TransactionTerminated(early)]
    assert layer.get_timer() == 42.0
    layer.handle_timer(50.0)
    assert layer.next_events() == [ev.TransactionTimeout(late), ev.TransactionTerminated(late)]


def test_a_final_response_only_if_the_transaction_has_none_yet() -> None:
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bK-u1")
    layer.receive(req, UDP, 0.0)
    layer.data_to_send()
    assert layer.answer_if_unanswered(response(req, 500), 0.0)
    assert start_lines(layer.data_to_send()) == ["SIP/2.0 500 Server Internal Error"]
    assert not layer.answer_if_unanswered(response(req, 500), 0.1)  # answered: nothing more
    assert layer.data_to_send() == [] and layer.counters.responses_dropped == 0


def test_a_response_that_cannot_be_sent_is_counted_not_raised() -> None:
    layer = TransactionLayer()
    no_via = response(request("OPTIONS", branch="z9hG4bK-nv"), 200)
    no_via.headers.remove("Via")
    layer.send_response(no_via, 0.0)  # no transaction, and nowhere to send it
    bad_rport = response(request("OPTIONS", branch="z9hG4bK-rp"), 200)
    bad_rport.headers.set_first("Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-rp;rport=abc")
    layer.send_response(bad_rport, 0.0)
    assert layer.counters.responses_dropped == 1
    assert [p for _, p in layer.data_to_send()] == [Peer("udp", "192.0.2.10", 5070)]


def test_a_transport_error_towards_a_udp_peer_fails_its_client_transactions() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS", branch="z9hG4bK-c1"), UDP, 0.0)
    layer.send_request(request("OPTIONS", branch="z9hG4bK-c2"), UDP2, 0.0)
    layer.next_events()
    layer.transport_error(UDP, 0.1)
    assert event_names(layer) == ["TransportFailure", "TransactionTerminated"]
    assert layer.counters.nict == 1  # the one towards UDP2 lives on
