"""One B2BUA call: an A-leg from the caller, B-legs to whoever the plan rings.

Theory of operation. The caller's INVITE is answered by us (the A-leg, a UAS
dialog with our own To tag). The services gave the call a Plan
(services/plan.py): steps of targets that ring together. The call runs one
step at a time: for every registered device of a target user it sends a new
INVITE with a new Call-ID (a B-leg, a UAC dialog); an app target (minisip
itself: feature codes, voicemail...) answers the caller from the media relay.
Call-control events from the B-legs are relayed to the A-leg: provisional
responses (with early media SDP), the first 2xx (the other forks are
CANCELled, or ACKed and BYEd if they answered too). When every target of a
step failed, or the step's time ran out, the step's ``next`` gets the outcome
and gives the next step or the End, whose status the caller gets (the best
failure a device answered when the End says so). After answer,
in-dialog requests (BYE, re-INVITE, UPDATE, INFO, ...) received on one leg are
re-issued on the other and their responses carried back. The caller never
sees the forks: every response to it carries the one A-leg tag.

States and their legal transitions are the table ``_TRANSITIONS``; the call
moves only through ``_set_state``. Every request received gets a final
response; every timer is a deadline in the PBX's heap, cancelled on exit; every
trio task the call starts (``start_task``: players, DTMF senders, its app) runs
in the call's own nursery and is cancelled on exit. A call reads the
configuration snapshot it started with (``snap``), so a reload mid-call changes
nothing under it.
"""
from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..dialog.dialog import Dialog
from ..sip.message import Request, Response, make_response, new_call_id, new_tag
from ..sip.peer import Peer
from ..media.dtmf import DtmfDigit, make_info, parse_info_untrusted
from ..sip.digest import authorization_for
from ..sip.digits import is_digits
from ..sip.errors import BadMessage
from ..sip.parser import parse_message_untrusted
from .cdr import CdrRecord
from .legspec import LegSpec
from .lines.outgoing import without_100rel
from .media import CallMedia, hold_music, sdp_on_hold
from .services.plan import End, Kind, Outcome, Plan, Step, Target, combine, outcome_of
from .tasks import CallTasks, TaskFn
from .reliable import ReliableProvisionals, requires_100rel
from .timers import Timer

if TYPE_CHECKING:
    from ..config.schema import Snapshot
    from .calls import CallController

log = logging.getLogger(__name__)


class CallState(enum.Enum):
    ROUTING = "routing"  #: B-legs sent, nothing heard yet
    RINGING = "ringing"  #: a device rings (18x relayed)
    ANSWERED = "answered"  #: 2xx relayed to the caller, waiting for its ACK
    TALKING = "talking"  #: confirmed on both legs
    ENDED = "ended"  #: released; kept only until bookkeeping is done


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.ROUTING: frozenset({CallState.RINGING, CallState.ANSWERED, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.ANSWERED, CallState.ENDED}),
    CallState.ANSWERED: frozenset({CallState.TALKING, CallState.ENDED}),
    CallState.TALKING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class LegState(enum.Enum):
    CALLING = "calling"  #: INVITE sent, no response
    EARLY = "early"  #: provisional received
    CONFIRMED = "confirmed"  #: answered
    GONE = "gone"  #: failed, cancelled or hung up


# Failure precedence for the response relayed to the caller when every fork
# failed (RFC 3261 16.7 in spirit): a 6xx ends the search; busy beats the rest.
def _failure_rank(status: int) -> tuple[int, int]:
    if status >= 600:
        return (0, status)
    if status == 486:
        return (1, status)
    if 400 <= status < 500:
        return (2, status)
    return (3, status)


#: failures that end the search for a way out: the callee is busy, not the line broken
_BUSY = frozenset({486, 600})
#: challenges a leg answers with its credentials before the failure stands
_MAX_CHALLENGES = 2

CAUSES = {486: "busy", 600: "busy", 480: "unavailable", 487: "cancelled", 408: "no answer",
           404: "not found", 603: "declined", 403: "forbidden", 503: "service unavailable"}

# Headers carried from one leg's request or response to the other's.
_RELAYED = ("Content-Type", "Content-Disposition", "Allow", "Supported", "Event",
            "Subscription-State", "Session-Expires", "Min-SE", "Reason", "Warning",
            "Accept", "Info-Package", "Recv-Info", "User-Agent", "Server",
            "P-Asserted-Identity", "Privacy")


# What each leg hears about minisip itself, not about the party on the other leg.
_OWN_HEADERS = frozenset({"Allow", "Supported", "User-Agent", "Server"})


