"""The transaction layer: the one sans-IO object between the transport driver and the TU.

Theory of operation
-------------------
The driver feeds every parsed message with ``receive(msg, peer, now)``; the TU
(PBX core, calls) sends with ``send_request`` / ``send_response`` /
``send_stateless``. Nothing here does I/O or reads a clock: what must go out
collects in ``data_to_send()``, what the TU must hear in ``next_events()``, and
the earliest timer deadline is ``get_timer()``; the driver sleeps until it and
calls ``handle_timer(now)``.

Matching (``keys.py``): requests find server transactions by ``ServerKey``
(branch, sent-by, method; ACK as INVITE), responses find client transactions by
``ClientKey`` (branch, CSeq method). What matches nothing:

* a new request opens a server transaction (IST for INVITE, NIST otherwise,
  CANCEL included: it is a transaction of its own) and goes up as
  ``RequestReceived`` -- unless it is *merged* (RFC 3261 8.2.2.2: no To tag, and
  the Call-ID, From tag and CSeq of a live server transaction under another
  key, i.e. the same request forked back to us along another path). The layer
  answers that one itself with 482 Loop Detected through a transaction of its
  own, which the TU never sees;
* an ACK is the ACK for a 2xx (its own branch) and goes up as ``AckReceived``;
* a response goes up as ``StrayResponse`` (e.g. a 2xx retransmitted after the
  ICT ended: the TU's dialog still ACKs it).

Responses the TU sends find their server transaction by the same key (they copy
the request's Via, Call-ID, From and CSeq). If it has ended, the response goes
out statelessly to where the request's top Via says it came from (RFC 3261
18.2.2 with RFC 3581: ``received`` and ``rport``, which the driver stamps on
arrival); without a usable Via it is dropped and counted.

Timers are deadlines with lazy deletion (see ``_base.py``): an entry whose
deadline no longer equals its transaction's slot is stale and skipped when it
surfaces. Retransmission timers (A, E, G: intervals that double) live in one
heap of ``(deadline, seq, transaction, slot)``; stale heap entries are purged
in one pass once they outnumber the live ones. The timeouts B, F and H, which a
response or an ACK nearly always cancels, go to the heap too: purged in bulk,
their stale entries do not keep ended transactions in memory. The timers that
end a completed state (D, I, J, K, L, M) have a fixed duration each and are
armed at ``now`` + duration, so a FIFO per duration is already in deadline
order: appending and popping are O(1), and 160,000 NISTs waiting on Timer J
cost one reference each in one deque. ``get_timer()`` is the minimum over
the heap top and the FIFO heads.

Settling: over UDP, three states only wait out 32 s after the work is done: an
INVITE server transaction Accepted (RFC 6026: it absorbs repeats of the INVITE),
a non-INVITE one Completed (it answers repeats with its final response) and an
INVITE client transaction Accepted (it passes further 2xx up). Every call leaves
one of each, so at 600 calls/s 19,200 calls' worth are alive. Such a transaction
settles: its object goes, and what it still does is kept in the layer. A server
one leaves the hash of its key in ``_settled`` with its final response's bytes
without what they echo (a NIST) or None (an IST, whose 2xx the TU retransmits
itself, RFC 3261 13.3.1.4: those go back to where the Via says); a client one
leaves its key in ``_clients`` with None. Their end timers share a deadline per
``_GRAIN`` in a FIFO of buckets, so they end up to that much late, never early:
a list entry each instead of a float.
A settled transaction has nothing to send of its own, so a transport error does
not concern it. The key of a settled server transaction is a hash: two live keys
colliding is a 2**-64 chance, and string hashes are keyed per process, so no
stranger can aim for one.
"""
from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from sys import intern
from typing import TYPE_CHECKING, cast

