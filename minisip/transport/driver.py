"""The trio driver: sockets in, sans-IO layers, sockets out, one timer.

Bytes from any listener go through ``on_message`` synchronously: parse, stamp
the Via (RFC 3581), feed the transaction layer, let the transaction user act.
What the layers queue leaves in ``flush()`` at the end of each receive batch,
after the location service has committed (so no 200 OK is sent for a binding
a crash could lose). All timers of all layers are deadlines pulled by one task
sleeping in one cancel scope whose deadline moves (ARCHITECTURE.md rule 2).

Fault isolation: ``on_message`` (one message) and ``fire_timers`` (one timer
source) are the SIP entry points, and each is one error boundary. An exception
of any type is recorded in ``faults`` (``minisip/faults.py``); a request whose
server transaction has not answered yet gets ``500``; the events queued behind
the one that failed still run; the server carries on.

Transport failures reach the transactions (RFC 3261 8.1.3.1, 17.1.4): a
datagram that cannot be sent (no connection to a TCP/TLS peer any more, a
send error) and a connection that closes are ``transport_error``s of the
layer, so a call to a device whose connection is gone fails at once instead
of after Timer B, and server transactions on a dead connection are removed.
"""
from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Protocol

import trio

from ..faults import Faults
from ..sip.errors import BadMessage
from ..sip._text import split_commas
from ..sip.message import Request, Response, make_response, new_tag
from ..sip.parser import parse_message_untrusted
from ..sip.peer import Peer
from ..transaction.layer import TransactionLayer

log = logging.getLogger(__name__)


DROP = object()  #: what ``stateless`` returns for a request to ignore entirely
#: RFC 5626 4.4.1: over UDP a phone may keep its NAT binding open with CRLFs alone (or an
#: empty datagram); RFC 3261 7.5 says CRLFs before a message are ignored: not a bad message
_KEEPALIVE_MAX = 16
#: flush() rounds: a failed send makes events, whose answers may fail to send in turn
_FLUSH_ROUNDS = 4
#: new work that may be refused; requests inside calls always go through
_SHEDDABLE = frozenset({"INVITE", "REGISTER", "SUBSCRIBE", "OPTIONS", "MESSAGE"})
#: what a server shutting down refuses: nothing new may start that it would have to end
_REFUSED_DRAINING = frozenset({"INVITE", "REGISTER", "SUBSCRIBE"})


class Sender(Protocol):
    def send(self, data: bytes, peer: Peer) -> bool:
        """Hand ``data`` to the socket; False when it certainly cannot reach ``peer``."""


class TimerSource(Protocol):
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


_REJECT_HEADERS = {b"via": b"Via", b"v": b"Via", b"from": b"From", b"f": b"From",
                   b"to": b"To", b"t": b"To", b"call-id": b"Call-ID", b"i": b"Call-ID",
                   b"cseq": b"CSeq"}


def reject_untrusted(data: bytes, status: int, reason: str) -> bytes | None:
    """A stateless error response to bytes that did not parse, or None.

    Copies the raw Via/From/To/Call-ID/CSeq lines so the sender can match it;
    without a Via there is nowhere to answer and the bytes are dropped.
    """
    head = data.split(b"\r\n\r\n", 1)[0].lstrip(b"\r\n")
    lines = head.split(b"\r\n")
    if not lines or lines[0].startswith(b"SIP/") or b" " not in lines[0]:
        return None
    out = [b"SIP/2.0 %d %s" % (status, reason.encode("utf-8", "replace")[:100])]
    have_via = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        canon = _REJECT_HEADERS.get(name.strip().lower()) if sep else None
        if canon is not None:
            have_via |= canon == b"Via"
            out.append(canon + b": " + value.strip())
    if not have_via:
        return None
    out.append(b"Content-Length: 0\r\n\r\n")
    return b"\r\n".join(out)


def stamp_via(req: Request, peer: Peer) -> None:
    """RFC 3261 18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via."""
    via = req.top_via
    params = via.params
    changed = False
    if via.host != peer.host:
        params["received"] = peer.host
        changed = True
    if "rport" in params and not params["rport"]:
        params["rport"] = str(peer.port)
        params.setdefault("received", peer.host)
        changed = True
    if changed:  # the cached view is updated in place; only the first line's text changes
        first = req.headers.get("Via") or ""
        rest = split_commas(first)[1:]
        req.headers.set_first("Via", ", ".join([str(via), *rest]))


