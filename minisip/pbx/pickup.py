"""A new call joins a live one: pick-up, retrieve, join, Replaces and break-in.

The caller of a new INVITE (``p``) is planned a step with one CALL target
(services/__init__.py); its executor lands here. Each kind first finds the live
call it acts on (pure functions over the controller's calls, tested without
sockets), then moves ``p``'s caller into it (pbx/moves.py):

* ``pickup`` (``*40*101`` directed, ``*50`` the caller's pick-up group, or an
  INVITE with Replaces naming a ringing dialog): the oldest call ringing one of
  those users; its ringing devices get CANCEL, the caller is answered and talks
  to the picker.
* ``retrieve`` (``*71*nn``): the call parked in slot nn; the park app stops.
* ``join`` (``*74``): the caller's own answered call on another device; that
  device is released (BYE) and this one takes its place.
* ``replaces``: an INVITE with Replaces (RFC 3891) naming a dialog minisip has
  with a phone: a ringing one is picked up; an answered one is taken over by the
  same user's other device (as ``join``); anyone else gets 403, no match 481.
* ``break_in`` (``*75*101``, or an operator calling a busy user): the operator
  joins 101's answered call as a third party; minisip mixes the three G.711
  streams (pbx/conference.py). Refused (403) when any party of that call has
  ``operator_overstep``.

Each returns None when ``p``'s caller joined, or (status, reason) for it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..sip.errors import BadMessage
from .call import Call, CallState, Leg, LegState
from .services.plan import End, Kind, Plan, Step, Target
from .transfer import parse_replaces_untrusted

if TYPE_CHECKING:
    from .calls import CallController

Refusal = tuple[int, str] | None

NOTHING_TO_PICK_UP = (404, "No call to pick up")


# -- finding the call (pure) ------------------------------------------------------------

def ringing_call(calls: Iterable[Call], users: set[str], picker: str) -> Call | None:
    """The oldest unanswered call ringing one of ``users`` that ``picker`` did not make."""
    found = [c for c in calls if c.state in (CallState.ROUTING, CallState.RINGING)
             and c.planning and c.caller != picker and c.ringing_users & users]
    return min(found, key=lambda c: c.setup_time, default=None)


def pickup_group(users: dict[str, object], picker: str) -> set[str]:
    """The other members of ``picker``'s pick-up group (pickup_group_id > 0)."""
    me = users.get(picker)
    group = getattr(me, "pickup_group_id", 0)
    if not group:
        return set()
    return {name for name, u in users.items()
            if name != picker and getattr(u, "pickup_group_id", 0) == group}


def party_of(call: Call, user: str) -> Leg | None:
    """The leg through which ``user`` talks in an answered call, if any."""
    if call.state not in (CallState.ANSWERED, CallState.TALKING) or call.merged:
        return None
    for leg in (call.a, call.winner):
        if leg is not None and leg.user == user and leg.state is not LegState.GONE \
                and leg.dialog is not None:
            return leg
    return None


def answered_call(calls: Iterable[Call], user: str, exclude: Call) -> tuple[Call, Leg] | None:
    """The most recently answered call in which ``user`` talks."""
    found = [(c, leg) for c in calls if c is not exclude
             for leg in [party_of(c, user)] if leg is not None]
    return max(found, key=lambda e: e[0].answer_time or 0.0, default=None)


def replaces_plan(caller: str, header: str) -> Plan:
    """The plan of an INVITE with Replaces: it joins the dialog it names."""
    return Step((Target(Kind.CALL, "replaces", argument=header),), 0.0,
                "replaces", lambda outcome: End(0, "", "failed"))


# -- joining it -----------------------------------------------------------------------

def take(ctl: CallController, p: Call, target: Target) -> Refusal:
    """``p``'s caller joins the live call ``target`` names (see the module docstring)."""
    from . import moves
    try:
        return _TAKERS[target.name](ctl, p, target.argument)
    except moves.CannotMove as exc:
        return exc.status, exc.reason


def _pickup(ctl: CallController, p: Call, argument: str) -> Refusal:
    users = {argument} if argument else pickup_group(dict(ctl.snapshot().users), p.caller)
    call = ringing_call(ctl.calls.values(), users, p.caller)
    if call is None:
        return NOTHING_TO_PICK_UP
    picked(call, p)
    return None


