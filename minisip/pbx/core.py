"""The transaction user: turns transaction events into PBX actions.

Every request that reaches a server transaction gets exactly one final
response from here (resiprocate's rule: an unanswered request leaks a
transaction). Requests are dispatched by a method table; the checks every
request passes first (RFC 3261 8.2) come before it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..sip.errors import BadMessage
from ..sip.message import Request, Response, make_response, new_tag
from ..sip.peer import Peer
from ..transaction import events as ev
from ..transaction.layer import TransactionLayer
from .guard import is_scanner
from .registrar import Registrar

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, MESSAGE, NOTIFY"
SUPPORTED_EXTENSIONS = frozenset({"path", "outbound", "gruu"})
SUPPORTED = ", ".join(sorted(SUPPORTED_EXTENSIONS))
URI_SCHEMES = frozenset({"sip", "sips", "tel"})

Publish = Callable[[str, str, dict[str, Any]], None]


class Pbx:
    def __init__(self, layer: TransactionLayer, registrar: Registrar,
                 publish: Publish, server_header: str = "minisip") -> None:
        self.layer = layer
        self.registrar = registrar
        self.publish = publish
        self.server_header = server_header
        self._methods: dict[str, Callable[[Request, Peer, float], Response]] = {
            "REGISTER": self.registrar.handle,
            "OPTIONS": self._options,
        }
        self._events: dict[type, Callable[[Any, float], None]] = {
            ev.RequestReceived: self._on_request,
            ev.AckReceived: self._ignore,
            ev.ResponseReceived: self._ignore,
            ev.StrayResponse: self._ignore,
            ev.TransactionTimeout: self._ignore,
            ev.TransactionTerminated: self._ignore,
            ev.TransportFailure: self._ignore,
        }
        self.scanners_dropped = 0

    def handle_events(self, now: float) -> None:
        for event in self.layer.next_events():
            self._events.get(type(event), self._ignore)(event, now)

    def _ignore(self, event: Any, now: float) -> None:
        pass

    def _on_request(self, event: ev.RequestReceived, now: float) -> None:
        req = event.request
        if is_scanner(req.headers.get("User-Agent")):
            self.scanners_dropped += 1  # no answer at all: scanners learn nothing
            return
        try:
            resp = self._precheck(req) or self._dispatch(req, event.peer, now)
        except BadMessage as exc:
            resp = make_response(req, exc.status or 400, exc.reason, to_tag=new_tag())
        self.layer.send_response(resp, now)

    def _dispatch(self, req: Request, peer: Peer, now: float) -> Response:
        handler = self._methods.get(req.method)
        if handler is None:
            return self._not_supported(req)
        return handler(req, peer, now)

    def _precheck(self, req: Request) -> Response | None:
        """RFC 3261 8.2.1-8.2.3: scheme, then extensions."""
        if req.request_uri.scheme not in URI_SCHEMES:
            return make_response(req, 416, to_tag=new_tag())
        if req.method not in ("ACK", "CANCEL"):
            unknown = [t for t in req.headers.values("Require")
                       if t.strip().lower() not in SUPPORTED_EXTENSIONS]
            if unknown:
                return make_response(req, 420, to_tag=new_tag(),
                                     headers=[("Unsupported", ", ".join(unknown))])
        return None

    def _options(self, req: Request, peer: Peer, now: float) -> Response:
        return make_response(req, 200, to_tag=new_tag(), headers=[
            ("Allow", ALLOW), ("Supported", SUPPORTED), ("Accept", "application/sdp"),
            ("Server", self.server_header)])

    def _not_supported(self, req: Request) -> Response:
        if req.method in ALLOW:  # known to us, handled by a later layer of the PBX
            return make_response(req, 480, "Calls are not available yet", to_tag=new_tag())
        return make_response(req, 501, to_tag=new_tag(), headers=[("Allow", ALLOW)])
