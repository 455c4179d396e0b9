"""Call control: admits new calls, plans them, and finds the call of a request.

A new INVITE from a line or trunk (``pbx/lines``: known by its source address) is
not challenged and is routed for an outside caller; any other is authenticated
(407, like REGISTER's 401), checked against the
caller's limits (manual section 3.2) and the black/white list, routed by the
dial plan, planned by the services (pbx/services: who rings, in turn or
together, and what busy, no answer and unreachable lead to) and handed to a
new ``Call`` that executes the plan. The controller is the services' view of
the live PBX (who is online, who is busy, where hunting resumes). Requests and
ACKs inside a dialog find their call by dialog id; CANCEL finds it by the
INVITE's branch. Ended calls leave their CDRs
here and release every index entry, so nothing outlives the call.
"""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..dialog.dialog import Dialog, DialogId
from ..media.pacer import Pacer
from ..media.relay import MediaIO, PortPool
from ..sip.errors import BadMessage
from ..sip.message import Request, Response, make_response, new_tag
from ..sip.parser import parse_message_untrusted
from ..sip.peer import Peer
from ..transaction.keys import ServerKey
from . import pickup
from .apps.park import ParkLot
from .call import CAUSES, Call, CallState, Leg, LegState, end_other_dialog
from .cdr import CdrRecord, CdrStore
from .core import SUPPORTED, Pbx
from .dialplan import Route, RouteKind, route_call
from .identity import trusted as _trusted
from .legspec import LegSpec
from .lines.incoming import Origin, incoming_route
from .lines.manager import LineManager
from .lines.outgoing import Refusal
from .location import Binding, LocationService, device_peer, route_headers
from .media import CallMedia, needs_relay, sdp_on_hold
from .services import local_user, plan_route
from .services.black_white_list import screen
from .services.plan import Ctx, Kind, Plan, Step

log = logging.getLogger(__name__)


