"""Call control: admits new calls, routes them, and finds the call of a request.

A new INVITE is authenticated (407, like REGISTER's 401), checked against the
caller's and callee's limits (manual section 3.2), routed by the dial plan and
handed to a new ``Call``. Requests and ACKs inside a dialog find their call by
dialog id; CANCEL finds it by the INVITE's branch. Ended calls leave their CDRs
here and release every index entry, so nothing outlives the call.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from ..dialog.dialog import DialogId
from ..media.relay import MediaIO, PortPool
from ..sip.errors import BadMessage
from ..sip.message import Request, Response, make_response, new_tag
from ..sip.peer import Peer
from ..sip.uri import parse_uri_untrusted
from .call import Call, CallState, Leg
from .cdr import CdrStore
from .core import ALLOW, SUPPORTED, Pbx
from .dialplan import Route, RouteKind, route_call
from .location import Binding, LocationService
from .media import CallMedia, needs_relay

log = logging.getLogger(__name__)


def _trusted(host: str, networks: tuple[str, ...]) -> bool:
    """Is ``host`` in one of a user's ``allowed_ips`` (addresses or networks)?"""
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


def device_peer(b: Binding) -> Peer:
    """Where requests to a registered device go.

    Over TCP/TLS: the connection it registered on. Over UDP: its Contact, unless
    the Contact's address differs from where the REGISTER came from, i.e. the
    phone is behind NAT and only the source address reaches it.
    """
    if b.source.reliable:
        return b.source
    try:
        uri = parse_uri_untrusted(b.contact)
    except BadMessage:
        return b.source
    if uri.host == b.source.host:
        return Peer("udp", uri.host, uri.port or 5060)
    return b.source


