"""The INVITE server transaction (IST): RFC 3261 17.2.1 as corrected by RFC 6026 7.1.

Theory of operation
-------------------
A new INVITE opens the transaction in **Proceeding** and goes up to the TU as
``RequestReceived``. RFC 3261 lets the transaction send 100 Trying itself if
the TU has not sent a provisional response within 200 ms; we send it at once,
which is simpler (no timer) and costs one small datagram per call. A
retransmitted INVITE is answered with the latest provisional response (the
100 or the TU's last 1xx) and never goes up again.

A 300-699 from the TU moves to **Completed**: over unreliable transports Timer
G resends it at T1, 2*T1, ... capped at T2; every INVITE retransmission also
gets it again. Timer H (64*T1) gives up waiting for the ACK (``TransactionTimeout``).
The ACK moves to **Confirmed**, where Timer I (T4, zero over reliable
transports) absorbs ACK retransmissions.

A 2xx from the TU moves to **Accepted** (RFC 6026; RFC 3261 terminated here,
so a retransmitted INVITE looked new). Over UDP the layer keeps Accepted, not
this object ("Settling" in ``layer.py``). The transaction does not retransmit the
2xx: the TU does (RFC 3261 13.3.1.4) and each of its retransmissions passed to
``send_response`` goes out through us. INVITE retransmissions are absorbed
silently; an ACK that matches us (normally the 2xx ACK has a branch of its
own, so it reaches the TU as a transaction-less ``AckReceived``) is passed up
as ``AckReceived`` too. Timer L (64*T1) ends it.

A transport error in Proceeding or Completed informs the TU and terminates. In
Accepted it only informs the TU: the TU owns the 2xx and decides.

::

    state       trigger            next        action
    Proceeding  INVITE             Proceeding  resend last 1xx
    Proceeding  1xx from TU        Proceeding  send
    Proceeding  2xx from TU        Accepted    send, start L
    Proceeding  300-699 from TU    Completed   send, start G (unreliable) and H
    Completed   INVITE             Completed   resend final
    Completed   Timer G            Completed   resend final, G = min(2G, T2)
    Completed   ACK                Confirmed   stop G and H, start I
    Completed   Timer H            Terminated  TransactionTimeout
    Confirmed   ACK                Confirmed   absorbed
    Confirmed   Timer I            Terminated
    Accepted    INVITE             Accepted    absorbed
    Accepted    ACK                Accepted    AckReceived to the TU
    Accepted    2xx from TU        Accepted    send
    Accepted    Timer L            Terminated
    Proceeding/Completed  transport error  Terminated  TransportFailure
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from ._base import Transaction, Trigger, send_trigger
from .events import AckReceived

if TYPE_CHECKING:
    from ..sip.message import Request, Response
    from ..sip.peer import Peer
    from .keys import ServerKey
    from .layer import TransactionLayer


class State(Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code
    PROCEEDING = "Proceeding"  #: INVITE passed up; 1xx from the TU go out, retransmits re-answered
    COMPLETED = "Completed"  #: 300-699 sent; Timer G resends it, Timer H waits for the ACK
    CONFIRMED = "Confirmed"  #: ACK arrived; Timer I absorbs ACK retransmissions
    ACCEPTED = "Accepted"  #: RFC 6026: 2xx sent; INVITE repeats absorbed until Timer L
    TERMINATED = "Terminated"  #: gone from the layer


T = Trigger
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.PROCEEDING, T.REQUEST): State.PROCEEDING,
    (State.PROCEEDING, T.SEND_1XX): State.PROCEEDING,
    (State.PROCEEDING, T.SEND_2XX): State.ACCEPTED,
    (State.PROCEEDING, T.SEND_300_699): State.COMPLETED,
    (State.PROCEEDING, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.COMPLETED, T.REQUEST): State.COMPLETED,
    (State.COMPLETED, T.TIMER_G): State.COMPLETED,
    (State.COMPLETED, T.ACK): State.CONFIRMED,
    (State.COMPLETED, T.TIMER_H): State.TERMINATED,
    (State.COMPLETED, T.TRANSPORT_ERROR): State.TERMINATED,
    (State.CONFIRMED, T.ACK): State.CONFIRMED,
    (State.CONFIRMED, T.TIMER_I): State.TERMINATED,
    (State.ACCEPTED, T.REQUEST): State.ACCEPTED,
    (State.ACCEPTED, T.ACK): State.ACCEPTED,
    (State.ACCEPTED, T.SEND_2XX): State.ACCEPTED,
    (State.ACCEPTED, T.TIMER_L): State.TERMINATED,
    (State.ACCEPTED, T.TRANSPORT_ERROR): State.ACCEPTED,
}
del T


class ServerInviteTransaction(Transaction):
    __slots__ = ("merge",)

    KIND = "ist"
    TRANSITIONS = TRANSITIONS
    END_TIMER = {State.COMPLETED: Trigger.TIMER_H, State.CONFIRMED: Trigger.TIMER_I,
                 State.ACCEPTED: Trigger.TIMER_L}
    RETX_TIMER = Trigger.TIMER_G
    TERMINATED = State.TERMINATED

    def __init__(self, layer: TransactionLayer, key: ServerKey, peer: Peer) -> None:
        super().__init__(layer, key, peer, State.PROCEEDING, b"")
        #: the RFC 3261 8.2.2.2 merge key (a hash) this transaction is indexed under, if any
        self.merge: int | None = None

    def on_request(self, request: Request, peer: Peer, now: float) -> None:
        """A retransmitted INVITE, or an ACK."""
        is_ack = request.method == "ACK"
        old = self.state
        new = self._step(Trigger.ACK if is_ack else Trigger.REQUEST)
        layer = self.layer
        if is_ack and new is State.ACCEPTED:
            layer._event(self, AckReceived(request, peer))
            return
        layer.counters.retransmissions_absorbed += 1
        if new is None:
            return
        if new is State.CONFIRMED:
            if old is State.COMPLETED:
                self.wire = b""  # Confirmed only absorbs ACKs: nothing is sent again
                self._cancel_timers()
                self._end_state(self.timers.I(self.reliable), now)
        elif new is not State.ACCEPTED and self.wire:  # Proceeding, Completed: answer again
            self._send_wire()

    def on_send(self, response: Response, now: float) -> bool:
        """A response from the TU; False if this state discards it."""
        new: Any = self._step(send_trigger(response.status))
        if new is None:
            return False
        if new is State.ACCEPTED:
            # RFC 6026: the TU retransmits its 2xx itself and nothing answers a repeated
            # INVITE here, so the bytes are not kept for the 32 s of Timer L.
            self.wire = b""
            self.layer._out.append((response.to_bytes(), self.peer))
            if not self.reliable:  # the layer keeps Accepted ("Settling" in layer.py)
                self.layer._settle_server(self, None, self.timers.L, now)
            elif self.end_at is None:
                self._arm_end(now, self.timers.L)
            return True
        self.wire = response.to_bytes()
        self._send_wire()
        if new is State.COMPLETED:
            timers = self.timers
            if not self.reliable:
                self._arm_retx(now + timers.G, timers.G)
            self._arm_timeout(now, timers.H)
        return True

    def on_retx_timer(self, now: float) -> None:
        if self._step(Trigger.TIMER_G) is not None:
            self._send_wire()
            self.layer.counters.retransmissions_sent += 1
            interval = min(2 * self.retx_interval, self.timers.t2)
            self._arm_retx(now + interval, interval)