class CallController:
    def __init__(self, pbx: Pbx, location: LocationService, snapshot: Callable[[], Any],
                 cdr: CdrStore | None, *, lines: LineManager | None = None) -> None:
        self.core = pbx
        self.location = location
        self.snapshot = snapshot
        self.cdr = cdr
        self.lines = lines  #: external lines and trunks (None: a PBX without them)
        self.timers = pbx.timers
        self.now = pbx.now
        self.calls: dict[str, Call] = {}  # by the caller's Call-ID
        self._dialogs: dict[DialogId, tuple[Call, Leg]] = {}
        self._by_branch: dict[str, Call] = {}
        self.active: dict[str, int] = {}  # user -> calls in progress (either side)
        self.outgoing: dict[str, int] = {}  # user -> outgoing calls in progress
        self.ringing: dict[str, int] = {}
        self.talking: dict[str, int] = {}
        self._hunt: dict[str, int] = {}  #: hunt group -> index of the member tried last
        self.percent: Callable[[], float] = lambda: random.random() * 100  #: black list draws
        #: minisip's own parties of calls: app name -> starter (pbx/apps), set by the server
        self.apps: dict[str, Callable[[Call, Any], bool]] = {}
        self.completed = 0
        self.causes: Counter[str] = Counter()  #: calls ended, by release cause
        self._relayed = {"packets": 0, "bytes": 0, "lost": 0}  #: relay figures of ended calls
        self.media_io: MediaIO | None = None  #: set by the server: relays need its loop
        self.port_pool: PortPool | None = None
        #: the server nursery's start_soon: each call's own nursery starts in it
        self.spawn: Any = None
        self.pacer: Pacer | None = None  #: set by the server: paces prompts and music on hold
        #: sends what the layers queued (the driver's flush): for SIP that media started
        self.flush: Callable[[], None] = lambda: None
        #: told of every change a watcher may see (start, state, who rings, hold): events/
        self.on_change: Callable[[Call], None] = lambda call: None
        pbx.calls = self
        pbx.route_method("INVITE", self.on_invite)
        pbx.route_method("CANCEL", self.on_cancel)
        pbx.route_method("ACK", lambda req, peer, now: None)
        pbx.route_method("REFER", self._refer_outside)
        self.parking = ParkLot()  #: parked calls by slot (pbx/apps/park.py)

    # -- what Call needs -----------------------------------------------------------
    def domain_for(self, peer: Peer, snap: Any = None) -> str:
        """Our users' domain as ``peer`` should write it: system.yaml's ``domain`` (of
        ``snap``, a call's own), or by default our own address as ``peer`` reaches it, so
        a phone calling the caller back reaches this server (a bare name like "minisip"
        resolves nowhere)."""
        domain = (snap or self.snapshot()).system.domain
        if domain:
            return domain
        host = self.core.local_address(peer)[0]
        return f"[{host}]" if ":" in host else host

    def via_for(self, peer: Peer) -> str:
        """Our Via (with a new branch) for a request to ``peer``."""
        return self.core.via_for(peer)

    def contact_for(self, peer: Peer, user: str) -> str:
        """Our Contact for ``user`` as ``peer`` reaches us."""
        return self.core.contact_for(peer, user)

    def display_for(self, user: str, snap: Any = None) -> str:
        u = (snap or self.snapshot()).users.get(user)
        return getattr(u, "display_name", "") if u is not None else ""

    def common_headers(self) -> list[tuple[str, str]]:
        return [("Allow", self.core.allow), ("Supported", SUPPORTED)]

    def send_request(self, req: Request, peer: Peer, on_response: Any, leg: Any) -> object:
        return self.core.send_request(req, peer, on_response, leg)

    def send_response(self, resp: Response) -> None:
        self.core.send_response(resp)

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None:
        self.core.send_stateless(msg, peer)

    def register_dialog(self, dialog_id: DialogId, call: Call, leg: Leg) -> None:
        self._dialogs[dialog_id] = (call, leg)

    # -- what the services may ask (services/plan.py Live) ---------------------------
    def online(self, user: str) -> bool:
        return self.location.is_online(user)

    def busy(self, user: str) -> bool:
        u = self.snapshot().users.get(user)
        return u is None or local_user.busy(u, self.active.get(user, 0),
                                            self.talking.get(user, 0))

    def hunt_start(self, group: str) -> int:
        return self._hunt.get(group, -1) + 1

    def hunt_tried(self, group: str, index: int) -> None:
        self._hunt[group] = index

    # -- new calls -----------------------------------------------------------------
    def on_invite(self, req: Request, peer: Peer, now: float) -> Response | None:
        if req.call_id in self.calls:  # a second INVITE of a call we already have
            return make_response(req, 482, "Loop Detected", to_tag=new_tag())
        # What the A-leg dialog will be made of (RFC 3261 8.1.1.3, 8.1.1.8): read now,
        # not when the answer comes and the INVITE could no longer be refused.
        if not req.contacts or req.from_tag is None:
            return make_response(req, 400, "Missing Contact or From tag", to_tag=new_tag())
        dialed = req.request_uri.user or ""
        origin = self.lines.origin(req, peer) if self.lines is not None else None
        if origin is not None:
            return self._incoming(req, peer, origin, dialed)
        snap = self.snapshot()
        caller = self._caller(req, peer, now)
        if isinstance(caller, Response):
            return caller
        user = snap.users[caller]
        if not self._room(caller, user.max_concurrent_calls):
            return self._refuse(req, 486, "Caller has too many calls", caller, dialed)
        if self.outgoing.get(caller, 0) >= user.max_concurrent_outgoing_calls:
            return self._refuse(req, 403, "Outgoing call limit reached", caller, dialed)
        self._start(req, peer, caller, dialed, route_call(snap, caller, dialed),
                    max_duration=float(user.max_duration or 0))
        return None

    def _incoming(self, req: Request, peer: Peer, origin: Origin, dialed: str
                  ) -> Response | None:
        """A call from a line or trunk: not challenged, routed for an outside caller."""
        assert self.lines is not None
        caller = req.from_addr.uri.user or "anonymous"
        refused = self.lines.usage.refusal(origin.name, origin.exit, outgoing=False)
        if refused is not None:
            return self._refuse(req, *refused, caller, dialed, line_in=origin.name)
        self.lines.usage.take(origin.name, outgoing=False)
        self._start(req, peer, caller, dialed,
                    incoming_route(self.snapshot(), origin, caller, dialed),
                    line_in=origin.name, max_duration=0.0)
        return None

    def _start(self, req: Request, peer: Peer, caller: str, dialed: str, route: Route, *,
               max_duration: float, line_in: str = "") -> None:
        """A new Call executing the plan of ``route`` (an INVITE with Replaces joins the
        dialog it names instead: pbx/pickup.py)."""
        replaces = req.headers.get("Replaces") if not line_in else None
        plan = pickup.replaces_plan(caller, replaces) if replaces is not None \
            else self.plan_for(caller, dialed, route)
        target = route.target if route.kind is not RouteKind.REJECT else str(route.status)
        call = Call(self, Leg("A", peer, req, None, caller), caller, dialed,
                    f"{route.kind.value}:{target}", max_duration=max_duration,
                    snap=self.snapshot())
        call.line_in, call.local_caller = line_in, not line_in
        call.caller_number = route.caller_number or caller
        self.calls[req.call_id] = call
        if req.branch:
            call.branch = req.branch
            self._by_branch[call.branch] = call
        if call.local_caller:
            self._count(self.active, caller, +1)
            self._count(self.outgoing, caller, +1)
        if self.core.wants("calls"):
            self.core.publish("calls", "call_started", call.summary() | {"users": [caller]})
        call.start(plan)
        self.on_change(call)

    def _refuse(self, req: Request, status: int, reason: str, caller: str, dialed: str, *,
                line_in: str = "") -> Response:
        """Answer a call refused before it was planned (a limit), and leave its CDR."""
        if self.cdr is not None:
            now = time.time()
            self.cdr.add([CdrRecord(
                call_id=req.call_id, kind="O", caller=caller, dialed=dialed, final=dialed,
                route="", setup_time=now, answer_time=None, end_time=now, duration=0.0,
                status=status, cause=CAUSES.get(status, str(status)), released_by="pbx",
                line_in=line_in, caller_number=caller, reason=reason)])
        return make_response(req, status, reason, to_tag=new_tag())

    def plan_for(self, caller: str, number: str, route: Route | None = None) -> Plan:
        """What a call from ``caller`` to ``number`` does: the black/white list, then the
        services' plan of the dial plan's route (apps and transfers hand calls on with it)."""
        snap = self.snapshot()
        refused = screen(snap, caller, number, self.percent)
        if refused is not None:
            return refused
        return plan_route(Ctx(snap, self, caller), route or route_call(snap, caller, number))

    def challenge(self, req: Request, peer: Peer, now: float) -> Response | None:
        """The 407 for an INVITE without credentials, or None for a caller trusted
        by address (it goes on to a transaction like any authenticated INVITE)."""
        if self.lines is not None and self.lines.origin(req, peer) is not None:
            return None  # a line or trunk: never challenged
        stranger = self._untrusted_trunk(req, peer)
        if stranger is not None:
            return stranger
        u = self.snapshot().users.get(req.from_addr.uri.user or "")
        if u is not None and _trusted(peer.host, u.allowed_ips):
            return None
        auth = self.core.registrar.authenticate(req, peer, now, proxy=True)
        return auth if isinstance(auth, Response) else None

    def _untrusted_trunk(self, req: Request, peer: Peer) -> Response | None:
        """403 for a call from a trunk's host that is not the trunk (another port) and
        not from a local user either."""
        if self.lines is None or (req.from_addr.uri.user or "") in self.snapshot().users:
            return None
        trunk = self.lines.untrusted_trunk(peer)
        if trunk is None:
            return None
        return make_response(req, 403, f"Not trunk {trunk}'s address and port",
                             to_tag=new_tag())

    def _caller(self, req: Request, peer: Peer, now: float) -> str | Response:
        snap = self.snapshot()
        from_user = req.from_addr.uri.user or ""
        u = snap.users.get(from_user)
        if u is not None and _trusted(peer.host, u.allowed_ips):
            return from_user  # authorized by address instead of digest (FEATURES.md)
        stranger = self._untrusted_trunk(req, peer)
        if stranger is not None:
            return stranger
        auth = self.core.registrar.authenticate(req, peer, now, proxy=True)
        if isinstance(auth, Response):
            return auth
        if (auth != from_user and from_user) or auth not in snap.users:
            # (a gateway's account authenticates its REGISTER, but calls as no user)
            return make_response(req, 403, "Authenticated user does not match From",
                                 to_tag=new_tag())
        return auth

    def _room(self, user: str, limit: int) -> bool:
        return self.active.get(user, 0) < limit

    # -- what a call's plan steps need ----------------------------------------------
    def devices(self, user: str, latest_only: bool = False) -> list[Binding]:
        """The registered devices of ``user`` (one_number_multi_devices off: the most
        recently registered one only)."""
        bindings = self.location.bindings(user)
        if latest_only and bindings:
            bindings = [max(bindings, key=lambda b: b.registered_at)]
        return bindings

    def device_legs(self, call: Call, user: str, latest_only: bool = False) -> list[LegSpec]:
        """The legs to ``user``'s devices: From the caller (an outside caller as the
        number the dial plan made of it), To the user, at the domain each device knows."""
        caller = call.caller if call.local_caller else call.caller_number or call.caller
        display = self.display_for(call.caller, call.snap) if call.local_caller else ""
        return [LegSpec(uri=b.contact, peer=peer,
                        to=f"<sip:{user}@{self.domain_for(peer, call.snap)}>",
                        from_uri=f"sip:{caller}@{self.domain_for(peer, call.snap)}",
                        display=display, headers=route_headers(b),
                        contact_user=call.caller, callee=user, caller_number=caller)
                for b in self.devices(user, latest_only) for peer in [device_peer(b)]]

    def prepare_media(self, call: Call, step: Step) -> None:
        """Open the call's relay when this step needs it and it has none yet: the
        policy says so for the caller or a user about to ring, or minisip answers."""
        if call.media is not None or self.media_io is None or self.port_pool is None:
            return
        snap = call.snap
        users = [snap.users[t.name] for t in step.targets
                 if t.kind is Kind.USER and t.name in snap.users]
        bindings = [b for t in step.targets if t.kind is Kind.USER
                    for b in self.location.bindings(t.name)]
        app = any(t.kind is Kind.APP for t in step.targets)
        caller_cfg = snap.users.get(call.caller) if call.local_caller else None
        exits = [call.line_in, *(n for t in step.targets if t.kind is Kind.NUMBER and t.route
                                 for n in t.route.candidates)]
        flagged = any(u.relay_media for u in users) or bool(
            caller_cfg and caller_cfg.relay_media) or any(self._exit_relays(n, snap) for n in exits)
        a = call.a
        if not app and not needs_relay(snap.system.relay_media, flagged, a.invite.body, a.peer,
                                       [(b.contact, b.source) for b in bindings]):
            return
        call.media = self._open_media(call, device_peer(bindings[0]) if bindings else None)

    def _open_media(self, call: Call, b_peer: Peer | None) -> CallMedia | None:
        assert self.media_io is not None and self.port_pool is not None
        a_addr = self.core.local_address(call.a.peer)[0]
        b_addr = self.core.local_address(b_peer)[0] if b_peer is not None else a_addr
        # One dual-stack socket pair per leg when either party speaks IPv6.
        bind = "::" if ":" in a_addr + b_addr else "0.0.0.0"
        media = CallMedia.open(self.media_io, self.port_pool, bind, a_addr, b_addr,
                               call.a.invite.call_id, call.start_task, self.pacer)
        if media is not None:
            media.on_digit = call.digit_to_info
        return media

    def open_relay(self, call: Call, b_peer: Peer | None = None) -> bool:
        """Give ``call`` a relay for good (a move: pbx/moves.py); side B faces ``b_peer``,
        or the party already on it. False when none can open."""
        if self.media_io is None or self.port_pool is None:
            return False
        call.media = self._open_media(
            call, b_peer or (call.winner.peer if call.winner is not None else None))
        return call.media is not None

    def hold_media(self, call: Call, leg: Leg, body: bytes,
                   bodies: dict[str, bytes]) -> CallMedia | None:
        """A relay for the time of a hold on a direct-media call, so that the held party
        hears music on hold: None when ``body`` holds nothing, the holder has no
        music_on_hold, or relay_media is never. ``bodies``: each side's current SDP."""
        snap = call.snap
        holder = snap.users.get(leg.user)
        other = call.winner if leg.side == "A" else call.a
        if (not body or holder is None or not holder.music_on_hold or other is None
                or self.media_io is None or self.port_pool is None
                or snap.system.relay_media == "never"):
            return None
        try:
            if not sdp_on_hold(body):
                return None
        except BadMessage:
            return None
        media = self._open_media(call, other.peer)
        if media is not None:
            media.hold_only = leg.side
            for side, sdp in bodies.items():  # where each party listens, and its codecs
                media.sdp_from(side, sdp)
            log.info("call %s: held, the relay plays music on hold", call.a.invite.call_id)
        return media

    def _exit_relays(self, name: str, snap: Any) -> bool:
        """A line's or trunk's ``relay_media``."""
        exit_ = snap.lines.get(name) or snap.trunks.get(name)
        return bool(exit_ is not None and exit_.relay_media)

    def exit_leg(self, call: Call, route: Route, name: str) -> LegSpec | Refusal:
        """The leg of ``route`` through line or trunk ``name`` (its slot taken), or why
        it cannot take the call now."""
        if self.lines is None:
            return 503, "External lines are not available"
        got = self.lines.leg(name, route, domain=self.domain_for(call.a.peer, call.snap),
                             local_host=lambda p: self.core.local_address(p)[0])
        if isinstance(got[0], LegSpec):
            spec, refined = got
            call.caller_number = refined.caller_number
            self.lines.usage.take(name, outgoing=True)
            return spec
        return got  # type: ignore[return-value]

    def exit_released(self, name: str) -> None:
        if self.lines is not None:
            self.lines.usage.give_back(name, outgoing=True)

    def start_app(self, call: Call, target: Any) -> bool:
        """minisip answers ``call`` as app ``target.name``; False when it cannot."""
        start = self.apps.get(target.name)
        return start is not None and call.media is not None and start(call, target)

    def take_call(self, call: Call, target: Any) -> tuple[int, str] | None:
        """``call``'s caller joins a live call (pick-up, retrieve, join, break-in);
        None when it did, else the status and reason the caller gets."""
        return pickup.take(self, call, target)

    def adopt(self, call: Call) -> None:
        """A call made by a move (a blind transfer's transferee and its new party)."""
        self.calls[call.key] = call
        self.core.publish("calls", "call_started", call.summary() | {"users": [call.caller]})

    def caller_left(self, call: Call) -> None:
        """``call``'s caller moved on (transferred, replaced): its counters are released
        now, not when the call ends."""
        if call.caller_counted:
            call.caller_counted = False
            if not call.local_caller:
                return
            self._count(self.active, call.caller, -1)
            self._count(self.outgoing, call.caller, -1)
            if call.answer_time is not None:
                self._count(self.talking, call.caller, -1)

    def find_dialog(self, call_id: str, to_tag: str, from_tag: str) -> tuple[Call, Leg] | None:
        """The call and leg of a dialog named as in a Replaces header (RFC 3891 3: the
        to-tag is our tag); either tag order, and the early dialogs of ringing devices."""
        for key in ((call_id, to_tag, from_tag), (call_id, from_tag, to_tag)):
            entry = self._dialogs.get(key)
            if entry is not None and entry[0].state is not CallState.ENDED:
                return entry
        for call in self.calls.values():
            for leg in call.b_legs:
                d = leg.dialog
                if d is not None and d.call_id == call_id and {d.local_tag, d.remote_tag} \
                        == {to_tag, from_tag} and leg.state is not LegState.GONE:
                    return call, leg
        return None

    def user_ringing(self, user: str, delta: int) -> None:
        self._count(self.ringing, user, delta)
        self._count(self.active, user, delta)

    def user_talking(self, user: str, delta: int) -> None:
        self._count(self.talking, user, delta)
        self._count(self.active, user, delta)

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
            # RFC 3261 12.2.2: no such dialog. An OPTIONS is answered as outside one (a
            # phone's keep-alive ping after our restart); everything else gets 481.
            if req.method == "OPTIONS":
                return self.core.options(req, peer, now)
            return make_response(req, 481)
        call, leg = entry
        if leg.dialog is not None and not leg.dialog.accept_request(req):
            return make_response(req, 500, "CSeq out of order", headers=[("Retry-After", "1")])
        leg.peer = peer if leg.peer.transport == peer.transport else leg.peer
        return call.on_request(leg, req)

    def on_caller_lost(self, key: ServerKey) -> None:
        """The connection a caller's INVITE came on is gone before an answer: the
        caller can hear nothing more, so the forks are cancelled (RFC 3261 17.2.4)."""
        call = self._by_branch.get(key.branch) if key.method == "INVITE" else None
        if call is not None:
            call.on_cancel(cause="caller unreachable")

    def on_ack(self, req: Request, peer: Peer) -> None:
        entry = self._dialogs.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if entry is not None:
            entry[0].on_ack(entry[1], req)

    def on_stray(self, resp: Response, peer: Peer) -> None:
        """A 2xx retransmitted after its transaction ended: our ACK was lost."""
        if not (200 <= resp.status < 300 and resp.cseq[1] == "INVITE"):
            return
        entry = self._dialogs.get((resp.call_id, resp.from_tag or "", resp.to_tag or ""))
        dialog = entry[1].dialog if entry is not None else None
        if entry is not None and dialog is not None:
            dest = dialog.destination(entry[1].peer)
            ack = dialog.new_request("ACK", via=self.core.via_for(dest), cseq=resp.cseq[0])
            self.core.send_stateless(ack, dest)

    def _refer_outside(self, req: Request, peer: Peer, now: float) -> Response:
        # A REFER moves a call it is part of; minisip places no calls for strangers.
        return make_response(req, 403, "REFER only inside a call", to_tag=new_tag())

    # -- bookkeeping -----------------------------------------------------------------------
    @staticmethod
    def _count(table: dict[str, int], user: str, delta: int) -> None:
        n = table.get(user, 0) + delta
        if n > 0:
            table[user] = n
        else:
            table.pop(user, None)

    def call_state_changed(self, call: Call, old: CallState, new: CallState) -> None:
        timeout = call.snap.system.media_timeout
        if new is CallState.TALKING and call.media is not None and timeout:
            call.timers.append(self.timers.schedule(self.now() + timeout, call.check_media,
                                                    float(timeout)))
        if new is CallState.ANSWERED and old is not new and call.local_caller:
            self._count(self.talking, call.caller, +1)
        if new is CallState.TALKING:  # set up: its messages are kept as text only,
            for leg in (call.a, *call.b_legs):  # without the credentials they no longer need
                headers = leg.invite.headers
                headers.remove("Proxy-Authorization")
                headers.remove("Authorization")
                leg.invite.compact()
        if self.core.wants("calls"):  # (a summary is built for a listener only)
            self.core.publish("calls", "call_state", call.summary() | {
                "users": [call.caller, *(sorted(call.ringing_users) or [call.callee])]})
        self.on_change(call)

    def call_ended(self, call: Call) -> None:
        if self.calls.get(call.key) is call:
            del self.calls[call.key]
        if call.branch and self._by_branch.get(call.branch) is call:
            del self._by_branch[call.branch]
        for leg in (call.a, *call.b_legs):  # a moved leg's dialog belongs to its new call
            if leg.dialog is not None and self._dialogs.get(leg.dialog.id, (None,))[0] is call:
                del self._dialogs[leg.dialog.id]
        self.caller_left(call)
        if call.line_in and self.lines is not None:
            self.lines.usage.give_back(call.line_in, outgoing=False)
        for leg in call.b_legs:
            if leg.key is not None and leg.ack and leg.dialog is not None:
                # an ACK with a body (our SDP answer to a delayed offer) does not end at
                # its blank line: only that one is kept as it was sent
                sdp = not leg.ack.endswith(b"\r\n\r\n")
                self.core.rebind(leg.key, _AnsweredLeg(self, leg.dialog.remote_tag,
                                                       leg.peer, leg.ack if sdp else None))
        self.completed += 1
        self.causes[call.cause or "normal"] += 1
        self._add_relayed(self._relayed, call.media_stats)
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

    @staticmethod
    def _add_relayed(totals: dict[str, int], stats: dict[str, Any]) -> None:
        for side in ("a", "b"):
            leg = stats.get(side) or {}
            totals["packets"] += leg.get("rtp_packets", 0)
            totals["bytes"] += leg.get("rtp_bytes", 0)
            totals["lost"] += leg.get("lost", 0)

    def relayed_totals(self) -> dict[str, int]:
        """Relayed RTP of every call so far, ended and in progress (for metrics)."""
        totals = dict(self._relayed)
        for call in self.calls.values():
            if call.media is not None:
                self._add_relayed(totals, call.media.stats())
        return totals

    def live(self) -> list[dict[str, Any]]:
        now = time.time()
        return [c.summary() | {"duration": round(now - c.answer_time, 1)
                               if c.answer_time else 0.0} for c in self.calls.values()]