class SipDriver:
    def __init__(self, layer: TransactionLayer, on_events: Callable[[float], None],
                 commit: Callable[[], None], trace: Callable[[str, bytes, Peer], None]
                 | None = None, *, faults: Faults | None = None,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.layer = layer
        self.on_events = on_events
        self.commit = commit
        self.trace = trace
        self.faults = faults if faults is not None else Faults()
        self.clock = clock  #: monotonic "now" of the layers (a fake one in tests)
        self.keepalives = 0  #: CRLF keep-alives received over UDP (RFC 5626 3.5.1)
        self.send_failures = 0  #: datagrams that could not be sent: transport errors
        self.senders: dict[str, list[Sender]] = {"udp": [], "tcp": [], "tls": []}
        self.wall_timers: list[TimerSource] = []  # deadlines in time.time()
        self.bad_messages = 0
        self.shed = 0  #: new requests refused with 503 while overloaded
        self.draining = False  #: shutting down: new calls and registrations get 503
        #: RFC 3261 8.2.7 stateless UAS: requests it answers skip the transaction layer
        self.stateless: Callable[[Request, Peer, float], Response | object | None] | None = None
        self.advertised = ""  #: system.yaml's sip_address, when set
        self._sources: dict[str, str] = {}
        self.mono_timers: list[TimerSource] = []  # deadlines in trio.current_time()
        self._timer_scope: trio.CancelScope | None = None

    def overloaded(self) -> bool:
        """A UDP socket's queue has held datagrams too long for a while (udp.py)."""
        return any(s.overloaded() for s in self.senders["udp"])  # type: ignore[attr-defined]

    def add_sender(self, transport: str, sender: Sender) -> None:
        self.senders[transport].append(sender)

    def local_address(self, peer: Peer) -> tuple[str, int]:
        """Our address as ``peer`` reaches it: for Via sent-by and Contact."""
        if peer.transport != "udp":
            for s in self.senders[peer.transport]:
                local = s.local_for(peer)  # type: ignore[attr-defined]
                if local is not None:
                    return local
        v6 = ":" in peer.host
        # No connection yet (the first request dials it): the listener of the transport,
        # whose port is the one a TLS peer must come back to (not the UDP one).
        for s in [*self.senders[peer.transport], *self.senders["udp"]]:
            host, port = s.host, s.port  # type: ignore[attr-defined]
            if (":" in host) != v6:
                continue
            if self.advertised:
                return self.advertised, port
            if host in ("0.0.0.0", "::"):
                host = self._route_source(peer.host, v6)
            return host, port
        return self.advertised or "127.0.0.1", 5060

    def _route_source(self, dest: str, v6: bool) -> str:
        # The kernel's choice of source address towards dest (no packet is sent).
        cached = self._sources.get(dest)
        if cached is None:
            with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET,
                               socket.SOCK_DGRAM) as s:
                try:
                    s.connect((dest, 9))
                    cached = s.getsockname()[0]
                except OSError:
                    cached = "::1" if v6 else "127.0.0.1"
            if len(self._sources) > 10_000:
                self._sources.clear()
            self._sources[dest] = cached
        return cached

    # -- inbound ---------------------------------------------------------------
    def on_message(self, data: bytes, peer: Peer) -> None:
        """One message from ``peer``: the SIP error boundary (see the module docstring)."""
        if self.trace is not None:
            self.trace("in", data, peer)
        now = self.clock()
        msg: Request | Response | None = None
        try:
            msg = self._parse(data, peer)
            if msg is not None:
                self._receive(msg, peer, now)
        except Exception as exc:  # a bug met by this one message: count it, carry on
            self._fault("sip", exc, peer, now, msg)

    def _parse(self, data: bytes, peer: Peer) -> Request | Response | None:
        if len(data) <= _KEEPALIVE_MAX and not data.strip(b"\r\n"):
            self.keepalives += 1  # (over TCP/TLS the framer answers the pings itself)
            return None
        try:
            msg = parse_message_untrusted(data)
            if isinstance(msg, Request):
                stamp_via(msg, peer)
            return msg
        except BadMessage as exc:
            self.bad_messages += 1
            log.debug("bad message from %s: %s", peer, exc.reason)
            if exc.status is not None:
                reply = reject_untrusted(data, exc.status, exc.reason)
                if reply is not None:
                    self.send(reply, peer)
            return None

    def _receive(self, msg: Request | Response, peer: Peer, now: float) -> None:
        if isinstance(msg, Request) and msg.to_tag is None and msg.method in _SHEDDABLE:
            # PERFORMANCE.md: an overloaded server that queues collapses (answers
            # arrive after T1, clients retransmit). Refuse new work early instead.
            if self.draining and msg.method in _REFUSED_DRAINING:
                reason = "Shutting down"
            elif self.overloaded():
                self.shed += 1
                reason = "Overloaded"
            else:
                reason = ""
            if reason:
                self.send(make_response(msg, 503, reason, to_tag=new_tag(),
                                        headers=[("Retry-After", "5")]).to_bytes(), peer)
                return
        if self.stateless is not None and isinstance(msg, Request):
            answer = self.stateless(msg, peer, now)
            if isinstance(answer, Response):  # answered without a transaction
                self.send(answer.to_bytes(), peer)
                return
            if answer is DROP:
                return
        self.layer.receive(msg, peer, now)
        self.on_events(now)

    def _fault(self, kind: str, exc: Exception, where: object, now: float,
               msg: Request | Response | None = None) -> None:
        """The boundary's one handler: record, answer 500, run what is still queued."""
        self.faults.record(kind, exc, str(where))
        if isinstance(msg, Request) and msg.method != "ACK":
            try:  # RFC 3261 21.5.1; only if the transaction has not answered yet
                self.layer.answer_if_unanswered(
                    make_response(msg, 500, "Server Internal Error", to_tag=new_tag()), now)
            except Exception as again:
                log.debug("no 500 for the faulty request: %r", again)
        self._run_events(now)

    def _run_events(self, now: float) -> None:
        """Let the TU handle the events still queued; each fault costs only its event."""
        for _ in range(10_000):
            try:
                self.on_events(now)
                return
            except Exception as exc:
                self.faults.record("sip", exc, "event")

    def connection_lost(self, peer: Peer) -> None:
        """A TCP/TLS connection closed: its transactions fail now (RFC 3261 17.1.4)."""
        now = self.clock()
        try:
            self.layer.transport_error(peer, now)
        except Exception as exc:
            self.faults.record("sip", exc, f"connection lost {peer}")
        self._run_events(now)
        self.flush()

    # -- outbound --------------------------------------------------------------
    def send(self, data: bytes, peer: Peer) -> bool:
        """Send one message; False when it cannot reach ``peer`` (a transport error)."""
        if self.trace is not None:
            self.trace("out", data, peer)
        senders = self.senders.get(peer.transport, ())
        if peer.transport == "udp":
            v6 = ":" in peer.host
            for s in senders:  # the listener of the peer's address family
                if (":" in s.host) == v6:  # type: ignore[attr-defined]
                    return s.send(data, peer)
            return False
        # the connection the request came on: without one, a TCP/TLS peer is unreachable
        return any(s.send(data, peer) for s in senders)

    def flush(self) -> None:
        """End of a receive batch: commit state, then send what was queued.

        A message that cannot be sent is a transport error for the transactions
        towards that peer; the TU's reaction (a 408 relayed to a caller, say) is
        committed and sent in the next round."""
        try:
            self._flush()
        except Exception as exc:  # the batch's end is an entry point too
            self.faults.record("sip", exc, "flush")

    def _flush(self) -> None:
        now = self.clock()
        for _ in range(_FLUSH_ROUNDS):
            self.commit()
            failed: set[Peer] = set()
            for data, peer in self.layer.data_to_send():
                if not self.send(data, peer):
                    self.send_failures += 1
                    failed.add(peer)
            if not failed:
                break
            for peer in failed:
                self.layer.transport_error(peer, now)
            self._run_events(now)
        self._rearm()

    # -- timers ----------------------------------------------------------------
    def next_deadline(self) -> float:
        """The earliest timer of every layer, on ``clock``'s time line (inf: none)."""
        deadline = self.layer.get_timer()
        best = math.inf if deadline is None else deadline
        for src in self.mono_timers:
            t = src.get_timer()
            if t is not None and t < best:
                best = t
        if self.wall_timers:
            offset = self.clock() - time.time()
            for src in self.wall_timers:
                t = src.get_timer()
                if t is not None and t + offset < best:
                    best = t + offset
        return best

    def _rearm(self) -> None:
        scope = self._timer_scope
        if scope is not None:
            deadline = self.next_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    async def run_timers(self) -> None:
        while True:
            with trio.CancelScope(deadline=self.next_deadline()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            self.fire_timers(trio.current_time())

    def fire_timers(self, now: float) -> None:
        """Fire what is due at ``now``: the timer error boundary. A source whose handler
        fails loses only the timer that failed (it was popped); the rest fire next round."""
        sources: list[tuple[TimerSource, float]] = [(self.layer, now)]
        sources += [(src, now) for src in self.mono_timers]
        if self.wall_timers:
            wall = time.time()
            sources += [(src, wall) for src in self.wall_timers]
        for src, at in sources:
            try:
                src.handle_timer(at)
            except Exception as exc:
                self.faults.record("timer", exc, type(src).__name__)
        self._run_events(now)
        self.flush()
