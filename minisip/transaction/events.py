"""What the transaction layer tells its user (the TU: the PBX core and calls).

Frozen dataclasses, drained with ``TransactionLayer.next_events()``. A key is
the handle of one transaction: a ``ServerKey`` for requests we received, a
``ClientKey`` for requests we sent (``keys.py``). Every client transaction
(``send_request()``) ends with exactly one ``TransactionTerminated``; server
transactions end quietly, as the TU keeps nothing under their keys once it has
answered. Transactions the layer opened for itself (a 482 to a merged request)
produce no events at all.
"""
from __future__ import annotations

from dataclasses import dataclass

# Imported at run time, not only for the type checker: compiled with mypyc (make
# compiled), these classes check their fields' types, and importing this module
# before those classes' modules crashed the interpreter (a segmentation fault).
from ..sip.message import Request, Response
from ..sip.peer import Peer
from .keys import ClientKey, ServerKey, TransactionKey


class Event:
    """Base class of everything ``next_events()`` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new request opened a server transaction: answer it with ``send_response``."""

    request: Request
    peer: Peer
    key: ServerKey


@dataclass(frozen=True, slots=True)
class AckReceived(Event):
    """An ACK that belongs to no transaction (the ACK for a 2xx, RFC 3261 17.2.3),
    or an ACK reaching an INVITE server transaction in RFC 6026's Accepted state."""

    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response to one of our requests: every 1xx, the final response, and
    (INVITE, RFC 6026 Accepted) every further 2xx, retransmitted or forked."""

    response: Response
    key: ClientKey


@dataclass(frozen=True, slots=True)
class StrayResponse(Event):
    """A response no client transaction matches, e.g. a 2xx retransmitted after
    the INVITE client transaction ended: the TU may still need to ACK it."""

    response: Response
    peer: Peer


@dataclass(frozen=True, slots=True)
class TransactionTimeout(Event):
    """Timer B or F (no final response to our request) or Timer H (no ACK to our
    final response to an INVITE). For B and F a ``TransactionTerminated`` follows."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransactionTerminated(Event):
    """The client transaction of a request we sent is gone; forget its key."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransportFailure(Event):
    """The driver reported that it could not send for this transaction
    (``TransactionLayer.transport_error``). For a client transaction a
    ``TransactionTerminated`` follows unless it was Accepted, which RFC 6026 keeps alive."""

    key: TransactionKey
