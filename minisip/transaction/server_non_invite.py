"""The non-INVITE server transaction (NIST): RFC 3261 17.2.2.

Theory of operation
-------------------
A new request other than INVITE and ACK opens the transaction in **Trying** and
goes up to the TU as ``RequestReceived``. The client retransmits until it hears
a response; those retransmissions never reach the TU. In Trying there is
nothing to answer them with, so they are absorbed silently.

A 1xx from the TU moves to **Proceeding**; retransmissions are answered with the
latest 1xx. A final response (200-699) moves to **Completed**; retransmissions
are answered with it for Timer J (64*T1, zero over reliable transports, where the
client never retransmits, so Completed ends at once). Further responses from the
TU in Completed are discarded (RFC 3261 17.2.2).

Completed is kept by the layer ("Settling" in ``layer.py``), not by this object:
the registrar's hot path is this state, and at 5,000 REGISTERs/s and Timer J =
32 s, 160,000 of them are alive. Each is the hash of its key and the response's
bytes without the lines it echoes of the request (``Response.unechoed``): a
retransmission brings them again (``echoed``), so about half the bytes are kept.

::

    state       trigger            next        action
    Trying      request            Trying      absorbed
    Trying      1xx from TU        Proceeding  send
    Trying      200-699 from TU    Completed   send, start J
    Proceeding  request            Proceeding  resend last 1xx
    Proceeding  1xx from TU        Proceeding  send
    Proceeding  200-699 from TU    Completed   send, start J
    Completed   request            Completed   resend final
    Completed   Timer J            Terminated
    Trying/Proceeding/Completed  transport error  Terminated  TransportFailure
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from ._base import Transaction, Trigger, send_trigger

if TYPE_CHECKING:
    from ..sip.message import Request, Response
    from ..sip.peer import Peer
    from .keys import ServerKey
    from .layer import TransactionLayer


class State(Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code
    TRYING = "Trying"  #: request passed up, no response yet; repeats absorbed silently
    PROCEEDING = "Proceeding"  #: a 1xx sent; repeats get it again
    COMPLETED = "Completed"  #: final response sent; repeats get it again until Timer J
    TERMINATED = "Terminated"  #: gone from the layer


T = Trigger
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.TRYING, T.REQUEST): State.TRYING,
    (State.TRYING, T.SEND_1XX): State.PROCEEDING,
    (State.TRYING, T.SEND_2XX): State.COMPLETED,
    (State.TRYING, T.SEND_300_699): State.COMPLETED,
    (State.TRYING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.PROCEEDING, T.REQUEST): State.PROCEEDING,
    (State.PROCEEDING, T.SEND_1XX): State.PROCEEDING,
    (State.PROCEEDING, T.SEND_2XX): State.COMPLETED,
    (State.PROCEEDING, T.SEND_300_699): State.COMPLETED,
    (State.PROCEEDING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.COMPLETED, T.REQUEST): State.COMPLETED,
    (State.COMPLETED, T.TIMER_J): State.TERMINATED,
    (State.COMPLETED, T.TRANSPORT_ERROR): State.TERMINATED,
}
del T


class ServerNonInviteTransaction(Transaction):
    __slots__ = ("merge",)

    KIND = "nist"
    TRANSITIONS = TRANSITIONS
    END_TIMER = {State.COMPLETED: Trigger.TIMER_J}
    RETX_TIMER = Trigger.TIMER_J  # never armed: a NIST does not retransmit on its own
    TERMINATED = State.TERMINATED

    def __init__(self, layer: TransactionLayer, key: ServerKey, peer: Peer) -> None:
        super().__init__(layer, key, peer, State.TRYING, b"")
        #: the RFC 3261 8.2.2.2 merge key (a hash) this transaction is indexed under, if any
        self.merge: int | None = None

    def on_request(self, request: Request, peer: Peer, now: float) -> None:
        """A retransmission of the request."""
        layer = self.layer
        layer.counters.retransmissions_absorbed += 1
        if self._step(Trigger.REQUEST) is State.PROCEEDING:
            self._send_wire()

    def on_send(self, response: Response, now: float) -> bool:
        """A response from the TU; False if this state discards it."""
        new: Any = self._step(send_trigger(response.status))
        if new is None:
            return False
        self.wire = response.to_bytes()
        self._send_wire()
        if new is State.COMPLETED:
            duration = self.timers.J(self.reliable)
            if duration:  # (unreliable) Timer J runs: the layer keeps half the bytes
                self.layer._settle_server(self, response.unechoed(), duration, now)
            else:
                self.on_end_timer(now)
        return True