class CallController:
    def __init__(self, pbx: Pbx, location: LocationService, snapshot: Callable[[], Any],
                 cdr: CdrStore | None, *, t1: float, t2: float) -> None:
        self.core = pbx
        self.location = location
        self.snapshot = snapshot
        self.cdr = cdr
        self.t1, self.t2 = t1, t2
        self.timers = pbx.timers
        self.now = pbx.now
        self.calls: dict[str, Call] = {}  # by the caller's Call-ID
        self._dialogs: dict[DialogId, tuple[Call, Leg]] = {}
        self._by_branch: dict[str, Call] = {}
        self.active: dict[str, int] = {}  # user -> calls in progress (either side)
        self.outgoing: dict[str, int] = {}  # user -> outgoing calls in progress
        self.ringing: dict[str, int] = {}
        self.talking: dict[str, int] = {}
        self.completed = 0
        self.media_io: MediaIO | None = None  #: set by the server: relays need its loop
        self.port_pool: PortPool | None = None
        self.spawn: Any = None  #: nursery.start_soon, for players (music on hold, DTMF)
        #: sends what the layers queued (the driver's flush): for SIP that media started
        self.flush: Callable[[], None] = lambda: None
        pbx.calls = self
        pbx.route_method("INVITE", self.on_invite)
        pbx.route_method("CANCEL", self.on_cancel)
        pbx.route_method("BYE", self._no_dialog)
        pbx.route_method("ACK", lambda req, peer, now: None)
        for method in ("INFO", "UPDATE", "MESSAGE", "PRACK", "NOTIFY"):
            pbx.route_method(method, self._keepalive)

    # -- what Call needs -----------------------------------------------------------
    @property
    def domain(self) -> str:
        return self.snapshot().system.domain or "minisip"

    def local_via_contact(self, peer: Peer, user: str) -> tuple[str, str]:
        return self.core.via_for(peer), self.core.contact_for(peer, user)

    def display_for(self, user: str) -> str:
        u = self.snapshot().users.get(user)
        name = getattr(u, "display_name", "") if u is not None else ""
        if not name:
            return ""
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '" '

    def common_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Supported", SUPPORTED)]

    def send_request(self, req: Request, peer: Peer, on_response: Any, leg: Any) -> object:
        return self.core.send_request(req, peer, on_response, leg)

    def send_response(self, resp: Response) -> None:
        self.core.send_response(resp)

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None:
        self.core.send_stateless(msg, peer)

    def register_dialog(self, dialog_id: DialogId, call: Call, leg: Leg) -> None:
        self._dialogs[dialog_id] = (call, leg)

    # -- new calls -----------------------------------------------------------------
    def on_invite(self, req: Request, peer: Peer, now: float) -> Response | None:
        if req.call_id in self.calls:  # a second INVITE of a call we already have
            return make_response(req, 482, "Loop Detected", to_tag=new_tag())
        snap = self.snapshot()
        caller = self._caller(req, peer, now)
        if isinstance(caller, Response):
            return caller
        user = snap.users[caller]
        if not self._room(caller, user.max_concurrent_calls):
            return make_response(req, 486, "Caller has too many calls", to_tag=new_tag())
        if self.outgoing.get(caller, 0) >= user.max_concurrent_outgoing_calls:
            return make_response(req, 403, "Outgoing call limit reached", to_tag=new_tag())
        dialed = req.request_uri.user or ""
        route = route_call(snap, caller, dialed)
        if route.kind is RouteKind.LOCAL_USER:
            return self._call_local(req, peer, caller, dialed, route)
        if route.kind is RouteKind.REJECT:
            return make_response(req, route.status, route.reason, to_tag=new_tag())
        # Lines, trunks and services are routed (the dial plan is complete) but their
        # call legs are later work: say so rather than pretend the number is wrong.
        what = route.target if route.kind is RouteKind.SERVICE else route.kind.value
        return make_response(req, 503, f"{what} is not available yet", to_tag=new_tag(),
                             headers=[("Retry-After", "3600")])

    def challenge(self, req: Request, peer: Peer, now: float) -> Response | None:
        """The 407 for an INVITE without credentials, or None for a caller trusted
        by address (it goes on to a transaction like any authenticated INVITE)."""
        u = self.snapshot().users.get(req.from_addr.uri.user or "")
        if u is not None and _trusted(peer.host, u.allowed_ips):
            return None
        auth = self.core.registrar.authenticate(req, peer, now, proxy=True)
        return auth if isinstance(auth, Response) else None

    def _caller(self, req: Request, peer: Peer, now: float) -> str | Response:
        snap = self.snapshot()
        from_user = req.from_addr.uri.user or ""
        u = snap.users.get(from_user)
        if u is not None and _trusted(peer.host, u.allowed_ips):
            return from_user  # authorized by address instead of digest (FEATURES.md)
        auth = self.core.registrar.authenticate(req, peer, now, proxy=True)
        if isinstance(auth, Response):
            return auth
        if auth != from_user and from_user:
            return make_response(req, 403, "Authenticated user does not match From",
                                 to_tag=new_tag())
        return auth

    def _room(self, user: str, limit: int) -> bool:
        return self.active.get(user, 0) < limit

    def _call_local(self, req: Request, peer: Peer, caller: str, dialed: str,
                    route: Route) -> Response | None:
        snap = self.snapshot()
        callee = route.target
        u = snap.users.get(callee)
        if u is None:
            return make_response(req, 404, to_tag=new_tag())
        if not self._room(callee, u.max_concurrent_calls):
            return make_response(req, 486, "Busy Here", to_tag=new_tag())
        bindings = self.location.bindings(callee)
        if not bindings:
            return make_response(req, 480, "User is offline", to_tag=new_tag())
        caller_cfg = snap.users[caller]
        a = Leg("A", peer, req, None, caller)
        call = Call(self, a, caller, dialed, callee, f"{route.kind.value}:{callee}",
                    no_answer_time=float(u.no_answer_time or snap.system.no_answer_time),
                    max_duration=float(caller_cfg.max_duration or 0))
        targets = [(b.contact, device_peer(b)) for b in bindings]
        if self.media_io is not None and needs_relay(
                snap.system.relay_media, caller_cfg.relay_media or u.relay_media, req.body,
                peer, [(b.contact, b.source) for b in bindings]):
            a_addr = self.core.local_address(peer)[0]
            b_addr = self.core.local_address(targets[0][1])[0]
            call.media = CallMedia.open(self.media_io, self.port_pool,
                                        "::" if ":" in a_addr else "0.0.0.0",
                                        a_addr, b_addr, req.call_id, self.spawn)
            if call.media is not None:
                call.media.on_digit = call.digit_to_info
        self.calls[req.call_id] = call
        if req.branch:
            self._by_branch[req.branch] = call
        for user in (caller, callee):
            self.active[user] = self.active.get(user, 0) + 1
        self.outgoing[caller] = self.outgoing.get(caller, 0) + 1
        self._count(self.ringing, callee, +1)
        self.core.publish("calls", "call_started", call.summary() | {"users": [caller, callee]})
        call.start(targets)
        return None

    # -- requests for existing calls --------------------------------------------------
    def on_cancel(self, req: Request, peer: Peer, now: float) -> Response:
        call = self._by_branch.get(req.branch or "")
        if call is None or call.a.invite.call_id != req.call_id:
            return make_response(req, 481, to_tag=new_tag())
        resp = make_response(req, 200, to_tag=call.a_tag)
        self.core.send_response(resp)  # 200 to the CANCEL before the 487 to the INVITE
        call.on_cancel()
        return None  # type: ignore[return-value]

    def in_dialog(self, req: Request, peer: Peer, now: float) -> Response | None:
        entry = self._dialogs.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if entry is None:
            if req.method in ("OPTIONS", "INFO", "UPDATE", "MESSAGE", "NOTIFY"):
                return self._keepalive(req, peer, now)
            return make_response(req, 481)
        call, leg = entry
        if leg.dialog is not None and not leg.dialog.accept_request(req):
            return make_response(req, 500, "CSeq out of order", headers=[("Retry-After", "1")])
        leg.peer = peer if leg.peer.transport == peer.transport else leg.peer
        return call.on_request(leg, req)

    def on_ack(self, req: Request, peer: Peer) -> None:
        entry = self._dialogs.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if entry is not None:
            entry[0].on_ack(entry[1], req)

    def on_stray(self, resp: Response, peer: Peer) -> None:
        """A 2xx retransmitted after its transaction ended: our ACK was lost."""
        if not (200 <= resp.status < 300 and resp.cseq[1] == "INVITE"):
            return
        entry = self._dialogs.get((resp.call_id, resp.from_tag or "", resp.to_tag or ""))
        if entry is not None and entry[1].dialog is not None:
            call, leg = entry
            ack = leg.dialog.new_request("ACK", via=self.core.via_for(leg.peer),
                                         cseq=resp.cseq[0])
            self.core.send_stateless(ack, leg.peer)

    def _no_dialog(self, req: Request, peer: Peer, now: float) -> Response:
        return make_response(req, 481, to_tag=new_tag())

    def _keepalive(self, req: Request, peer: Peer, now: float) -> Response:
        # FEATURES.md: UPDATE/INFO/MESSAGE without a dialog are keep-alives: 200.
        return make_response(req, 200, to_tag=new_tag())

    # -- bookkeeping -----------------------------------------------------------------------
    @staticmethod
    def _count(table: dict[str, int], user: str, delta: int) -> None:
        n = table.get(user, 0) + delta
        if n > 0:
            table[user] = n
        else:
            table.pop(user, None)

    def call_state_changed(self, call: Call, old: CallState, new: CallState) -> None:
        timeout = self.snapshot().system.media_timeout
        if new is CallState.TALKING and call.media is not None and timeout:
            call.timers.append(self.timers.schedule(self.now() + timeout, call.check_media,
                                                    float(timeout)))
        if new is CallState.ANSWERED:
            self._count(self.ringing, call.callee, -1)
            for user in (call.caller, call.callee):
                self._count(self.talking, user, +1)
        self.core.publish("calls", "call_state",
                          call.summary() | {"users": [call.caller, call.callee]})

    def call_ended(self, call: Call) -> None:
        self.calls.pop(call.a.invite.call_id, None)
        if call.a.invite.branch:
            self._by_branch.pop(call.a.invite.branch, None)
        for leg in (call.a, *call.b_legs):
            if leg.dialog is not None:
                self._dialogs.pop(leg.dialog.id, None)
        for user in (call.caller, call.callee):
            self._count(self.active, user, -1)
        self._count(self.outgoing, call.caller, -1)
        if call.answer_time is None:
            self._count(self.ringing, call.callee, -1)
        else:
            for user in (call.caller, call.callee):
                self._count(self.talking, user, -1)
        self.completed += 1
        if self.cdr is not None:
            self.cdr.add(call.cdrs())

    def user_state(self, user: str) -> str:
        if user in self.talking:
            return "talking"
        if user in self.ringing:
            return "ringing"
        return "online" if self.location.is_online(user) else "offline"

    def release_all(self, cause: str = "shutdown") -> None:
        for call in list(self.calls.values()):
            call.release(cause)

    def live(self) -> list[dict[str, Any]]:
        now = time.time()
        return [c.summary() | {"duration": round(now - c.answer_time, 1)
                               if c.answer_time else 0.0} for c in self.calls.values()]