def _media_columns(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ("a", "b"):
        leg = stats.get(side) or {}
        out[f"{side}_packets"] = leg.get("rtp_packets", 0)
        out[f"{side}_lost"] = leg.get("lost", 0)
        out[f"{side}_jitter_ms"] = leg.get("jitter_ms", 0.0)
    return out


def relayed_headers(msg: Request | Response) -> list[tuple[str, str]]:
    return msg.headers.select(_RELAYED)


@dataclass(eq=False, slots=True)
class Leg:
    side: str  #: "A" (caller) or "B" (a callee device)
    peer: Peer
    invite: Request  #: the INVITE received (A) or sent (B)
    key: object  #: its transaction key
    user: str
    state: LegState = LegState.CALLING
    dialog: Dialog | None = None
    last_status: int = 0
    cancel_pending: bool = False  #: CANCEL once a provisional says the callee heard us
    rseq: int | None = None  #: RSeq of the last reliable provisional PRACKed (RFC 3262)
    #: our last ACK to this leg's 2xx, resent on a retransmit: its bytes (a quarter of the
    #: parsed message, kept for the whole call), read again on that rare path
    ack: bytes = b""
    step: int = 0  #: the plan step that sent it (B-legs)
    target: int = -1  #: the index of its target in that step
    spec: LegSpec | None = None  #: what this B-leg was made from
    reason: str = ""  #: reason phrase of the last final response
    challenges: int = 0  #: 401/407 answered on this leg
    slot: bool = False  #: holds a slot of its line or trunk (given back when it ends)
    talking: bool = False  #: its user is counted as talking in this call (pbx.user_talking)
    sdp_in: bytes = b""  #: the last SDP its party sent (moves answer it with its codec)
    sdp_out: bytes = b""  #: the last SDP sent to it (the next one continues its o= line)
    refers: int = 0  #: REFERs received in its dialog (RFC 3515 2.4.6: the Event id)
    placed: float = 0.0  #: when a move put it in its call (the PBX's clock)

    def destination(self) -> Peer:
        """Where in-dialog requests to this leg go: its dialog's route set or remote
        target (RFC 3261 12.2.1.1); ``peer`` is where this leg's party is heard from."""
        return self.dialog.destination(self.peer) if self.dialog is not None else self.peer


@dataclass(frozen=True, slots=True)
class Refused:
    """A way out that could not take the call (a limit, an offline line): no INVITE left."""
    exit: str
    number: str  #: the called number it would have sent
    caller_number: str
    status: int
    reason: str


def _exit_of(tried: Any) -> str:
    """The line or trunk of a tried way out (a Leg or a Refused), "" for none."""
    if isinstance(tried, Refused):
        return tried.exit
    spec = getattr(tried, "spec", None)
    return spec.exit if spec is not None else ""


def end_other_dialog(ctl: CallController, dialog: Dialog, dest: Peer, cseq: int,
                     leg: Leg | None) -> None:
    """A 2xx of a dialog nobody keeps (a fork downstream of the device that answered,
    RFC 3261 13.2.2.4): ACK it, then BYE it."""
    ctl.send_stateless(dialog.new_request("ACK", via=ctl.via_for(dest), cseq=cseq), dest)
    ctl.send_request(dialog.new_request("BYE", via=ctl.via_for(dest)), dest, None, leg)


#: the empty set of users or sides that calls share (``Call.holding``, ``ringing_users``)
NOBODY: frozenset[str] = frozenset()


@dataclass(eq=False, slots=True)
class Call:
    pbx: "CallController"  #: the controller: sending, timers, snapshot, bookkeeping
    a: Leg
    caller: str
    dialed: str
    route: str
    max_duration: float
    #: the configuration the call started with, kept to its end (by default the
    #: controller's current one when the Call is made)
    snap: "Snapshot" = None  # type: ignore[assignment]
    callee: str = ""  #: who answered; before that the first user the plan rang
    setup_time: float = field(default_factory=time.time)
    state: CallState = CallState.ROUTING
    b_legs: list[Leg] = field(default_factory=list)
    winner: Leg | None = None
    answer_time: float | None = None
    a_tag: str = field(default_factory=new_tag)
    timers: list[Timer] = field(default_factory=list)
    final_status: int = 0
    #: sides ("A", "B") that have put the other party on hold; replaced, never changed in
    #: place: most calls never hold, and every call shares one empty set (each is 216 bytes)
    holding: frozenset[str] = NOBODY
    cause: str = ""
    released_by: str = ""
    # In-dialog relays in flight: our client transaction key -> (server txn request, leg it came on)
    pending: dict[object, tuple[Request, Leg]] = field(default_factory=dict)
    #: the 2xx we resend until its ACK (RFC 3261 13.3.1.4), per leg it goes to
    _acks: dict[Leg, Response] = field(default_factory=dict)
    #: an offerless INVITE's 2xx carried the offer: (leg, CSeq) waits for the answer in
    #: the ACK from the other side (RFC 3264), so minisip's ACK is sent only then
    _ack_to: tuple[Leg, int] | None = None
    media: CallMedia | None = None  #: the RTP relay, when this call's media is relayed
    media_stats: dict[str, Any] = field(default_factory=dict)
    _bodies: dict[str, bytes] = field(default_factory=dict)  #: last SDP each side sent
    tasks: CallTasks | None = None  #: the call's nursery, opened by its first task
    # -- the plan being executed ---------------------------------------------------
    step: Step | None = None
    step_no: int = 0
    history: list[str] = field(default_factory=list)  #: every step run, for the CDR
    #: per target of the current step: how it ended (None: ringing, or not started yet)
    outcomes: list[Outcome | None] = field(default_factory=list)
    #: users whose devices ring now; replaced, never changed in place (as ``holding``)
    ringing_users: frozenset[str] = NOBODY
    #: the best failure of the current step: (rank, status, reason, response)
    _best: tuple[tuple[int, int], int, str | None, Response | None] | None = None
    _launching: bool = False
    #: a plan step rings and nobody answered yet (also after the caller was answered,
    #: when an app or a transfer hands the call on)
    planning: bool = False
    #: what a handed-on call does when its plan ends unanswered (None: hang up)
    _on_end: Callable[[End], None] | None = None
    app: Any = None  #: the app answering the caller (pbx/apps), instead of a B-leg
    answered_user: str | None = None  #: the user whose device answered (not an app)
    # -- the outside world (pbx/lines) -----------------------------------------------
    line_in: str = ""  #: the line or trunk the call came in on ("" = from a user)
    local_caller: bool = True  #: the caller is a local user, not an outside number
    caller_number: str = ""  #: the caller number after the dial plan
    #: NUMBER targets of the current step: the lines/trunks each has still to try
    exits: dict[int, list[str]] = field(default_factory=dict)
    tried: list[Leg | Refused] = field(default_factory=list)  #: ways out tried, in order
    reason: str = ""  #: why the call failed, when a way out said so
    # -- moves (pbx/moves.py, transfer.py, pickup.py) ----------------------------------
    key: str = ""  #: its key among the controller's calls (the caller's Call-ID)
    #: the caller's INVITE branch, if the controller finds the call by it (a CANCEL does);
    #: kept, as the INVITE is kept as text once the call is up
    branch: str = ""
    #: the caller's counters (active, outgoing, talking) are still this call's to release
    caller_counted: bool = True
    b_offer: bytes | None = None  #: what B-legs are offered instead of the caller's SDP
    #: what a handed-on call does when someone answers (a transfer notifies its transferor)
    _on_answer: Callable[[], None] | None = None
    #: legs in this call that a service handles (a transferor waiting for its NOTIFYs,
    #: a party that broke in): leg -> its handler (on_request, on_ack, close)
    managed: dict[Leg, Any] = field(default_factory=dict)
    transferred_by: str = ""  #: for the CDR: the user who transferred this call
    transferred_to: str = ""  #: for the CDR: the number its party was transferred to
    parked: str = ""  #: the park slot while the caller waits in it
    merged: bool = False  #: its caller's leg joined another call: no records of its own
    #: the caller Requires 100rel: its 18x go reliably (pbx/reliable.py)
    reliable: ReliableProvisionals | None = None

    def __post_init__(self) -> None:
        self.key = self.key or self.a.invite.call_id
        if self.reliable is None and requires_100rel(self.a.invite):
            self.reliable = ReliableProvisionals(self)
        if self.snap is None and self.pbx is not None:
            self.snap = self.pbx.snapshot()

    # -- state ----------------------------------------------------------------------
    def _set_state(self, new: CallState) -> None:
        old = self.state
        if new not in _TRANSITIONS[old]:
            raise RuntimeError(f"call {self.a.invite.call_id}: {old.name} -> {new.name}")
        log.debug("call %s: %s -> %s", self.a.invite.call_id, old.name, new.name)
        self.state = new
        self.pbx.call_state_changed(self, old, new)

    def _after(self, seconds: float, fn: Callable[..., None], *args: Any) -> Timer:
        t = self.pbx.timers.schedule(self.pbx.now() + seconds, fn, *args)
        timers = self.timers
        if timers and not timers[0].alive:  # fired or cancelled: no longer ours to cancel
            self.timers = timers = [old for old in timers if old.alive]
        timers.append(t)
        return t

    def start_task(self, fn: TaskFn, *args: Any) -> None:
        """Run ``await fn(*args)`` in the call's nursery: the call's end cancels it."""
        if self.state is CallState.ENDED:
            return
        if self.tasks is None:
            if self.pbx.spawn is None:  # a PBX driven without a task tree (in-process tests)
                log.debug("call %s: no task tree to run %s in", self.a.invite.call_id, fn)
                return
            self.tasks = CallTasks(self.pbx.spawn, self.a.invite.call_id)
        self.tasks.start(fn, *args)

    # -- the plan ----------------------------------------------------------------------
    def start(self, plan: Plan) -> None:
        self._next(plan)

    def _next(self, plan: Plan) -> None:
        if isinstance(plan, End):
            self._end_plan(plan)
        else:
            self._run(plan)

    def _run(self, step: Step) -> None:
        forwarded = self.step is not None and len(step.via) > len(self.step.via)
        self.step_no += 1
        self.planning = True
        self.step, self.outcomes, self._best = step, [None] * len(step.targets), None
        self.history.append(str(step))
        self.pbx.prepare_media(self, step)
        if forwarded and self.state in (CallState.ROUTING, CallState.RINGING):
            self._respond_a(181, "Call Is Being Forwarded")
        self.pbx.call_state_changed(self, self.state, self.state)  # a new step shows
        no = self.step_no
        self._launching = True
        for i, target in enumerate(step.targets):
            if self.step_no != no:
                break
            if target.delay > 0:
                self._after(target.delay, self._launch_later, no, i)
            else:
                self._launch(i, target)
        self._launching = False
        if self.step_no == no:
            if step.timeout > 0:
                self._after(step.timeout, self._step_timeout, no)
            self._check_step()

    def _launch_later(self, no: int, i: int) -> None:
        if no == self.step_no and self.planning:
            assert self.step is not None
            self._launch(i, self.step.targets[i])

    def _launch(self, i: int, target: Target) -> None:
        if target.kind is Kind.USER:
            specs = self.pbx.device_legs(self, target.name, target.latest_only)
            if not specs:
                self._target_done(i, Outcome.UNREACHABLE, 480, "User is offline")
                return
            if not self.callee:
                self.callee = target.name
            self._ring(target.name)
            for spec in specs:
                self._send_leg(i, spec)
        elif target.kind is Kind.APP:
            if not self.pbx.start_app(self, target):
                self._target_done(i, Outcome.FAILED, 503, f"{target.name} is not available")
        elif target.kind is Kind.CALL:
            refused = self.pbx.take_call(self, target)
            if refused is not None:  # its status is the caller's answer (End 0)
                self._target_done(i, Outcome.FAILED, *refused)
        else:
            assert target.route is not None
            if not self.callee:
                self.callee = target.name
            self.exits[i] = list(target.route.candidates)
            self._next_exit(i)

    def _send_leg(self, i: int, spec: LegSpec) -> Leg:
        """Send the INVITE of a B-leg for target ``i``."""
        a_inv = self.a.invite
        mf = a_inv.max_forwards
        via = self.pbx.via_for(spec.peer)
        our_contact = self.pbx.contact_for(spec.peer, spec.contact_user)
        own = self.pbx.common_headers()
        if spec.strip_100rel:
            own = [(n, without_100rel(v) if n == "Supported" else v) for n, v in own]
        display = '"' + spec.display.replace("\\", "\\\\").replace('"', '\\"') + '" ' \
            if spec.display else ""
        headers = [("Via", via),
                   ("Max-Forwards", str(max(0, (mf if mf is not None else 70) - 1))),
                   *spec.headers,
                   ("From", f"{display}<{spec.from_uri}>;tag={new_tag()}"),
                   ("To", spec.to), ("Call-ID", new_call_id()), ("CSeq", "1 INVITE"),
                   ("Contact", our_contact), *own,
                   *[(n, v) for n, v in relayed_headers(a_inv) if n not in _OWN_HEADERS]]
        body = self.b_offer if self.b_offer is not None else self._sdp("A", a_inv.body)
        req = Request("INVITE", spec.uri, headers, body)
        leg = Leg("B", spec.peer, req, None, spec.callee, step=self.step_no, target=i,
                  spec=spec, slot=bool(spec.exit), sdp_out=body)
        self.b_legs.append(leg)
        leg.key = self.pbx.send_request(req, spec.peer, self._on_b_response, leg)
        return leg

    # -- ways out: the lines and trunks of a NUMBER target, in turn ----------------------
    def _next_exit(self, i: int) -> None:
        """Send target ``i``'s leg through its next line or trunk that can take the call;
        when none is left, the target failed with the last failure (refusals count)."""
        assert self.step is not None
        route = self.step.targets[i].route
        assert route is not None
        exits = self.exits.get(i, [])
        while exits:
            name = exits.pop(0)
            got = self.pbx.exit_leg(self, route, name)
            if isinstance(got, LegSpec):
                leg = self._send_leg(i, got)
                self.tried.append(leg)
                seconds = got.no_answer_time or self.snap.system.no_answer_time
                self._after(seconds, self._exit_no_answer, leg)
                return
            self.tried.append(Refused(name, route.number, route.caller_number, *got))
        last = self.tried[-1] if self.tried else None
        if isinstance(last, Refused):
            status, reason = last.status, last.reason
        else:
            status, reason = 503, "No external line available"
        self.reason = reason
        self._target_done(i, outcome_of(status), status, reason)

    def _exit_no_answer(self, leg: Leg) -> None:
        """The line's no_answer_time passed while the outside number rang."""
        if leg.state in (LegState.CALLING, LegState.EARLY) and leg.step == self.step_no \
                and self.planning:
            self._cancel_leg(leg)
            self.exits.pop(leg.target, None)
            self._target_done(leg.target, Outcome.NO_ANSWER, 480, "No Answer")

    def _exit_failed(self, leg: Leg, resp: Response) -> None:
        """A way out failed: busy ends the target, anything else tries the next exit."""
        status, reason = resp.status, resp.reason
        if status not in _BUSY and self.exits.get(leg.target):
            self._next_exit(leg.target)
            return
        source: Response | None = resp
        if status in (401, 407):  # the provider's challenge was ours to answer, not the caller's
            status, reason, source = 403, f"{_exit_of(leg)}: credentials refused ({reason})", None
        self.reason = reason
        self._target_done(leg.target, outcome_of(status), status, reason, source)

    def _authenticate(self, leg: Leg, resp: Response) -> bool:
        """Answer a provider's 401/407 with the leg's credentials: the same INVITE again
        (new branch, next CSeq) with an Authorization. False: the failure stands."""
        spec = leg.spec
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        challenges = resp.headers.get_all(header)
        stale = any("stale=true" in c.lower().replace(" ", "") for c in challenges)
        if (spec is None or spec.credentials is None or not self.planning
                or leg.step != self.step_no
                or (leg.challenges >= _MAX_CHALLENGES - 1 and not stale)):
            return False
        old = leg.invite
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        for challenge in challenges:
            try:
                value = authorization_for(challenge, "INVITE", old.uri, *spec.credentials)
            except BadMessage:
                continue  # an algorithm we do not speak: the next challenge
            via = self.pbx.via_for(leg.peer)
            headers = [("Via", via)] + [
                (n, v) for n, v in old.headers if n.lower() not in (
                    "via", "cseq", "authorization", "proxy-authorization")]
            headers += [("CSeq", f"{old.cseq[0] + 1} INVITE"), (name, value)]
            leg.invite = Request("INVITE", old.uri, headers, old.body)
            leg.challenges += 1
            leg.state, leg.dialog, leg.rseq, leg.cancel_pending = (
                LegState.CALLING, None, None, False)
            leg.key = self.pbx.send_request(leg.invite, leg.peer, self._on_b_response, leg)
            return True
        return False

    def _give_back(self, leg: Leg) -> None:
        """The leg's line or trunk has one call less."""
        if leg.slot and leg.spec is not None:
            leg.slot = False
            self.pbx.exit_released(leg.spec.exit)

    def _ring(self, user: str) -> None:
        if user not in self.ringing_users:
            self.ringing_users = self.ringing_users | {user}
            self.pbx.user_ringing(user, +1)
            self.pbx.on_change(self)

    def _unring(self, user: str) -> None:
        if user in self.ringing_users:
            self.ringing_users = self.ringing_users - {user} or NOBODY
            self.pbx.user_ringing(user, -1)
            self.pbx.on_change(self)

    def _target_done(self, i: int, outcome: Outcome, status: int, reason: str | None,
                     resp: Response | None = None) -> None:
        if self.outcomes[i] is not None:
            return
        self.outcomes[i] = outcome
        rank = _failure_rank(status)
        if self._best is None or rank < self._best[0]:
            self._best = (rank, status, reason, resp)
        assert self.step is not None
        target = self.step.targets[i]
        if target.kind is Kind.USER and not any(
                t.kind is Kind.USER and t.name == target.name and o is None
                for t, o in zip(self.step.targets, self.outcomes)):
            self._unring(target.name)
        self._check_step()

    def _check_step(self) -> None:
        """Every target of the step ended without an answer: on to the next step."""
        if self._launching or self.step is None or any(o is None for o in self.outcomes):
            return
        if not self.planning:
            return
        self._next(self.step.next(combine(o for o in self.outcomes if o is not None)))

    def _step_timeout(self, no: int) -> None:
        if no != self.step_no or not self.planning:
            return
        self._cancel_forks()
        for user in list(self.ringing_users):
            self._unring(user)
        assert self.step is not None
        self._next(self.step.next(Outcome.NO_ANSWER))

    def _end_plan(self, end: End) -> None:
        """The plan's last word: its status, or the best failure of the last step."""
        self._cancel_forks()
        self.planning = False
        if self.state not in (CallState.ROUTING, CallState.RINGING):  # a handed-on call
            if not end.status and self._best is not None:  # the best failure a target gave
                end = End(self._best[1], self._best[2] or "", end.cause)
            if self._on_end is not None:
                self._on_end(end)
            else:
                self.hangup(released_by="pbx", cause=end.cause)
            return
        if end.status:
            self._fail(end.status, end.reason or None, None, released_by="pbx",
                       cause=end.cause)
        elif self._best is not None:
            _, status, reason, resp = self._best
            self._fail(status, reason, resp, released_by="callee")
        else:
            self._fail(480, None, None, released_by="pbx", cause="unavailable")

    # -- B-leg responses --------------------------------------------------------------
    def _on_b_response(self, leg: Leg, resp: Response, key: object = None) -> None:
        status = resp.status
        leg.last_status = status
        if 100 < status < 200:
            self._b_provisional(leg, resp)
        elif 200 <= status < 300:
            self._b_answer(leg, resp)
        elif status >= 300:
            self._b_failure(leg, resp)

    def _b_provisional(self, leg: Leg, resp: Response) -> None:
        if leg.state is LegState.CALLING:
            leg.state = LegState.EARLY
        if resp.to_tag and leg.dialog is None and resp.contacts:
            leg.dialog = Dialog.as_uac(leg.invite, resp, leg.peer)
        rseq = (resp.headers.get("RSeq") or "").strip()
        if "100rel" in (resp.headers.get("Require") or "") and is_digits(rseq) \
                and len(rseq) <= 10:
            # RFC 3262 4: only the next RSeq is new; a retransmission is not PRACKed again.
            if leg.rseq is None or int(rseq) == leg.rseq + 1:
                leg.rseq = int(rseq)
                self._prack(leg, resp)
        if leg.cancel_pending:
            leg.cancel_pending = False
            self._cancel_leg(leg)
            return
        if leg.step == self.step_no and self.state in (CallState.ROUTING, CallState.RINGING):
            if self.state is CallState.ROUTING:
                self._set_state(CallState.RINGING)
            self._respond_a(resp.status, resp.reason, resp)

    def _prack(self, leg: Leg, resp: Response) -> None:
        if leg.dialog is None:
            return
        rack = f"{resp.headers.get('RSeq')} {resp.cseq[0]} {resp.cseq[1]}"
        dest = leg.destination()
        via = self.pbx.via_for(dest)
        req = leg.dialog.new_request("PRACK", via=via, headers=[("RAck", rack)])
        self.pbx.send_request(req, dest, None, leg)

    def _b_answer(self, leg: Leg, resp: Response) -> None:
        dialog = leg.dialog
        if dialog is None or dialog.remote_tag != resp.to_tag:
            dialog = Dialog.as_uac(leg.invite, resp, leg.peer)
        elif resp.contacts:  # the 2xx confirming an early dialog sets its target
            dialog.remote_target = str(resp.contacts[0].uri)
        cseq = leg.invite.cseq[0]
        if leg is self.winner and leg.dialog is not None and dialog is not leg.dialog:
            self._end_extra_dialog(leg, dialog, cseq)
            return
        if leg.ack:
            ack = parse_message_untrusted(leg.ack)  # our own bytes: a Request
            if ack.cseq[0] == cseq:
                self.pbx.send_stateless(ack, dialog.destination(leg.peer))  # lost: again
                return
        unanswered = self.state in (CallState.ROUTING, CallState.RINGING)
        current = self.planning and self.winner is None and leg.step == self.step_no
        if current and unanswered and not self.a.invite.body:
            self._ack_to = (leg, cseq)  # the caller's ACK brings the answer
        elif self._ack_to is None or self._ack_to[0] is not leg:
            self._ack(leg, dialog, cseq)
        if not current:
            # Another device answered first (or the caller left, or the plan moved on).
            leg.dialog, leg.state = dialog, LegState.CONFIRMED
            if leg is not self.winner:
                self._bye(leg)
                self._give_back(leg)
            return
        leg.dialog, leg.state = dialog, LegState.CONFIRMED
        self.winner = leg
        self.pbx.register_dialog(dialog.id, self, leg)
        for other in self.b_legs:
            if other is not leg and other.state in (LegState.CALLING, LegState.EARLY):
                self._cancel_leg(other, reason="SIP;cause=200;text=\"Call completed elsewhere\"")
        self._answered_by(leg.user, leg)
        if not unanswered:  # handed on: the caller talks to the relay already
            self.learn(leg, resp.body)
            self._handed_on_answered()
            return
        self.answer_time = time.time()
        self._set_state(CallState.ANSWERED)
        self.final_status = 200
        resp_a = self._respond_a(resp.status, resp.reason, resp)
        self._await_ack(resp_a, self.a)
        limits = [d for d in (self.max_duration, leg.spec.max_duration if leg.spec else 0)
                  if d > 0]
        if limits:
            self._after(min(limits), self._max_duration)

    def _end_extra_dialog(self, leg: Leg, dialog: Dialog, cseq: int) -> None:
        """A 2xx of another dialog from behind the device that answered: ended; the
        call keeps its own."""
        end_other_dialog(self.pbx, dialog, dialog.destination(leg.peer), cseq, leg)

    def _ack(self, leg: Leg, dialog: Dialog, cseq: int, body: bytes = b"") -> None:
        dest = dialog.destination(leg.peer)
        via = self.pbx.via_for(dest)
        headers = [("Content-Type", "application/sdp")] if body else []
        ack = dialog.new_request("ACK", via=via, cseq=cseq, body=body, headers=headers)
        leg.ack = ack.to_bytes()
        self.pbx.send_stateless(ack, dest)

    def _b_failure(self, leg: Leg, resp: Response) -> None:
        leg.reason = resp.reason
        if resp.status in (401, 407) and self._authenticate(leg, resp):
            return
        leg.state = LegState.GONE
        self._give_back(leg)
        if leg.step != self.step_no or not self.planning:
            return
        if leg.spec is not None and leg.spec.exit:
            self._exit_failed(leg, resp)
            return
        mine = [b for b in self.b_legs if b.step == leg.step and b.target == leg.target]
        if resp.status >= 600:  # RFC 3261 16.7: a 6xx ends the search among the devices
            for other in mine:
                self._cancel_leg(other)
        elif any(b.state is not LegState.GONE for b in mine):
            return
        best = min(mine, key=lambda b: _failure_rank(b.last_status))
        reason = resp.reason if best is leg else None
        self._target_done(leg.target, outcome_of(best.last_status), best.last_status, reason,
                          resp if best is leg else None)

    def answer_by_app(self, app: Any, body: bytes) -> None:
        """minisip itself answers the caller (an app of pbx/apps) with ``body``; a
        caller already answered (a handed-on call) is connected to it as it is."""
        self._cancel_forks()
        self.app = app
        self._answered_by(app.name, None)
        if self.answer_time is not None:  # handed on to an app: the caller is ours already
            self._handed_on_answered()
            return
        self.answer_caller(body)

    def answer_caller(self, body: bytes) -> None:
        """The 200 to the caller's INVITE, with ``body`` (an app's or a picker's SDP)."""
        self.answer_time = time.time()
        self._set_state(CallState.ANSWERED)
        self.final_status = 200
        resp = self._respond_a(200, None, body=body)
        self._await_ack(resp, self.a)
        if self.max_duration > 0:
            self._after(self.max_duration, self._max_duration)

    def _answered_by(self, callee: str, leg: Leg | None) -> None:
        """Who rings now stops ringing; ``leg`` (None: an app) answered as ``callee``."""
        self.planning = False
        for u in list(self.ringing_users):
            self._unring(u)
        self.callee, self.answered_user = callee, leg.user if leg is not None else None
        if leg is not None:
            self.talk(leg, True)

    def _handed_on_answered(self) -> None:
        if self.media is not None:
            self.media.stop_music("A")  # the music the caller waited with
        hook, self._on_answer = self._on_answer, None
        if hook is not None:
            hook()

    def talk(self, leg: Leg, on: bool) -> None:
        """Count ``leg``'s user as talking in this call, or stop counting it (a local
        user's: an outside number has no state)."""
        if leg.talking == on or (on and (_exit_of(leg) or leg.user not in
                                         self.pbx.snapshot().users)):
            return
        leg.talking = on
        self.pbx.user_talking(leg.user, 1 if on else -1)

    def hand_on(self, plan: Plan, on_end: Callable[[End], None] | None = None,
                on_answer: Callable[[], None] | None = None) -> None:
        """Ring ``plan`` for a caller already answered by an app (the attendant connects,
        a parked call is retrieved...). The caller's media is on the relay: whoever
        answers is connected through it; when the plan ends unanswered ``on_end`` is
        told (None: the call is released; also when the caller hangs up meanwhile), when
        someone answers ``on_answer``."""
        if self.app is not None:
            app, self.app = self.app, None
            app.cancel()
        if self.winner is not None:  # a transfer replaces who talked
            self.talk(self.winner, False)
        self.winner = self.answered_user = None
        self._on_end, self._on_answer, self.step = on_end, on_answer, None
        self._next(plan)

    # -- A-leg ------------------------------------------------------------------------
    def _respond_a(self, status: int, reason: str | None,
                   source: Response | None = None, body: bytes = b"") -> Response:
        a = self.a
        headers = [(n, v) for n, v in relayed_headers(source) if n not in _OWN_HEADERS] \
            if source is not None else []
        contact = self.pbx.contact_for(a.peer, self.callee) if status < 300 else ""
        if status < 300:
            # RFC 3261 12.1.1: a response that creates a dialog copies the Record-Route
            # of the request, in order, so a record-routing proxy stays in the path
            headers += [("Record-Route", v) for v in a.invite.headers.get_all("Record-Route")]
            headers.append(("Contact", contact))
            headers += self.pbx.common_headers()
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(a.invite, status, reason, to_tag=self.a_tag, headers=headers)
        if body:
            resp.body = a.sdp_out = body
        elif source is not None and source.body:
            resp.body = self._sdp("B", source.body)
        if a.dialog is None and status < 300:
            a.dialog = Dialog.as_uas(a.invite, resp, a.peer, contact)
            self.pbx.register_dialog(a.dialog.id, self, a)
        if self.reliable is not None and status < 200:
            self.reliable.send(resp)
            return resp
        if self.reliable is not None:
            self.reliable.stop()  # the final response: nothing provisional is resent
        self.pbx.send_response(resp)
        return resp

    def _await_ack(self, resp: Response, leg: Leg) -> None:
        """Resend ``resp`` (a 2xx to an INVITE) to ``leg`` until its ACK comes."""
        self._acks[leg] = resp
        t1 = self.snap.system.timers.t1
        self._after(t1, self._retransmit_2xx, resp, leg, t1)
        self._after(64 * t1, self._ack_timeout, resp, leg)

    def _retransmit_2xx(self, resp: Response, leg: Leg, interval: float) -> None:
        # RFC 3261 13.3.1.4: the UAS core resends the 2xx until the ACK comes.
        if self._acks.get(leg) is not resp or self.state is CallState.ENDED:
            return
        self.pbx.send_stateless(resp, leg.peer)
        interval = min(2 * interval, self.snap.system.timers.t2)
        self._after(interval, self._retransmit_2xx, resp, leg, interval)

    def _ack_timeout(self, resp: Response, leg: Leg) -> None:
        if self._acks.get(leg) is resp:  # 64*T1 and no ACK: RFC 13.3.1.4
            self.hangup(released_by="pbx", cause="no ACK")

    def on_ack(self, leg: Leg, req: Request) -> None:
        pending = self._acks.get(leg)
        if pending is None or req.cseq[0] != pending.cseq[0]:
            return  # a retransmitted ACK, or one for a 2xx we no longer resend
        del self._acks[leg]
        if not self._acks:
            self._acks = {}  # (an emptied dict keeps its table for the call's life)
        for t in self.timers:  # the 2xx's retransmission and no-ACK timers held it 32 s
            if t.alive and t.args and t.args[0] is pending:
                t.cancel()
        self.timers = [t for t in self.timers if t.alive]
        if leg in self.managed:
            self.managed[leg].on_ack(leg, req)
            return
        if self.app is not None:
            self.app.on_ack(req)
        if self._ack_to is not None:  # the answer to the other side's offer is in it
            other, cseq = self._ack_to
            self._ack_to = None
            if other.dialog is not None:
                self._ack(other, other.dialog, cseq, self._sdp(leg.side, req.body))
        elif req.body and self.app is None:  # the answer to an offer minisip made
            self.learn(leg, req.body)
        if leg is self.a and self.state is CallState.ANSWERED:
            self._set_state(CallState.TALKING)

    def on_cancel(self, cause: str = "cancelled") -> None:
        """The caller gave up before an answer: 487 to its INVITE, CANCEL the forks."""
        if self.state not in (CallState.ROUTING, CallState.RINGING):
            return
        self._cancel_forks()
        self._fail(487, None, None, released_by="caller", cause=cause)

    def on_request(self, leg: Leg, req: Request) -> Response | None:
        """An in-dialog request on one leg: answer it or relay it to the other."""
        other = self._other(leg)
        if leg in self.managed and self.state is not CallState.ENDED:
            return self.managed[leg].on_request(leg, req)
        if req.method == "PRACK" and leg is self.a and self.reliable is not None:
            return self.reliable.on_prack(req)
        if leg.state is LegState.GONE and self.state is not CallState.ENDED:
            # a party replaced by another (pick-up, join, transfer): its dialog is over
            return make_response(req, 200 if req.method == "BYE" else 481)
        if req.method == "BYE":
            if self.state in (CallState.ROUTING, CallState.RINGING):
                self.on_cancel()  # RFC 3261 15.1.2: the early dialog ends, the INVITE gets 487
            else:
                self.hangup(released_by="caller" if leg.side == "A" else "callee",
                            cause="normal", skip=leg)
            return make_response(req, 200)
        if req.method == "REFER" and self.state is not CallState.ENDED:
            from .transfer import on_refer  # transfer builds on this module
            return on_refer(self, leg, req)
        if self.app is not None and self.state is not CallState.ENDED:
            return self.app.on_request(req)
        if self.planning and self.state is not CallState.ENDED and other is None:
            # the caller waits while the call is handed on: keys and refreshes wait too
            return make_response(req, 491 if req.method in ("INVITE", "UPDATE") else 200)
        if other is None or other.dialog is None or self.state is CallState.ENDED:
            return make_response(req, 481)
        if req.method == "PRACK":
            return make_response(req, 200)
        if req.method in ("INVITE", "UPDATE") and req.body:
            self._note_hold(leg.side, req.body)
        if self.media is None and req.method in ("INVITE", "UPDATE"):
            # a hold on a direct-media call: the held party comes to the relay for the music
            self.media = self.pbx.hold_media(self, leg, req.body, self._bodies)
        if self.media is not None:
            answered = self._media_request(leg, other, req)
            if answered is not None:
                return answered
        dest = other.destination()
        via = self.pbx.via_for(dest)
        fwd = other.dialog.new_request(req.method, via=via, body=self._sdp(leg.side, req.body),
                                       headers=relayed_headers(req))
        key = self.pbx.send_request(fwd, dest, self._on_relay_response, other)
        self.pending[key] = (req, leg)
        return None

    def _note_hold(self, side: str, body: bytes) -> None:
        """Who holds whom, for `minisip calls` (media or not, relayed or not)."""
        try:
            held = sdp_on_hold(body)
        except BadMessage:
            return  # not SDP we can read: the relay passes it on as it is
        self.holding = self.holding | {side} if held else self.holding - {side} or NOBODY
        self.pbx.on_change(self)  # busy lamps show hold (events/dialog.py)

    def _on_relay_response(self, leg: Leg, resp: Response, key: object = None) -> None:
        entry = self.pending.get(key) if key is not None else None
        if entry is None or resp.status == 100:  # 100 is hop by hop: ours went out already
            return
        if resp.status >= 200:
            del self.pending[key]
        req, origin = entry
        invite_2xx = resp.cseq[1] == "INVITE" and 200 <= resp.status < 300
        if invite_2xx and leg.dialog is not None:
            if req.body:  # the offer went in the re-INVITE: nothing to wait for
                self._ack(leg, leg.dialog, resp.cseq[0])
            else:  # offerless re-INVITE: the answer comes in the origin's ACK
                self._ack_to = (leg, resp.cseq[0])
        headers = relayed_headers(resp)
        if req.method in ("INVITE", "UPDATE") and resp.status < 300:
            headers.append(("Contact", self.pbx.contact_for(origin.peer, self.caller)))
        out = make_response(req, resp.status, resp.reason, headers=headers)
        out.body = self._sdp(leg.side, resp.body)
        self.pbx.send_response(out)
        if invite_2xx:
            self._await_ack(out, origin)

    def _media_request(self, leg: Leg, other: Leg, req: Request) -> Response | None:
        """What minisip does itself with a mid-call request on a relayed call."""
        media = self.media
        assert media is not None
        if req.method == "INFO" and media.wants_events(other.side):
            # The other party reads keys as RFC 4733 events only: convert, answer here.
            try:
                d = parse_info_untrusted(req.headers.get("Content-Type") or "", req.body)
            except BadMessage:
                return None  # not DTMF: relay it as it is
            media.send_digit(other.side, d.digit, d.duration_ms)
            return make_response(req, 200)
        if req.method in ("INVITE", "UPDATE") and req.body:
            holder = self.snap.users.get(leg.user)
            if sdp_on_hold(req.body):
                if holder is not None and holder.music_on_hold:
                    media.start_music(other.side, hold_music(self.snap))
            else:
                media.stop_music(other.side)
                if media.hold_only == leg.side:  # resumed: back to direct media
                    self.media = None
                    media.close()
        return None

    def digit_to_info(self, side: str, digit: DtmfDigit) -> None:
        """A key pressed as RFC 4733 on ``side`` goes to the other party as SIP INFO."""
        other = self.winner if side == "A" else self.a
        if other is None or other.dialog is None or self.state is not CallState.TALKING:
            return
        ctype, body = make_info(digit.digit, digit.duration_ms)
        dest = other.destination()
        via = self.pbx.via_for(dest)
        req = other.dialog.new_request("INFO", via=via, body=body,
                                       headers=[("Content-Type", ctype)])
        self.pbx.send_request(req, dest, None, other)
        self.pbx.flush()  # we are in the media loop: no SIP batch end will send it soon

    def learn(self, leg: Leg, body: bytes) -> None:
        """``leg``'s party answered an offer minisip made: where its media comes from."""
        if body:
            leg.sdp_in = body
            if self.media is not None:
                self.media.sdp_from(leg.side, body)

    def _sdp(self, side: str, body: bytes) -> bytes:
        """A body from ``side`` on its way to the other party (rewritten when relayed)."""
        if not body:
            return body
        self._bodies[side] = body  # each party's current SDP: a hold may need the relay
        frm, to = (self.a, self.winner) if side == "A" else (self.winner, self.a)
        out = self.media.sdp_from(side, body) if self.media is not None else body
        if frm is not None:
            frm.sdp_in = body
        if to is not None:
            to.sdp_out = out
        return out

    def check_media(self, timeout: float) -> None:
        """Release an answered call whose relayed media stopped ``timeout`` seconds ago."""
        if self.media is None or self.state is not CallState.TALKING:
            return
        idle = self.media.idle_seconds()
        if idle >= timeout:
            self.hangup(released_by="pbx", cause="media timeout")
        else:
            self._after(timeout - idle, self.check_media, timeout)

    def _other(self, leg: Leg) -> Leg | None:
        return self.winner if leg.side == "A" else self.a

    # -- release ----------------------------------------------------------------------
    def _max_duration(self) -> None:
        if self.state in (CallState.ANSWERED, CallState.TALKING):
            self.hangup(released_by="pbx", cause="max duration")

    def _cancel_forks(self) -> None:
        for leg in self.b_legs:
            if leg.state in (LegState.CALLING, LegState.EARLY):
                self._cancel_leg(leg)

    def _cancel_leg(self, leg: Leg, reason: str | None = None) -> None:
        if leg.state is LegState.CALLING:
            leg.cancel_pending = True  # RFC 3261 9.1: not before a provisional
            return
        if leg.state is not LegState.EARLY:
            return
        leg.state = LegState.GONE
        inv = leg.invite
        headers = [("Via", inv.headers.get_all("Via")[0]), ("Max-Forwards", "70"),
                   ("From", inv.headers.get("From") or ""), ("To", inv.headers.get("To") or ""),
                   ("Call-ID", inv.call_id), ("CSeq", f"{inv.cseq[0]} CANCEL")]
        headers += [("Route", r) for r in inv.headers.get_all("Route")]
        if reason:
            headers.append(("Reason", reason))
        self.pbx.send_request(Request("CANCEL", inv.uri, headers), leg.peer, None, leg)

    def _bye(self, leg: Leg) -> None:
        if leg.dialog is None or leg.state is LegState.GONE:
            return
        leg.state = LegState.GONE
        dest = leg.destination()
        via = self.pbx.via_for(dest)
        self.pbx.send_request(leg.dialog.new_request("BYE", via=via), dest, None, leg)

    def _fail(self, status: int, reason: str | None, source: Response | None, *,
              released_by: str, cause: str | None = None) -> None:
        self.final_status = status
        self.cause = cause or CAUSES.get(status, f"{status}")
        self.released_by = released_by
        told = self._respond_a(status, reason, source)
        self.reason = told.reason if status != 487 else ""  # the CDR says what the caller heard
        self._end()

    def hangup(self, *, released_by: str, cause: str, skip: Leg | None = None) -> None:
        """Release an answered call: BYE every confirmed leg but ``skip``."""
        if self.state is CallState.ENDED:
            return
        self.cause, self.released_by = cause, released_by
        self._cancel_forks()  # legs still ringing for a handed-on call
        for leg in (self.a, *self.b_legs):
            if leg is not skip and leg.state is not LegState.GONE and leg.dialog is not None:
                self._bye(leg)
        if skip is not None:
            skip.state = LegState.GONE
        self._end()

    def release(self, cause: str, status: int = 503, reason: str = "Service Unavailable") -> None:
        """End the call whatever its state (shutdown, deleted user); a caller not yet
        answered gets ``status``."""
        if self.state in (CallState.ROUTING, CallState.RINGING):
            self._cancel_forks()
            self._fail(status, reason, None, released_by="pbx", cause=cause)
        else:
            self.hangup(released_by="pbx", cause=cause)

    def _end(self) -> None:
        # a handed-on call ended while its plan rang (the caller hung up): its on_end hears
        unfinished = self._on_end if self.planning else None
        self.planning = False
        for t in self.timers:
            t.cancel()
        self.timers.clear()
        for leg in self.b_legs:
            self._give_back(leg)
        for user in list(self.ringing_users):
            self._unring(user)
        for leg in (self.a, *self.b_legs):
            self.talk(leg, False)
        for leg, handler in list(self.managed.items()):
            handler.close(leg)
        if self.app is not None:  # a recording is stored now, before the BYE's 200
            self.app.cancel()
        if self.tasks is not None:  # its app, players, DTMF senders end with the call
            self.tasks.close()
        if self.media is not None:  # ports go back to the pool with the call
            self.media_stats = self.media.stats()
            self.media.close()
        self._set_state(CallState.ENDED)
        self.pbx.call_ended(self)
        if unfinished is not None:
            unfinished(End(487, "Request Terminated", "cancelled"))

    # -- records ----------------------------------------------------------------------------
    def cdrs(self) -> list[CdrRecord]:
        """The O-CDR (the caller's half), a T-CDR for the users' devices that rang (or the
        app that answered), and one per line or trunk tried, in order (refusals too)."""
        if self.merged:
            return []
        end = time.time()
        duration = end - self.answer_time if self.answer_time else 0.0
        last = self.winner or (self.tried[-1] if self.tried else None)
        common: dict[str, Any] = dict(
            call_id=self.a.invite.call_id, caller=self.caller, dialed=self.dialed,
            final=self.callee, route=self.route, setup_time=self.setup_time,
            answer_time=self.answer_time, end_time=end, duration=round(duration, 3),
            status=self.final_status, cause=self.cause or "normal",
            released_by=self.released_by or "caller", steps=" | ".join(self.history),
            line_in=self.line_in, line_out=_exit_of(last),
            caller_number=self.caller_number or self.caller, reason=self.reason,
            transferred_by=self.transferred_by, transferred_to=self.transferred_to,
            **_media_columns(self.media_stats))
        out = [CdrRecord(kind="O", **common)]
        if self.app is not None or any(not _exit_of(b) for b in self.b_legs):
            out.append(CdrRecord(kind="T", **common | {"line_out": ""}))
        for t in self.tried:
            half: dict[str, Any] = {"line_out": _exit_of(t)}
            if isinstance(t, Refused):
                half |= {"final": t.number, "caller_number": t.caller_number,
                         "status": t.status, "reason": t.reason, "released_by": "pbx"}
            else:
                if t.spec is not None:
                    half |= {"final": t.spec.callee, "caller_number": t.spec.caller_number}
                half |= {"status": 200, "reason": ""} if t is self.winner else {
                    "status": t.last_status if t.last_status >= 300 else self.final_status,
                    "reason": t.reason or self.reason}
            if t is not self.winner:
                status = half["status"]
                half |= {"answer_time": None, "duration": 0.0,
                         "cause": common["cause"] if status == self.final_status
                         else CAUSES.get(status, str(status))}
            out.append(CdrRecord(kind="T", **(common | half)))
        return out

    def summary(self) -> dict[str, Any]:
        media = self.media.stats() if self.media is not None else self.media_stats
        return {"media": media or None,
                "call_id": self.a.invite.call_id, "caller": self.caller,
                "callee": self.callee, "dialed": self.dialed,
                "state": "held" if self.holding and self.state is CallState.TALKING
                else self.state.value,
                "route": self.route, "setup_time": self.setup_time,
                "answer_time": self.answer_time, "line_in": self.line_in,
                "line_out": _exit_of(self.winner or (self.tried[-1] if self.tried else None)),
                "devices": sum(1 for b in self.b_legs if b.state is not LegState.GONE),
                "step": str(self.step) if self.step is not None else "",
                "ringing": sorted(self.ringing_users), "parked": self.parked,
                "parties": [leg.user for leg in (self.a, self.winner, *self.managed)
                            if leg is not None and leg.state is not LegState.GONE]}
