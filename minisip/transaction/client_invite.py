"""The INVITE client transaction (ICT): RFC 3261 17.1.1 as corrected by RFC 6026 7.2.

Theory of operation
-------------------
The TU hands us an INVITE (``TransactionLayer.send_request``); we send it and
enter **Calling**. Over an unreliable transport Timer A retransmits it at T1,
2*T1, 4*T1, ... (no cap: INVITE retransmissions double until Timer B); Timer B
(64*T1) gives up with a ``TransactionTimeout``. Over TCP/TLS only Timer B runs.

A provisional response stops retransmitting and moves to **Proceeding**, where
we wait as long as it takes (the TU CANCELs if it loses patience: a CANCEL is
its own non-INVITE client transaction on the same branch). Every 1xx goes up.

A 300-699 final response moves to **Completed**: we build the ACK ourselves
(RFC 3261 17.1.1.3: same branch, Request-URI, Call-ID, From and CSeq number,
the To of the response so its tag is there, the INVITE's Route set, one Via),
send it, pass the response up, and stay for Timer D (32 s, zero over reliable
transports) so that every retransmission of that final response is answered
with the same ACK (cached bytes) and not passed up again.

A 2xx moves to **Accepted** (RFC 6026; RFC 3261 terminated here and lost the
2xx retransmissions and the 2xx from other forks to the "stray" path). We do
not ACK a 2xx: that ACK belongs to the TU's dialog, and the TU sends it with
``send_stateless``. Every further 2xx, retransmitted or from another fork, is
passed up until Timer M (64*T1) ends the transaction. Over UDP the layer keeps
Accepted, not this object ("Settling" in ``layer.py``).

A transport error in Calling, Proceeding or Completed informs the TU and
terminates; in Accepted it only informs the TU (the 2xx already arrived).

::

    state       trigger            next        action
    Calling     Timer A            Calling     resend INVITE, A *= 2
    Calling     Timer B            Terminated  TransactionTimeout
    Calling     1xx                Proceeding  stop A and B, pass up
    Calling     2xx                Accepted    stop A and B, pass up, start M
    Calling     300-699            Completed   stop A and B, ACK, pass up, start D
    Proceeding  1xx                Proceeding  pass up
    Proceeding  2xx                Accepted    pass up, start M
    Proceeding  300-699            Completed   ACK, pass up, start D
    Completed   300-699            Completed   resend ACK (absorbed)
    Completed   Timer D            Terminated
    Accepted    2xx                Accepted    pass up
    Accepted    Timer M            Terminated
    any but Accepted  transport error  Terminated  TransportFailure
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from ..sip.message import Request
from ._base import Transaction, Trigger, recv_trigger
from .events import ResponseReceived

if TYPE_CHECKING:
    from ..sip.message import Response
    from ..sip.peer import Peer
    from .keys import ClientKey
    from .layer import TransactionLayer


class State(Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code
    CALLING = "Calling"  #: INVITE sent, nothing heard; Timer A (unreliable) and B run
    PROCEEDING = "Proceeding"  #: a 1xx arrived; waiting for the final response, no timer
    COMPLETED = "Completed"  #: 300-699 arrived and was ACKed; Timer D absorbs repeats
    ACCEPTED = "Accepted"  #: RFC 6026: a 2xx arrived; further 2xx go up until Timer M
    TERMINATED = "Terminated"  #: gone from the layer


T = Trigger
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.CALLING, T.TIMER_A): State.CALLING,
    (State.CALLING, T.TIMER_B): State.TERMINATED,
    (State.CALLING, T.RECV_1XX): State.PROCEEDING,
    (State.CALLING, T.RECV_2XX): State.ACCEPTED,
    (State.CALLING, T.RECV_300_699): State.COMPLETED,
    (State.CALLING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.PROCEEDING, T.RECV_1XX): State.PROCEEDING,
    (State.PROCEEDING, T.RECV_2XX): State.ACCEPTED,
    (State.PROCEEDING, T.RECV_300_699): State.COMPLETED,
    (State.PROCEEDING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.COMPLETED, T.RECV_300_699): State.COMPLETED,
    (State.COMPLETED, T.TIMER_D): State.TERMINATED,
    (State.COMPLETED, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.ACCEPTED, T.RECV_2XX): State.ACCEPTED,
    (State.ACCEPTED, T.TIMER_M): State.TERMINATED,
    (State.ACCEPTED, T.TRANSPORT_ERROR): State.ACCEPTED,
}
del T


def build_ack(invite: Request, response: Response) -> Request:
    """RFC 3261 17.1.1.3: the ACK for a 300-699 response, sent by the transaction."""
    headers: list[tuple[str, str]] = [("Via", str(invite.top_via))]
    for route in invite.headers.get_all("Route"):
        headers.append(("Route", route))
    headers += [
        ("Max-Forwards", invite.headers.get("Max-Forwards") or "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq[0]} ACK"),
        ("Content-Length", "0"),
    ]
    return Request("ACK", invite.uri, headers)


class ClientInviteTransaction(Transaction):
    __slots__ = ("request", "ack_wire")

    KIND = "ict"
    TRANSITIONS = TRANSITIONS
    END_TIMER = {State.CALLING: Trigger.TIMER_B, State.COMPLETED: Trigger.TIMER_D,
                 State.ACCEPTED: Trigger.TIMER_M}
    RETX_TIMER = Trigger.TIMER_A
    TERMINATED = State.TERMINATED

    def __init__(self, layer: TransactionLayer, key: ClientKey, peer: Peer,
                 request: Request, now: float) -> None:
        super().__init__(layer, key, peer, State.CALLING, request.to_bytes())
        #: until a final response: what the ACK of a 300-699 is built from. Then
        #: dropped with ``wire``, as nothing is retransmitted in Completed/Accepted
        #: and the transaction lives on 32 s (Timers D, M) with only its key.
        self.request: Request | None = request
        self.ack_wire: bytes | None = None
        timers = self.timers
        self._send_wire()
        if not self.reliable:
            self._arm_retx(now + timers.A, timers.A)
        self._arm_timeout(now, timers.B)

    def on_retx_timer(self, now: float) -> None:
        # Timer A: RFC 3261 17.1.1.2 doubles it each time, with no T2 cap.
        if self._step(Trigger.TIMER_A) is not None:
            self._send_wire()
            self.layer.counters.retransmissions_sent += 1
            interval = 2 * self.retx_interval
            self._arm_retx(now + interval, interval)

    def on_response(self, response: Response, now: float) -> None:
        old = self.state
        new: Any = self._step(recv_trigger(response.status))
        layer = self.layer
        if new is None:  # 1xx or 300-699 after a 2xx, 2xx after 300-699: not ours to judge
            layer.counters.retransmissions_absorbed += 1
            return
        if new is State.COMPLETED:
            if old is State.COMPLETED:  # the final response again: the same ACK again
                layer.counters.retransmissions_absorbed += 1
                layer._out.append((self.ack_wire, self.peer))  # type: ignore[arg-type]
                return
            self._cancel_timers()
            assert self.request is not None  # (Calling or Proceeding until now)
            self.ack_wire = build_ack(self.request, response).to_bytes()
            self.request, self.wire = None, b""
            layer._out.append((self.ack_wire, self.peer))
            layer._event(self, ResponseReceived(response, self.key))  # type: ignore[arg-type]
            self._end_state(self.timers.D(self.reliable), now)
            return
        if old is State.CALLING:
            self._cancel_timers()  # A and B only run in Calling
        layer._event(self, ResponseReceived(response, self.key))  # type: ignore[arg-type]
        if new is State.ACCEPTED and old is not State.ACCEPTED:
            self.request, self.wire = None, b""
            if self.reliable:
                self._arm_end(now, self.timers.M)
            else:  # the layer keeps Accepted ("Settling" in layer.py)
                layer._settle_client(self, self.timers.M, now)
