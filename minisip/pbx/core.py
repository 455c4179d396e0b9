"""The transaction user: turns transaction events into PBX actions.

Every request that reaches a server transaction gets exactly one final
response from here or from the call it belongs to (resiprocate's rule: an
unanswered request leaks a transaction). Requests are dispatched by a method
table after the checks every request passes first (RFC 3261 8.2); requests
inside a dialog go to the call that owns the dialog.

The method table is what minisip supports outside a dialog, and the Allow
header says so: a service takes a method with ``route_method`` (MESSAGE,
SUBSCRIBE, ...) and Allow grows with it. Until then a method RFC 3261 knows
but nobody handles gets 405 with Allow (8.2.1), an unknown one 501; the
methods that live only inside a dialog (INFO, UPDATE, PRACK, NOTIFY, BYE) get
481 outside one (RFC 6086 4.2.1, 3311, 3262 3, 6665 4.1.3, 3261 15.1.2), not a
200 that throws them away.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ..sip.errors import BadMessage
from ..sip.message import Request, Response, make_response, new_branch, new_tag
from ..sip.peer import Peer
from ..transaction import events as ev
from ..transaction.keys import ServerKey
from ..transaction.layer import TransactionLayer
from ..transport.driver import DROP
from .guard import is_scanner, security_event
from .registrar import Registrar
from .timers import TimerHeap

log = logging.getLogger(__name__)

#: the methods minisip knows, in the order the Allow header lists those with a handler
METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE",
           "PRACK", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH")
#: methods that exist only inside a dialog: outside one they get 481
DIALOG_ONLY = frozenset({"BYE", "INFO", "UPDATE", "PRACK", "NOTIFY"})
#: option tags of the extensions minisip implements (Supported, and Require checks);
#: add one here when its extension is implemented, never before
SUPPORTED_EXTENSIONS = ("100rel", "replaces", "path")
SUPPORTED = ", ".join(SUPPORTED_EXTENSIONS)
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
_OUT_OF_DIALOG = frozenset({"REGISTER", "CANCEL"})  # a To tag on these names no dialog

Publish = Callable[[str, str, dict[str, Any]], None]
Handler = Callable[[Request, Peer, float], "Response | None"]
OnResponse = Callable[[Any, Response, object], None]


class Pbx:
    def __init__(self, layer: TransactionLayer, registrar: Registrar,
                 publish: Publish, *, now: Callable[[], float],
                 local_address: Callable[[Peer], tuple[str, int]],
                 server_header: str = "minisip") -> None:
        self.layer = layer
        self.registrar = registrar
        self.publish = publish
        #: whether a control-socket topic has a listener (the server sets the bus's)
        self.wants: Callable[[str], bool] = lambda topic: True
        self.now = now
        self.local_address = local_address
        self.server_header = server_header
        self.timers = TimerHeap()
        self.calls: Any = None  # the call controller, set by the server when calls are on
        self._methods: dict[str, Handler] = {}
        self.allow = ""  #: the Allow header: the methods with a handler
        self.route_method("REGISTER", self.registrar.handle)
        self.route_method("OPTIONS", self.options)
        for method in DIALOG_ONLY:
            self.route_method(method, self._no_dialog)
        self._events: dict[type, Callable[[Any, float], None]] = {
            ev.RequestReceived: self._on_request,
            ev.AckReceived: self._on_ack,
            ev.ResponseReceived: self._on_response,
            ev.StrayResponse: self._on_stray,
            ev.TransactionTimeout: self._on_timeout,
            ev.TransactionTerminated: self._on_terminated,
            ev.TransportFailure: self._on_transport_failure,
        }
        self._client: dict[object, tuple[OnResponse | None, Any]] = {}
        self._dialog_owners: dict[str, Callable[[Request], bool]] = {}
        self.allow_events = ""  #: event packages served (RFC 6665 Allow-Events), if any
        self._pending: deque[ev.Event] = deque()
        #: our requests still waiting for a final response (shutdown waits for them):
        #: transaction key -> "METHOD to peer", for the log
        self._unanswered: dict[object, tuple[str, Peer]] = {}  #: key -> (method, peer)
        self._on_answered: Callable[[], None] | None = None
        self.scanners_dropped = 0
        self._scanner_logged: dict[str, float] = {}  #: source -> when last logged
        self.bad_input = 0  #: messages whose lazily read headers were bad: 4xx or dropped

    def route_method(self, method: str, handler: Handler, *,
                     owns: Callable[[Request], bool] | None = None) -> None:
        """Handle requests of ``method`` outside a dialog with ``handler`` (which returns
        the response, or None when it answers later itself); Allow lists it from now on.
        ``owns``: which of the method's requests with a To tag are the handler's, as
        it keeps dialogs of its own (subscriptions do); the others go to the calls."""
        self._methods[method] = handler
        if owns is not None:
            self._dialog_owners[method] = owns
        known = [m for m in METHODS if m in self._methods]
        self.allow = ", ".join(known + sorted(set(self._methods) - set(METHODS)))

    # -- transaction events ---------------------------------------------------------
    def handle_events(self, now: float) -> None:
        """Handle what the transaction layer reported, in order. An event whose handler
        raises is consumed; the rest stay queued for the caller's error boundary (the
        driver) to run them after it recorded the fault."""
        pending = self._pending
        pending.extend(self.layer.next_events())
        while pending:
            event = pending.popleft()
            try:
                self._events.get(type(event), _ignore)(event, now)
            except BadMessage as exc:  # bad input found late, in a header read lazily
                self._bad_input(event, exc, now)

    def _bad_input(self, event: ev.Event, exc: BadMessage, now: float) -> None:
        """Rule 4: a request with a bad header gets its 4xx; anything else is dropped."""
        self.bad_input += 1
        log.debug("bad input in %s: %s", type(event).__name__, exc.reason)
        if isinstance(event, ev.RequestReceived) and event.request.method != "ACK":
            resp = make_response(event.request, exc.status or 400, exc.reason, to_tag=new_tag())
            self.layer.answer_if_unanswered(resp, now)

    def stateless(self, req: Request, peer: Peer, now: float) -> Response | object | None:
        """Answers given without a transaction (RFC 3261 8.2.7), or DROP, or None.

        Scanners get nothing at all. A REGISTER without credentials gets its 401
        statelessly, the RFC's own example: half of all registration traffic then
        never creates a transaction that would live for Timer J (32 s). So does an
        OPTIONS outside a dialog: the keep-alive ping phones and proxies send every
        few seconds leaves no state behind.
        """
        agent = req.headers.get("User-Agent")
        if is_scanner(agent):
            self.scanners_dropped += 1  # no answer at all: scanners learn nothing
            self._scanner_event(peer, agent or "", now)
            return DROP
        try:
            if req.method == "OPTIONS" and req.to_tag is None \
                    and self._methods.get("OPTIONS") == self.options:
                return self._precheck(req) or self.options(req, peer, now)
            if req.method == "REGISTER" and "authorization" not in req.headers:
                return self._precheck(req) or self.registrar.handle(req, peer, now)
            if (req.method == "INVITE" and req.to_tag is None and self.calls is not None
                    and "proxy-authorization" not in req.headers):
                # The same for a new call's first INVITE: 407 without a transaction
                # (its ACK then matches nothing and is dropped, as it should be).
                return self._precheck(req) or self.calls.challenge(req, peer, now)
        except BadMessage as exc:
            return make_response(req, exc.status or 400, exc.reason, to_tag=new_tag())
        return None

    def _scanner_event(self, peer: Peer, agent: str, now: float) -> None:
        # A scan sends thousands of requests: one log line per source and second
        # is enough for fail2ban, and keeps the log readable.
        last = self._scanner_logged.get(peer.host)
        if last is not None and now - last < 1.0:
            return
        if len(self._scanner_logged) > 10_000:
            self._scanner_logged.clear()
        self._scanner_logged[peer.host] = now
        security_event("scanner_dropped", peer, user_agent=agent[:80])

    def _on_request(self, event: ev.RequestReceived, now: float) -> None:
        req = event.request
        resp = self._precheck(req) or self._dispatch(req, event.peer, now)
        if resp is not None:
            self.layer.send_response(resp, now)

    def _dispatch(self, req: Request, peer: Peer, now: float) -> Response | None:
        if req.to_tag is not None and self.calls is not None and req.method not in _OUT_OF_DIALOG:
            owns = self._dialog_owners.get(req.method)
            if owns is None or not owns(req):
                return self.calls.in_dialog(req, peer, now)
        handler = self._methods.get(req.method)
        if handler is None:
            return self._not_supported(req)
        return handler(req, peer, now)

    def _precheck(self, req: Request) -> Response | None:
        """RFC 3261 8.2.1-8.2.3: scheme, then extensions."""
        if req.request_uri.scheme not in URI_SCHEMES:
            return make_response(req, 416, to_tag=new_tag())
        if req.method not in ("ACK", "CANCEL"):
            unknown = [t for t in (v.strip() for v in req.headers.values("Require"))
                       if t.lower() not in SUPPORTED_EXTENSIONS and t]
            if unknown:
                return make_response(req, 420, to_tag=new_tag(),
                                     headers=[("Unsupported", ", ".join(unknown))])
        return None

    def _on_ack(self, event: ev.AckReceived, now: float) -> None:
        if self.calls is not None:
            self.calls.on_ack(event.request, event.peer)

    def _on_response(self, event: ev.ResponseReceived, now: float) -> None:
        if event.response.status >= 200:
            self._answered(event.key)
        entry = self._client.get(event.key)
        if entry is None:
            return
        status = event.response.status
        if status >= 300 or (status >= 200 and event.response.cseq[1] != "INVITE"):
            # the last response the transaction passes up (an INVITE's 2xx may repeat,
            # RFC 6026; its 300-699 may not): the entry, and what it holds, go now
            del self._client[event.key]
        on_response, leg = entry
        if on_response is not None:
            on_response(leg, event.response, event.key)

    def _on_stray(self, event: ev.StrayResponse, now: float) -> None:
        if self.calls is not None:
            self.calls.on_stray(event.response, event.peer)

    def _on_timeout(self, event: Any, now: float) -> None:
        self._answered(getattr(event, "key", None))
        entry = self._client.pop(getattr(event, "key", None), None)
        if entry is None:
            return
        on_response, leg = entry
        if on_response is not None:  # a request nobody answered is a 408 to its sender
            on_response(leg, _local_response(leg, 408, "Request Timeout"), event.key)

    def _on_transport_failure(self, event: ev.TransportFailure, now: float) -> None:
        """RFC 3261 8.1.3.1: a request we sent failed like a timeout (the caller of
        ``send_request`` hears a 408); a request we received lost its way back."""
        if isinstance(event.key, ServerKey):
            if self.calls is not None:
                self.calls.on_caller_lost(event.key)
            return
        entry = self._client.pop(event.key, None)
        if entry is None:
            return
        on_response, leg = entry
        if on_response is not None:
            on_response(leg, _local_response(leg, 503, "Service Unavailable"), event.key)

    def _on_terminated(self, event: ev.TransactionTerminated, now: float) -> None:
        self._answered(event.key)
        self._client.pop(event.key, None)

    def _answered(self, key: object) -> None:
        unanswered = self._unanswered
        if unanswered.pop(key, None) is not None:
            if not unanswered and self._on_answered is not None:
                fn, self._on_answered = self._on_answered, None
                fn()

    def when_answered(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once every request we sent has its final response (or timed out)."""
        if self._unanswered:
            self._on_answered = fn
        else:
            fn()

    @property
    def unanswered(self) -> list[str]:
        """Our requests waiting for a final response, as "METHOD to peer"."""
        return [f"{method} to {peer.transport}:{peer.host}:{peer.port}"
                for method, peer in self._unanswered.values()]

    # -- sending, for calls ---------------------------------------------------------------
    def send_request(self, req: Request, peer: Peer, on_response: OnResponse | None,
                     leg: Any) -> object:
        key = self.layer.send_request(req, peer, self.now())
        self._client[key] = (on_response, leg)
        self._unanswered[key] = (req.method, peer)
        return key

    def rebind(self, key: object, on_response: OnResponse | None, leg: Any = None) -> None:
        """Hand what a live client transaction still passes up to ``on_response``
        (an ended call leaves a small stand-in instead of itself)."""
        if key in self._client:
            self._client[key] = (on_response, leg)

    def send_response(self, resp: Response) -> None:
        self.layer.send_response(resp, self.now())

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None:
        self.layer.send_stateless(msg, peer)

    def via_for(self, peer: Peer) -> str:
        host, port = self.local_address(peer)
        h = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{peer.transport.upper()} {h}:{port};branch={new_branch()};rport"

    def contact_for(self, peer: Peer, user: str) -> str:
        host, port = self.local_address(peer)
        h = f"[{host}]" if ":" in host else host
        transport = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:{user}@{h}:{port}{transport}>"

    # -- simple methods ------------------------------------------------------------
    def options(self, req: Request, peer: Peer, now: float) -> Response:
        headers = [("Allow", self.allow), ("Supported", SUPPORTED),
                   ("Accept", "application/sdp"), ("Server", self.server_header)]
        if self.allow_events:
            headers.append(("Allow-Events", self.allow_events))
        return make_response(req, 200, to_tag=new_tag(), headers=headers)

    def _no_dialog(self, req: Request, peer: Peer, now: float) -> Response:
        return make_response(req, 481, to_tag=new_tag())

    def _not_supported(self, req: Request) -> Response:
        """RFC 3261 8.2.1: a known method nobody handles is 405, an unknown one 501."""
        status = 405 if req.method in METHODS else 501
        return make_response(req, status, to_tag=new_tag(), headers=[("Allow", self.allow)])


def _ignore(event: Any, now: float) -> None:
    pass


def _local_response(leg: Any, status: int, reason: str) -> Response:
    """The response a request's sender hears when none came (RFC 3261 8.1.3.1: a
    timeout is a 408, a transport failure a 503)."""
    invite = getattr(leg, "invite", None)
    resp = Response(status, reason)
    if invite is not None:
        for name in ("Via", "From", "To", "Call-ID"):
            for v in invite.headers.get_all(name):
                resp.headers.add(name, v)
        resp.headers.add("CSeq", f"{invite.cseq[0]} {invite.cseq[1]}")
    return resp
