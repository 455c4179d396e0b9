"""What the four transaction state machines share: triggers, timer slots, teardown.

Each machine lives in its own module (``client_invite.py``, ``client_non_invite.py``,
``server_invite.py``, ``server_non_invite.py``) with its states, its transition
table and its theory of operation. This module holds the plumbing between a
machine and the ``TransactionLayer`` that owns it:

* ``Trigger`` names every input a machine can see: a message from the wire, a
  response from the TU, a timer by its RFC letter, a transport error. A
  machine's ``TRANSITIONS`` table maps ``(state, trigger)`` to the next state;
  a pair missing from the table is an input the state ignores (RFC 3261 says
  "discard" or "absorb"), never an exception: the wire and the TU are both
  allowed to repeat themselves.

* Timers are deadlines, not callbacks. A transaction has two slots: the
  retransmit timer (A, E or G, whose interval changes) and the state timer
  (B, D, F, H, I, J, K, L or M, which ends the state it was armed in). Arming
  stores the deadline in the slot and queues the transaction in the layer;
  cancelling just clears the slot. A queued entry whose deadline no longer
  equals its slot is stale and is skipped when it surfaces (lazy deletion),
  so cancelling costs nothing and no closure is kept per timer.
  Timers that are nearly always cancelled go to the layer's heap, whose stale
  entries are purged in bulk: the retransmission timers and the timeouts B, F
  and H (a response or the ACK stops them). The timers that end a completed
  state (D, I, J, K, L, M) nearly always fire and go to a FIFO per duration.
  A stale FIFO entry would keep its ended transaction in memory until its
  deadline (32 s for B, F, H), so timeouts never go there.
  Zero-length timers (D, I, J, K over reliable transports) are not armed: the
  machine applies the timer's transition at once.
"""
from __future__ import annotations

import logging
from enum import Enum
from heapq import heappush
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..sip.peer import Peer
    from .timers import Timers
    from .keys import TransactionKey
    from .layer import TransactionLayer

log = logging.getLogger("minisip.transaction")

#: Timer slot of the retransmission timer (A, E, G).
RETX = 0
#: Timer slot of the timer that ends the current state (B, D, F, H, I, J, K, L, M).
END = 1


class Trigger(Enum):
    # Members are singletons, so identity hashing is exact; Enum's __hash__ is
    # Python code and the transition tables are looked up on every message.
    __hash__ = object.__hash__

    REQUEST = "request"  #: the request again (a retransmission; or the first one)
    ACK = "ACK"  #: an ACK matching an INVITE server transaction
    RECV_1XX = "1xx received"  #: provisional response from the wire
    RECV_2XX = "2xx received"  #: success response from the wire
    RECV_300_699 = "300-699 received"  #: failure response from the wire
    SEND_1XX = "1xx from TU"  #: provisional response from the TU
    SEND_2XX = "2xx from TU"  #: success response from the TU
    SEND_300_699 = "300-699 from TU"  #: failure response from the TU
    TIMER_A = "Timer A"  #: ICT: retransmit the INVITE
    TIMER_B = "Timer B"  #: ICT: no final response, give up
    TIMER_D = "Timer D"  #: ICT: stop absorbing final-response retransmissions
    TIMER_E = "Timer E"  #: NICT: retransmit the request
    TIMER_F = "Timer F"  #: NICT: no final response, give up
    TIMER_G = "Timer G"  #: IST: retransmit the final response
    TIMER_H = "Timer H"  #: IST: no ACK, give up
    TIMER_I = "Timer I"  #: IST: stop absorbing ACK retransmissions
    TIMER_J = "Timer J"  #: NIST: stop absorbing request retransmissions
    TIMER_K = "Timer K"  #: NICT: stop absorbing response retransmissions
    TIMER_L = "Timer L"  #: IST (RFC 6026): stop absorbing INVITE retransmissions
    TIMER_M = "Timer M"  #: ICT (RFC 6026): stop passing further 2xx up
    TRANSPORT_ERROR = "transport error"  #: the driver could not send


def recv_trigger(status: int) -> Trigger:
    if status < 200:
        return Trigger.RECV_1XX
    return Trigger.RECV_2XX if status < 300 else Trigger.RECV_300_699


def send_trigger(status: int) -> Trigger:
    if status < 200:
        return Trigger.SEND_1XX
    return Trigger.SEND_2XX if status < 300 else Trigger.SEND_300_699