def picked(call: Call, p: Call) -> None:
    """``p``'s caller answers the ringing ``call``: its devices get CANCEL."""
    from . import moves
    callee = call.callee or min(call.ringing_users)
    try:  # the first codec of the caller's that the picker has too
        theirs = moves.g711_codecs_untrusted(call.a.invite.body) or ["PCMU", "PCMA"]
        mine = moves.g711_codecs_untrusted(p.a.invite.body) or theirs
    except BadMessage:
        theirs = mine = ["PCMU"]
    codec = next((c for c in theirs if c in mine), "")
    if not codec:
        raise moves.CannotMove(488, "No G.711 codec in common with the caller")
    moves.relayed(call, p.a.peer)
    leg = moves.answer_joiner(call, p, "B", (codec,), callee)
    for other in call.b_legs:
        if other.state in (LegState.CALLING, LegState.EARLY):
            call._cancel_leg(other, reason='SIP;cause=200;text="Call completed elsewhere"')
    moves.place(call, leg, "B")
    call._answered_by(leg.user, leg)
    call.history.append(f"picked up by {leg.user}")
    call.answer_caller(moves.answer(call, "A", call.a.invite.body, (codec,)))


def _retrieve(ctl: CallController, p: Call, argument: str) -> Refusal:
    from . import moves
    call = ctl.parking.get(argument)
    if call is None:
        return 404, f"Nothing parked in slot {argument}"
    leg = moves.answer_joiner(call, p, "B", (moves.codec_of(call.a),), call.caller)
    ctl.parking.remove(call)
    app, call.app = call.app, None
    if app is not None:
        app.cancel()
    moves.place(call, leg, "B")
    call._answered_by(leg.user, leg)
    if call.media is not None:
        call.media.stop_music("A")
    call.history.append(f"retrieved by {leg.user} from slot {argument}")
    return None


def _join(ctl: CallController, p: Call, argument: str) -> Refusal:
    found = answered_call(ctl.calls.values(), p.caller, p)
    if found is None:
        return 404, "No call to join"
    replace(*found, p, f"joined by {p.caller}")
    return None


def replace(call: Call, old: Leg, p: Call, note: str) -> None:
    """``p``'s caller takes ``old``'s place in ``call``; ``old``'s device gets BYE."""
    from . import moves
    stayer = moves.other_party(call, old)
    opened = moves.relayed(call)
    codec = moves.codec_of(stayer) if stayer is not None else moves.codec_of(old)
    leg = moves.answer_joiner(call, p, old.side, (codec,), old.user)
    moves.release(call, old)
    call._bye(old)
    moves.place(call, leg, old.side)
    call.history.append(note)
    if stayer is not None and (opened or moves.held(stayer)):
        moves.reoffer(call, stayer, (codec,))


def _replaces(ctl: CallController, p: Call, argument: str) -> Refusal:
    try:
        r = parse_replaces_untrusted(argument)
    except BadMessage:
        return 400, "Bad Replaces header"
    found = ctl.find_dialog(r.call_id, r.to_tag, r.from_tag)
    if found is None or found[0] is p:
        return 481, "Call/Transaction Does Not Exist"
    call, leg = found
    if call.state in (CallState.ROUTING, CallState.RINGING):
        if not call.planning or call.caller == p.caller:
            return 481, "Call/Transaction Does Not Exist"
        picked(call, p)
        return None
    if r.early_only:  # RFC 3891 3: early-only and the dialog is confirmed
        return 486, "Busy Here"
    if leg.user != p.caller or party_of(call, leg.user) is not leg:
        return 403, "Only the same user may take over an answered call"
    replace(call, leg, p, f"replaced by {p.caller}")
    return None


def _break_in(ctl: CallController, p: Call, argument: str) -> Refusal:
    from . import conference
    found = answered_call(ctl.calls.values(), argument, p)
    if found is None:
        return 404, f"No call of {argument} to break into"
    call, _ = found
    users = ctl.snapshot().users
    parties = [leg.user for leg in (call.a, call.winner) if leg is not None]
    if any(getattr(users.get(u), "operator_overstep", False) for u in parties):
        return 403, "Overstep protection"
    if call.managed:
        return 486, "Already broken into"
    conference.break_in(call, p)
    return None


_TAKERS = {"pickup": _pickup, "retrieve": _retrieve, "join": _join, "replaces": _replaces,
           "break_in": _break_in}