from ..sip.digits import is_digits
from ..sip.errors import BadMessage
from ..sip.message import Request, Response, echoed, make_response
from ..sip.peer import Peer
from . import events as ev
from ._base import END, RETX, Transaction
from .client_invite import ClientInviteTransaction
from .client_non_invite import ClientNonInviteTransaction
from .keys import ClientKey, ServerKey, TransactionKey, server_key
from .server_invite import ServerInviteTransaction
from .server_non_invite import ServerNonInviteTransaction
from .timers import Timers

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

ClientTransactionKey = ClientKey
ServerTransactionKey = ServerKey
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction

#: Purge stale heap entries once there are this many and they outnumber live ones.
_PURGE_MIN = 4096

_INF = float("inf")

#: settled transactions due within this many seconds of a bucket's first end with its last
_GRAIN = 0.1


class _Bucket:
    """Settled transactions that end together, at ``deadline``: the latest of theirs."""

    __slots__ = ("first", "deadline", "servers", "clients")

    def __init__(self, deadline: float) -> None:
        self.first = self.deadline = deadline
        #: the hash of a server key, then its merge hash or -1 (which hash() never returns)
        self.servers: list[int] = []
        self.clients: list[ClientKey] = []

_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


@dataclass(slots=True)
class Counters:
    ict: int = 0  #: INVITE client transactions alive
    nict: int = 0  #: non-INVITE client transactions alive
    ist: int = 0  #: INVITE server transactions alive
    nist: int = 0  #: non-INVITE server transactions alive
    retransmissions_absorbed: int = 0  #: requests/responses/ACKs seen again and not passed up
    retransmissions_sent: int = 0  #: Timer A/E/G retransmissions
    timeouts: int = 0  #: Timer B/F/H
    transport_failures: int = 0  #: transport_error() calls that hit a transaction
    merged: int = 0  #: merged requests answered 482 (RFC 3261 8.2.2.2)
    strays: int = 0  #: responses matching no client transaction
    stateless_responses: int = 0  #: TU responses sent after their transaction ended
    responses_dropped: int = 0  #: TU responses discarded (state or no destination)
    bad_messages: int = 0  #: received messages whose headers failed to parse on first use