class Transaction:
    """One transaction of any kind; subclasses are the four machines."""

    __slots__ = ("key", "peer", "reliable", "state", "layer", "timers", "wire",
                 "retx_at", "retx_interval", "end_at", "end_in_heap", "queued", "silent")

    #: "ict", "nict", "ist" or "nist": the counter this kind is alive under.
    KIND: ClassVar[str]
    #: (state, trigger) -> next state; pairs not listed are ignored inputs.
    TRANSITIONS: ClassVar[dict[tuple[Any, Trigger], Any]]
    #: the trigger fired by the END slot, per state that arms one.
    END_TIMER: ClassVar[dict[Any, Trigger]]
    #: the trigger fired by the RETX slot.
    RETX_TIMER: ClassVar[Trigger]
    TERMINATED: ClassVar[Any]

    def __init__(self, layer: TransactionLayer, key: TransactionKey, peer: Peer,
                 state: Any, wire: bytes) -> None:
        self.layer = layer
        #: T1/T2/T4 as the layer had them when this transaction began: a reload
        #: changes the timers of new transactions only
        self.timers: Timers = layer.timers
        self.key = key
        self.peer = peer
        self.reliable = peer.reliable
        self.state = state
        #: the bytes a retransmission sends again: our request (client side) or
        #: our last response (server side); serialized once per message.
        self.wire = wire
        self.retx_at: float | None = None
        self.retx_interval = 0.0
        self.end_at: float | None = None
        #: the END slot's entry is in the layer's heap (where a stale one is counted)
        self.end_in_heap = False
        #: one of the layer's FIFOs holds this transaction (live or stale)
        self.queued = False
        #: opened by the layer itself (482 to a merged request): no TU events
        self.silent = False

    # -- state -------------------------------------------------------------------
    def _set_state(self, new: Any) -> None:
        old = self.state
        if new is not old:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s: %s -> %s", self.KIND, self.key, old.value, new.value)
            self.state = new

    def _step(self, trigger: Trigger) -> Any:
        """Apply the table: the new state, or None if this state ignores ``trigger``."""
        new = self.TRANSITIONS.get((self.state, trigger))
        if new is not None:
            self._set_state(new)
        return new

    # -- timers ------------------------------------------------------------------
    def _arm_retx(self, deadline: float, interval: float) -> None:
        layer = self.layer
        if self.retx_at is not None:
            layer._stale += 1
        self.retx_at = deadline
        self.retx_interval = interval
        heappush(layer._heap, (deadline, next(layer._seq), self, RETX))

    def _arm_end(self, now: float, duration: float) -> None:
        """Arm a timer that ends a completed state (D, I, J, K, L, M)."""
        self._drop_end()
        self.end_at = deadline = now + duration
        self.end_in_heap = self.layer._queue_end(self, deadline, duration)

    def _arm_timeout(self, now: float, duration: float) -> None:
        """Arm Timer B, F or H: in the heap, as an answer nearly always cancels it."""
        self._drop_end()
        layer = self.layer
        self.end_at = deadline = now + duration
        self.end_in_heap = True
        heappush(layer._heap, (deadline, next(layer._seq), self, END))

    def _drop_end(self) -> None:
        """Clear the END slot; an entry left in the heap is counted stale."""
        if self.end_in_heap:
            if self.end_at is not None:
                self.layer._stale += 1
            self.end_in_heap = False
        self.end_at = None  # (``queued`` stays: a FIFO entry left behind clears it when popped)

    def _cancel_retx(self) -> None:
        if self.retx_at is not None:
            self.retx_at = None
            self.layer._stale += 1

    def _cancel_timers(self) -> None:
        if self.retx_at is not None:
            self.retx_at = None
            self.layer._stale += 1
        self._drop_end()

    def _end_state(self, duration: float, now: float) -> None:
        """Arm the current state's END timer, or fire it now if it is zero."""
        if duration > 0:
            self._arm_end(now, duration)
        else:
            self.on_end_timer(now)

    def on_retx_timer(self, now: float) -> None:
        """Timer A, E or G fired; machines that retransmit override this (a NIST has none)."""

    def on_end_timer(self, now: float) -> None:
        """The state's END timer fired: B/F/H report a timeout, all terminate."""
        trigger = self.END_TIMER[self.state]
        if self._step(trigger) is self.TERMINATED:
            if trigger in _TIMEOUTS:
                self.layer._timeout(self)
            self._terminate()

    # -- teardown ---------------------------------------------------------------------
    def on_transport_error(self, now: float) -> None:
        """The driver could not send for us: tell the TU; end unless the state stays."""
        self.layer._transport_failure(self)
        if self._step(Trigger.TRANSPORT_ERROR) is self.TERMINATED:
            self._terminate()

    def _terminate(self) -> None:
        self._set_state(self.TERMINATED)
        self._cancel_timers()
        self.layer._remove(self)

    def _send_wire(self) -> None:
        self.layer._out.append((self.wire, self.peer))


_TIMEOUTS = frozenset({Trigger.TIMER_B, Trigger.TIMER_F, Trigger.TIMER_H})