class _AnsweredLeg:
    """What an ended call leaves of a device's answered INVITE: its client transaction
    lives on for Timer M (32 s, RFC 6026) and passes up 2xx retransmissions. The same
    2xx again means our ACK was lost: send it again; a 2xx of another dialog (a fork
    behind the device) is ACKed and ended with a BYE. Both are built from that 2xx,
    which echoes our From, Call-ID and CSeq and names the route set and target: the
    stand-in keeps the answering dialog's tag and the device's address, not the whole
    call (nor its ACK's bytes, but for an ACK that carried our SDP answer), for 32 s."""

    __slots__ = ("ack", "ctl", "peer", "tag")

    def __init__(self, ctl: CallController, tag: str, peer: Peer, ack: bytes | None) -> None:
        self.ctl, self.tag, self.peer, self.ack = ctl, tag, peer, ack

    def __call__(self, leg: Any, resp: Response, key: object) -> None:
        if not 200 <= resp.status < 300:
            return
        dialog = Dialog.of_answer(resp, self.peer)  # BadMessage: the core drops it
        dest = dialog.destination(self.peer)
        cseq = resp.cseq[0]
        if resp.to_tag != self.tag:
            end_other_dialog(self.ctl, dialog, dest, cseq, None)
        elif self.ack:
            self.ctl.send_stateless(parse_message_untrusted(self.ack), dest)
        else:
            ack = dialog.new_request("ACK", via=self.ctl.via_for(dest), cseq=cseq)
            self.ctl.send_stateless(ack, dest)