class TransactionLayer:
    """All transactions of one SIP stack; see the module docstring.

    Driver side: ``receive(msg, peer, now)``, ``transport_error(key_or_peer, now)``,
    ``data_to_send()``, ``get_timer()``, ``handle_timer(now)``.
    TU side: ``next_events()``, ``send_request(req, peer, now) -> ClientKey``,
    ``send_response(resp, now)``, ``send_stateless(msg, peer)``; ``counters``.
    """

    def __init__(self, timers: Timers = Timers()) -> None:
        self.timers = timers
        self.counters = Counters()
        #: None: a settled INVITE client transaction (see "Settling" above)
        self._clients: dict[ClientKey, ClientTransaction | None] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        #: settled server transactions: hash of the key -> a NIST's final response
        #: without what it echoes (``Response.unechoed``), or None for an accepted INVITE
        self._settled: dict[int, bytes | None] = {}
        #: settled transactions' end timers by duration, each FIFO in deadline order
        self._settling: dict[float, deque[_Bucket]] = {}
        #: RFC 3261 8.2.2.2: the hash of (Call-ID, From tag, CSeq number, method) of live
        #: server transactions whose request had no To tag. A hash, as an answered
        #: INVITE's transaction lives 32 s after its call (RFC 6026) and would otherwise
        #: be the last to hold that Call-ID and tag; string hashes are keyed per process,
        #: so no stranger can make a request's collide with another's.
        #: A settled transaction's entry holds the hash of its key instead.
        self._merge: dict[int, ServerTransaction | int] = {}
        #: for transport_error(peer): live client transactions per peer, and server
        #: transactions per reliable peer (a UDP server transaction has no connection to
        #: lose). Dicts as sets: under churn a set's table is 2-3 times a dict's, and one
        #: callee may have 20,000 INVITEs waiting out Timer M.
        self._by_peer: dict[Peer, dict[Transaction, None]] = {}
        self._out: list[tuple[bytes, Peer]] = []
        self._events: list[ev.Event] = []
        #: retransmission timers (A, E, G), and state timers armed out of order
        self._heap: list[tuple[float, int, Transaction, int]] = []
        #: state timers (B, D, F, H, I, J, K, L, M) by duration, each FIFO in deadline order
        #: (a transaction, not a tuple: its ``end_at`` is the deadline, see ``_head``)
        self._queues: dict[float, deque[Transaction]] = {}
        #: per FIFO, the deadline appended last (to keep each FIFO in order)
        self._tails: dict[float, float] = {}
        self._seq = itertools.count()
        self._stale = 0

    # -- input from the driver ---------------------------------------------------------
    def receive(self, msg: Request | Response, peer: Peer, now: float) -> None:
        """A parsed message from ``peer``.

        The message's header views are parsed lazily and may raise ``BadMessage``
        here for the first time (a To header nobody had read yet): such a message
        is dropped and counted, never raised into the driver's receive loop.
        """
        try:
            if isinstance(msg, Response):
                self._receive_response(msg, peer, now)
            else:
                self._receive_request(msg, peer, now)
        except BadMessage as exc:
            self.counters.bad_messages += 1
            log.debug("dropped a message from %s: %s", peer, exc.reason)

    def _receive_request(self, req: Request, peer: Peer, now: float) -> None:
        method = intern(req.method)  # one "INVITE" for the keys alive 32 s, not one each
        is_ack = method == "ACK"
        key = server_key(req, "INVITE" if is_ack else method)
        txn = self._servers.get(key)
        if txn is not None:
            txn.on_request(req, peer, now)
            return
        if is_ack:  # the ACK for a 2xx is a transaction of its own making
            self._events.append(ev.AckReceived(req, peer))
            return
        if self._settled:
            kh = hash(key)
            if kh in self._settled:  # a repeat: an accepted INVITE's is absorbed
                self.counters.retransmissions_absorbed += 1
                kept = self._settled[kh]
                if kept is not None:  # a NIST's final response, without what it echoes
                    self._out.append((echoed(kept, req), peer))
                return
        merge = None
        if req.to_tag is None:
            merge = hash((req.call_id, req.from_tag, req.cseq[0], method))
            if merge in self._merge:
                self._merged(req, key, peer, now)
                return
        if method == "INVITE":
            txn = ServerInviteTransaction(self, key, peer)
            self.counters.ist += 1
        else:
            txn = ServerNonInviteTransaction(self, key, peer)
            self.counters.nist += 1
        self._servers[key] = txn
        if merge is not None:
            txn.merge = merge
            self._merge[merge] = txn
        if peer.reliable:
            self._by_peer.setdefault(peer, {})[txn] = None
        self._events.append(ev.RequestReceived(req, peer, key))
        if method == "INVITE":  # RFC 3261 17.2.1: we send 100 Trying at once, not after 200 ms
            txn.on_send(make_response(req, 100), now)

    def _merged(self, req: Request, key: ServerKey, peer: Peer, now: float) -> None:
        self.counters.merged += 1
        if req.method == "INVITE":
            txn: ServerTransaction = ServerInviteTransaction(self, key, peer)
            self.counters.ist += 1
        else:
            txn = ServerNonInviteTransaction(self, key, peer)
            self.counters.nist += 1
        txn.silent = True
        self._servers[key] = txn
        if peer.reliable:
            self._by_peer.setdefault(peer, {})[txn] = None
        txn.on_send(make_response(req, 482, "Loop Detected"), now)

    def _receive_response(self, resp: Response, peer: Peer, now: float) -> None:
        branch = resp.branch
        # A plain tuple hashes and compares equal to the ClientKey it spells.
        key = (branch, resp.cseq[1])
        txn = self._clients.get(key) if branch else None  # type: ignore[call-overload]
        if txn is None:
            if branch and key in self._clients:  # settled: RFC 6026 Accepted
                if 200 <= resp.status < 300:  # a 2xx again, or another fork's: up
                    self._events.append(ev.ResponseReceived(resp, ClientKey(branch, key[1])))
                else:
                    self.counters.retransmissions_absorbed += 1
                return
            self.counters.strays += 1
            self._events.append(ev.StrayResponse(resp, peer))
            return
        txn.on_response(resp, now)

    def transport_error(self, key_or_peer: TransactionKey | Peer, now: float) -> None:
        """The driver failed to send for a transaction, or lost a connection to a peer.

        For a peer: every client transaction towards it fails (RFC 3261 8.1.3.1: the
        TU treats it as a 503), and so does every server transaction on a connection
        to it (TCP/TLS: the response has no way back); RFC 6026's Accepted states
        stay until their timer."""
        txns: Iterable[Transaction]
        if isinstance(key_or_peer, Peer):
            txns = list(self._by_peer.get(key_or_peer, ()))
        elif isinstance(key_or_peer, ClientKey):
            t = self._clients.get(key_or_peer)
            txns = () if t is None else (t,)
        else:
            s = self._servers.get(key_or_peer)
            txns = () if s is None else (s,)
        for txn in txns:
            txn.on_transport_error(now)

    # -- input from the TU ---------------------------------------------------------------
    def send_request(self, req: Request, peer: Peer, now: float) -> ClientKey:
        """Open a client transaction (ICT for INVITE, NICT otherwise) and send ``req``.

        The request's top Via must carry a fresh ``z9hG4bK`` branch, except a
        CANCEL, which reuses the branch of the INVITE it cancels (its key differs
        by method). An ACK is no transaction: use ``send_stateless``.
        """
        method = req.method
        branch = req.branch
        if method == "ACK":
            raise ValueError("an ACK opens no transaction: use send_stateless()")
        if not branch:
            raise ValueError("a request sent through a transaction needs a Via branch")
        key = ClientKey(branch, method)
        if key in self._clients:
            raise ValueError(f"a client transaction {key} is already alive")
        txn: ClientTransaction
        if method == "INVITE":
            txn = ClientInviteTransaction(self, key, peer, req, now)
            self.counters.ict += 1
        else:
            txn = ClientNonInviteTransaction(self, key, peer, req, now)
            self.counters.nict += 1
        self._clients[key] = txn
        self._by_peer.setdefault(peer, {})[txn] = None
        return key

    def send_response(self, resp: Response, now: float) -> None:
        """Send a response to a request received earlier, through its transaction."""
        try:
            key = server_key(resp, resp.cseq[1])
        except BadMessage as exc:  # the TU's response lacks a Via or CSeq: a bug, not fatal
            log.warning("dropped a response without a usable Via/CSeq: %s", exc.reason)
            self.counters.responses_dropped += 1
            return
        txn = self._servers.get(key)
        if txn is not None:
            if not txn.on_send(resp, now):
                self.counters.responses_dropped += 1
            return
        # settled: only an accepted INVITE's 2xx (which the TU repeats) goes out, by the Via
        settled = bool(self._settled) and hash(key) in self._settled
        if settled and (self._settled[hash(key)] is not None or not 200 <= resp.status < 300):
            self.counters.responses_dropped += 1
            return
        peer = _via_destination(resp)
        if peer is None:
            self.counters.responses_dropped += 1
            return
        if not settled:
            self.counters.stateless_responses += 1
        self._out.append((resp.to_bytes(), peer))

    def answer_if_unanswered(self, resp: Response, now: float) -> bool:
        """Send a final ``resp`` through its server transaction only if that has sent no
        final response yet: what an error boundary answers (500) after a TU fault."""
        txn = self._servers.get(server_key(resp, resp.cseq[1]))
        return txn is not None and txn.on_send(resp, now)  # (a settled one has answered)

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None:
        """Queue a message outside any transaction (the ACK for a 2xx, a 2xx retransmission)."""
        self._out.append((msg.to_bytes(), peer))

    # -- output ----------------------------------------------------------------------------
    def data_to_send(self) -> list[tuple[bytes, Peer]]:
        out = self._out
        self._out = []
        return out

    def next_events(self) -> list[ev.Event]:
        events = self._events
        self._events = []
        return events

    # -- timers ------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest live deadline, or None when no timer runs."""
        best = None
        heap = self._heap
        while heap:
            deadline, _, txn, slot = heap[0]
            if (txn.retx_at if slot == RETX else txn.end_at) == deadline:
                best = deadline
                break
            heapq.heappop(heap)
            self._stale -= 1
        for queue in self._queues.values():
            head = _head(queue)
            if head is not None and (best is None or head < best):
                best = head
        for buckets in self._settling.values():
            if buckets and (best is None or buckets[0].deadline < best):
                best = buckets[0].deadline
        return best

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first (a state timer before a
        retransmission due at the same instant). Handlers see the deadline, not
        ``now``, as the time they fired at, so a late wake-up does not shift the
        retransmission schedule."""
        for buckets in self._settling.values():
            while buckets and buckets[0].deadline <= now:
                self._end_settled(buckets.popleft())
        heap = self._heap
        queues = self._queues.values()
        pop = heapq.heappop
        while True:
            first = heap[0][0] if heap else _INF
            source = None
            for queue in queues:
                head = _head(queue)
                if head is not None and head <= first:
                    first = head
                    source = queue
            if first > now:
                break
            if source is None:
                deadline, _, txn, slot = pop(heap)
                if slot == RETX:
                    if txn.retx_at != deadline:
                        self._stale -= 1
                        continue
                    txn.retx_at = None
                    txn.on_retx_timer(deadline)
                    continue
                if txn.end_at != deadline:
                    self._stale -= 1
                    continue
                txn.end_in_heap = False  # (this entry is gone)
            else:
                txn = source.popleft()
                txn.queued = False
                deadline = first
            if txn.end_at == deadline:
                txn._drop_end()
                txn.on_end_timer(deadline)
        if self._stale > _PURGE_MIN and 2 * self._stale > len(heap):
            self._purge()

    def _queue_end(self, txn: Transaction, deadline: float, duration: float) -> bool:
        """Arm a state timer. Every state timer of one duration is armed at ``now`` +
        that duration, so with ``now`` never going back its FIFO stays sorted:
        O(1) where the heap would be O(log n). A deadline out of order goes to the
        heap, and so does a transaction still in a FIFO (an entry it left behind
        there): True then. So a FIFO holds each transaction once, and a live entry's
        deadline is its transaction's ``end_at``: no tuple per entry."""
        queue = self._queues.get(duration)
        if queue is None:
            queue = self._queues[duration] = deque()
        if txn.queued or (queue and self._tails[duration] > deadline):
            heapq.heappush(self._heap, (deadline, next(self._seq), txn, END))
            return True
        queue.append(txn)
        txn.queued = True
        self._tails[duration] = deadline
        return False

    def _settle_server(self, txn: ServerTransaction, kept: bytes | None, duration: float,
                       now: float) -> None:
        """A UDP IST Accepted (``kept`` None) or NIST Completed settles (see above)."""
        key = cast(ServerKey, txn.key)
        if self._servers.get(key) is txn:
            del self._servers[key]
        kh = hash(key)
        self._settled[kh] = kept
        merge = txn.merge
        if merge is not None and self._merge.get(merge) is txn:
            self._merge[merge] = kh
        servers = self._bucket(now + duration, duration).servers
        servers.append(kh)
        servers.append(-1 if merge is None else merge)

    def _settle_client(self, txn: ClientInviteTransaction, duration: float, now: float) -> None:
        """A UDP ICT Accepted settles (see above)."""
        key = cast(ClientKey, txn.key)
        self._clients[key] = None
        self._unpeer(txn)
        self._bucket(now + duration, duration).clients.append(key)

    def _unpeer(self, txn: Transaction) -> None:
        """Take ``txn`` out of its peer's table (for ``transport_error(peer)``)."""
        peers = self._by_peer.get(txn.peer)
        if peers is not None:
            peers.pop(txn, None)
            if not peers:
                del self._by_peer[txn.peer]

    def _bucket(self, deadline: float, duration: float) -> _Bucket:
        """The bucket a settled transaction due at ``deadline`` ends with."""
        buckets = self._settling.get(duration)
        if buckets is None:
            buckets = self._settling[duration] = deque()
        if buckets and deadline <= buckets[-1].first + _GRAIN:
            bucket = buckets[-1]
            bucket.deadline = deadline  # (deadlines only grow: ``now`` never goes back)
            return bucket
        bucket = _Bucket(deadline)
        buckets.append(bucket)
        return bucket

    def _end_settled(self, bucket: _Bucket) -> None:
        """Timers L, J and M of a bucket's settled transactions fired."""
        servers = bucket.servers
        settled, merges, c = self._settled, self._merge, self.counters
        for i in range(0, len(servers), 2):
            kh = servers[i]
            if kh in settled:
                if settled.pop(kh) is None:
                    c.ist -= 1
                else:
                    c.nist -= 1
            merge = servers[i + 1]
            if merge != -1 and merges.get(merge) == kh:
                del merges[merge]
        for key in bucket.clients:
            if key in self._clients and self._clients[key] is None:
                del self._clients[key]
                c.ict -= 1
                self._events.append(ev.TransactionTerminated(key))

    def _purge(self) -> None:
        self._heap = [e for e in self._heap
                      if (e[2].retx_at if e[3] == RETX else e[2].end_at) == e[0]]
        heapq.heapify(self._heap)
        self._stale = 0

    # -- called by the machines --------------------------------------------------------------
    def _event(self, txn: Transaction, event: ev.Event) -> None:
        if not txn.silent:
            self._events.append(event)

    def _timeout(self, txn: Transaction) -> None:
        self.counters.timeouts += 1
        if not txn.silent:
            self._events.append(ev.TransactionTimeout(txn.key))

    def _transport_failure(self, txn: Transaction) -> None:
        self.counters.transport_failures += 1
        if not txn.silent:
            self._events.append(ev.TransportFailure(txn.key))

    def _remove(self, txn: Transaction) -> None:
        key = txn.key
        kind = txn.KIND
        c = self.counters
        if kind == "nist":
            c.nist -= 1
        elif kind == "nict":
            c.nict -= 1
        elif kind == "ist":
            c.ist -= 1
        else:
            c.ict -= 1
        if isinstance(key, ServerKey):
            if self._servers.get(key) is txn:
                del self._servers[key]
            merge = txn.merge  # type: ignore[attr-defined]
            if merge is not None and self._merge.get(merge) is txn:
                del self._merge[merge]
        elif self._clients.get(key) is txn:
            del self._clients[key]
        if txn.reliable or kind in ("ict", "nict"):
            self._unpeer(txn)
        if kind in ("ict", "nict"):
            self._events.append(ev.TransactionTerminated(key))


def _head(queue: deque[Transaction]) -> float | None:
    """The deadline of a FIFO's first live entry, dropping the stale ones before it. An
    entry is live while its transaction's END slot is armed and not in the heap."""
    while queue:
        txn = queue[0]
        if txn.end_at is not None and not txn.end_in_heap:
            return txn.end_at
        queue.popleft()
        txn.queued = False
    return None


def _via_destination(resp: Response) -> Peer | None:
    """RFC 3261 18.2.2 / RFC 3581: where a response goes when no transaction remembers."""
    try:
        via = resp.top_via
    except BadMessage:
        return None
    params = via.params
    transport = via.transport.lower()
    host = params.get("received") or via.host
    rport = params.get("rport") or ""
    port = int(rport) if is_digits(rport) and len(rport) <= 5 and int(rport) <= 65535 \
        else via.port or _DEFAULT_PORTS.get(transport, 5060)
    return Peer(transport, host, port)
