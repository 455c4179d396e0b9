"""The non-INVITE client transaction (NICT): RFC 3261 17.1.2.

Theory of operation
-------------------
The TU hands us any request but INVITE and ACK (REGISTER, OPTIONS, BYE,
CANCEL, ...); we send it and enter **Trying**. Timer F (64*T1) bounds the whole
wait for a final response and reports ``TransactionTimeout``. Over an
unreliable transport Timer E retransmits the request at T1, then doubles the
interval up to T2 (T1, 2*T1, 4*T1, T2, T2, ...).

A provisional response moves to **Proceeding** and is passed up; from then on a
firing Timer E retransmits at a flat T2 (the provider said it heard us, so we
only keep the request alive). Timer E keeps the deadline it had when the 1xx
arrived; only its next interval becomes T2.

Any final response (200-699) is passed up and moves to **Completed**, where
Timer K (T4, zero over reliable transports) absorbs retransmissions of that
response without passing them up again. A transport error before Completed
informs the TU and terminates.

::

    state       trigger            next        action
    Trying      Timer E            Trying      resend, E = min(2E, T2)
    Trying      1xx                Proceeding  pass up
    Trying      200-699            Completed   pass up, stop E and F, start K
    Trying      Timer F            Terminated  TransactionTimeout
    Proceeding  Timer E            Proceeding  resend, E = T2
    Proceeding  1xx                Proceeding  pass up
    Proceeding  200-699            Completed   pass up, stop E and F, start K
    Proceeding  Timer F            Terminated  TransactionTimeout
    Completed   200-699            Completed   absorbed
    Completed   Timer K            Terminated
    Trying/Proceeding  transport error  Terminated  TransportFailure
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from ._base import Transaction, Trigger, recv_trigger
from .events import ResponseReceived

if TYPE_CHECKING:
    from ..sip.message import Request, Response
    from ..sip.peer import Peer
    from .keys import ClientKey
    from .layer import TransactionLayer


class State(Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code
    TRYING = "Trying"  #: request sent, nothing heard; Timer E (unreliable) and F run
    PROCEEDING = "Proceeding"  #: a 1xx arrived; E slows to T2, F still runs
    COMPLETED = "Completed"  #: final response passed up; Timer K absorbs repeats
    TERMINATED = "Terminated"  #: gone from the layer


T = Trigger
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.TRYING, T.TIMER_E): State.TRYING,
    (State.TRYING, T.TIMER_F): State.TERMINATED,
    (State.TRYING, T.RECV_1XX): State.PROCEEDING,
    (State.TRYING, T.RECV_2XX): State.COMPLETED,
    (State.TRYING, T.RECV_300_699): State.COMPLETED,
    (State.TRYING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.PROCEEDING, T.TIMER_E): State.PROCEEDING,
    (State.PROCEEDING, T.TIMER_F): State.TERMINATED,
    (State.PROCEEDING, T.RECV_1XX): State.PROCEEDING,
    (State.PROCEEDING, T.RECV_2XX): State.COMPLETED,
    (State.PROCEEDING, T.RECV_300_699): State.COMPLETED,
    (State.PROCEEDING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.COMPLETED, T.RECV_2XX): State.COMPLETED,
    (State.COMPLETED, T.RECV_300_699): State.COMPLETED,
    (State.COMPLETED, T.TIMER_K): State.TERMINATED,
}
del T


class ClientNonInviteTransaction(Transaction):
    __slots__ = ()

    KIND = "nict"
    TRANSITIONS = TRANSITIONS
    END_TIMER = {State.TRYING: Trigger.TIMER_F, State.PROCEEDING: Trigger.TIMER_F,
                 State.COMPLETED: Trigger.TIMER_K}
    RETX_TIMER = Trigger.TIMER_E
    TERMINATED = State.TERMINATED

    def __init__(self, layer: TransactionLayer, key: ClientKey, peer: Peer,
                 request: Request, now: float) -> None:
        super().__init__(layer, key, peer, State.TRYING, request.to_bytes())
        timers = self.timers
        self._send_wire()
        if not self.reliable:
            self._arm_retx(now + timers.E, timers.E)
        self._arm_timeout(now, timers.F)

    def on_retx_timer(self, now: float) -> None:
        state = self._step(Trigger.TIMER_E)
        if state is None:
            return
        self._send_wire()
        self.layer.counters.retransmissions_sent += 1
        t2 = self.timers.t2
        interval = t2 if state is State.PROCEEDING else min(2 * self.retx_interval, t2)
        self._arm_retx(now + interval, interval)

    def on_response(self, response: Response, now: float) -> None:
        old = self.state
        new: Any = self._step(recv_trigger(response.status))
        layer = self.layer
        if new is None or old is State.COMPLETED:
            layer.counters.retransmissions_absorbed += 1
            return
        layer._event(self, ResponseReceived(response, self.key))  # type: ignore[arg-type]
        if new is State.COMPLETED:
            self._cancel_timers()
            self.wire = b""  # Completed only absorbs: nothing is sent again
            self._end_state(self.timers.K(self.reliable), now)
