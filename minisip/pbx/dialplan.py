"""The dial plan: a pure function from (snapshot, caller, dialed) to a :class:`Route`.

Theory of operation
-------------------
:func:`route_call` reads nothing but its arguments (no I/O, no globals, no clock) and
works in the manual's order:

1. **Analyze caller.** The longest ``analyze_caller`` prefix of the caller number may
   name a transition; the changed number is ``Route.caller_number``.
2. **Feature codes** (``services.yaml feature_codes``), for local callers only:
   ``*90*200#`` is ``SERVICE forward_busy`` with argument ``200``. They come before the
   called-number table so that ``analyze_called`` cannot shadow them by accident (turn a
   code off with ``""`` to free its digits). :data:`FEATURES` is the table of what may
   follow each code and which user right it needs.
3. **Analyze called.** The longest ``analyze_called`` prefix gives the route. The
   caller's ``call_right`` must be >= the prefix's (403 otherwise), then the route's
   transition changes the called number, and :data:`_ROUTES` maps the route type to
   the function that finds its target.
4. **No match.** A number starting with the (non-empty) ``outgroup_prefix`` is an
   outside call: the prefix is removed and the call leaves on the caller's own
   ``external_line`` or on any line usable by every user (the prefix wins even when the
   whole number is also a user's: ``9101`` goes out as ``101``; the prefix alone is
   484). Anything else is a local number: a user, or the pilot number of a hunt or
   ring group; else 404.
   With an **empty** ``outgroup_prefix`` a number that is not local goes out on a line
   in the same way when any line is configured (404 when none is).
5. **Refine.** When the call leaves on lines/trunks that all share one
   ``outgoing_group_id`` (a SIP trunk, one line, an outgoing group, or a routing group
   or line choice whose members agree), ``refine_called`` and ``refine_caller`` for that
   group are applied here and ``Route.outgoing_group`` says which. When the candidates
   are in different groups the exit is only known while the controller tries them:
   ``outgoing_group`` is ``None`` and the controller calls :func:`refine_for_exit` for
   the candidate it is about to try (doing so on a refined route of the same group is
   a no-op, so a controller may call it for every candidate).

Exits
-----
``Route.candidates`` is the ordered tuple of line and trunk names to try. A line is a
candidate only if the caller may use it (``all_users_can_use``, or it is the caller's
``external_line``) and it may carry outgoing calls (``max_outgoing_calls`` > 0). A
line's ``chain_to_next_line`` follows it directly (manual 4.3: "when the call fails, it
is routed to such line to try again"), each name once. No candidate left: 503.

Who is a local caller
---------------------
The caller is looked up in ``snapshot.users`` under the number given (before the
caller transition), unless ``route_call(..., local=False)`` says the call came in on
a line or trunk. A caller that is not a user (a call arriving on a line or trunk)
has call right 0, cannot use feature codes, and gets no outgroup-prefix outside calls:
it reaches local numbers and the ``analyze_called`` routes an administrator allowed at
call right 0, so the PBX is not an open relay for toll calls.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from minisip.config.schema import (
    CalledRoute, DialPlan, FeatureCodes, RefineRule, Snapshot, User, longest_prefix,
)
from minisip.sip.digits import is_digits


class RouteKind(enum.Enum):
    LOCAL_USER = "local_user"  #: ring user ``target``
    EXTERNAL_LINE = "external_line"  #: leave on line ``target`` (then its chain)
    OUTGOING_GROUP = "outgoing_group"  #: leave on ``candidates``; target the group id or ""
    ROUTING_GROUP = "routing_group"  #: leave on the group's members in order
    SIP_TRUNK = "sip_trunk"  #: leave on trunk ``target``
    SERVICE = "service"  #: run service ``target`` with ``argument``
    REJECT = "reject"  #: answer ``status`` ``reason``


#: kinds whose call leaves the PBX on a line or trunk
EXIT_KINDS = frozenset({RouteKind.EXTERNAL_LINE, RouteKind.OUTGOING_GROUP,
                        RouteKind.ROUTING_GROUP, RouteKind.SIP_TRUNK})


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    #: user name, line/trunk name, outgoing group id ("" = any usable line), routing
    #: group name, or service name (feature code field name, voicemail, hunt_group...)
    target: str = ""
    #: the called number after transitions (and refine_called when ``outgoing_group``
    #: is set); for a feature code, the digits as dialled
    number: str = ""
    status: int = 0  #: for REJECT: the SIP status to answer
    reason: str = ""
    #: the caller number after the analyze_caller transition (and refine_caller when
    #: ``outgoing_group`` is set)
    caller_number: str = ""
    #: what matched: the analyze_called prefix, the outgroup prefix, or the feature code
    prefix: str = ""
    #: a service's parameter: the number after ``*90*``, the park slot, the hunt group
    #: name of ``hunt_group:sales``, the ring group id of ``ring_group:1``
    argument: str = ""
    #: the outgoing_group_id the numbers were refined for; None = not refined (yet)
    outgoing_group: int | None = None
    #: lines and trunks to try, in order (exit kinds only)
    candidates: tuple[str, ...] = ()


def reject(status: int, reason: str, number: str = "", caller_number: str = "",
           prefix: str = "") -> Route:
    return Route(RouteKind.REJECT, number=number, status=status, reason=reason,
                 caller_number=caller_number, prefix=prefix)


NOT_FOUND = (404, "Number not found")
NO_LINE = (503, "No external line available")
INCOMPLETE = (484, "Address Incomplete")


@dataclass(frozen=True, slots=True)
class _Call:
    """What every step needs to know about the call being routed."""
    snap: Snapshot
    caller: str  #: as given: the user name for local callers
    user: User | None  #: None: not a local user (a call from a line or trunk)
    caller_number: str  #: after analyze_caller

    @property
    def call_right(self) -> int:
        return self.user.call_right if self.user is not None else 0


# -- feature codes -------------------------------------------------------------------------

class Arg(enum.Enum):
    """What may follow a feature code (after ``*``; one trailing ``#`` is ignored)."""
    NONE = "none"  #: nothing: ``*74``, ``*50*``
    OPTIONAL = "optional"  #: a number or nothing (set / clear): ``*90*200#``, ``*90#``
    NUMBER = "number"  #: a number: ``*40*101``
    SLOT = "slot"  #: a park slot in call_park's range: ``*71*12``
    #: a park slot or nothing (minisip picks a free one and says it): ``*70*12``, ``*70``
    OPTIONAL_SLOT = "optional slot"


#: FeatureCodes field -> (its argument, the User attribute that is its right or None)
FEATURES: Mapping[str, tuple[Arg, str | None]] = {
    "forward_busy": (Arg.OPTIONAL, "forward_busy.enabled"),
    "forward_unreachable": (Arg.OPTIONAL, "forward_unreachable.enabled"),
    "forward_no_answer": (Arg.OPTIONAL, "forward_no_answer.enabled"),
    "forward_unconditional": (Arg.OPTIONAL, "forward_unconditional.enabled"),
    "directed_pickup": (Arg.NUMBER, None),
    "group_pickup": (Arg.NONE, None),
    "call_park": (Arg.OPTIONAL_SLOT, "call_park"),
    "call_retrieve": (Arg.SLOT, "call_retrieve"),
    "one_number_join": (Arg.NONE, "one_number_multi_devices"),
    "break_in": (Arg.NUMBER, "operator_break_in"),
    "do_not_disturb_on": (Arg.NONE, None),
    "do_not_disturb_off": (Arg.NONE, None),
    "voicemail": (Arg.NONE, "voicemail"),
}


@functools.lru_cache(maxsize=8)  # one per configuration: every call's dial plan reads it
def feature_codes(codes: FeatureCodes) -> tuple[tuple[str, str], ...]:
    """(code, field name) of every code that is on, longest code first."""
    on = [(getattr(codes, name), name) for name in FEATURES if getattr(codes, name)]
    return tuple(sorted(on, key=lambda c: -len(c[0])))


def _argument(rest: str) -> str | None:
    """The argument after a code: ``*200#`` -> ``200``, ``#`` or ``""`` -> ``""``;
    None when ``rest`` does not continue the code (``*901`` is not ``*90``)."""
    rest = rest.removesuffix("#")
    if not rest:
        return ""
    if rest[0] != "*":
        return None
    return rest[1:]


def _is_number(arg: str) -> bool:
    return bool(arg) and all(c in "0123456789+" for c in arg)


def _feature(call: _Call, dialed: str) -> Route | None:
    """The SERVICE route (or REJECT) of a dialled feature code; None if it is none."""
    for code, name in feature_codes(call.snap.services.feature_codes):
        if not dialed.startswith(code):
            continue
        arg = _argument(dialed[len(code):])
        if arg is None:
            continue
        kind, right = FEATURES[name]
        assert call.user is not None
        if right is not None and not attrgetter(right)(call.user):
            return reject(403, f"Service {name} not allowed", dialed, call.caller_number, code)
        problem = _check_argument(call, kind, arg)
        if problem is not None:
            return reject(*problem, dialed, call.caller_number, code)
        return Route(RouteKind.SERVICE, name, dialed, caller_number=call.caller_number,
                     prefix=code, argument=arg)
    return None


def _check_argument(call: _Call, kind: Arg, arg: str) -> tuple[int, str] | None:
    if kind is Arg.NONE:
        return None if not arg else NOT_FOUND  # *74*5 is no code and no number
    if kind is Arg.OPTIONAL:
        return None if not arg or _is_number(arg) else INCOMPLETE
    if kind is Arg.OPTIONAL_SLOT and not arg:
        return None
    if not _is_number(arg):
        return INCOMPLETE
    if kind in (Arg.SLOT, Arg.OPTIONAL_SLOT):
        park = call.snap.services.call_park
        if not is_digits(arg) or not park.first_slot <= int(arg) <= park.last_slot:
            return 404, f"No park slot {arg}"
    return None


# -- exits: lines and trunks ---------------------------------------------------------------

def outgoing_group_of(snapshot: Snapshot, name: str) -> int:
    """The outgoing_group_id of a line or trunk (KeyError if it is neither)."""
    exit_ = snapshot.lines.get(name) or snapshot.trunks[name]
    return exit_.outgoing_group_id


def _usable(call: _Call, name: str) -> bool:
    """May this caller's call leave on line or trunk ``name``?"""
    line = call.snap.lines.get(name)
    if line is None:
        return name in call.snap.trunks
    mine = call.user is not None and call.user.external_line == name
    return line.max_outgoing_calls > 0 and (line.all_users_can_use or mine)


def _candidates(call: _Call, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` each followed by its line chain, usable ones only, each once."""
    out: dict[str, None] = {}
    lines = call.snap.lines
    for name in names:
        while name and name not in out:
            if _usable(call, name):
                out[name] = None
            line = lines.get(name)
            name = line.chain_to_next_line if line is not None else ""
    return tuple(out)


def _group_members(snap: Snapshot, group: int) -> list[str]:
    """Lines then trunks with this outgoing_group_id, in config order."""
    return [name for table in (snap.lines, snap.trunks)
            for name, e in table.items() if e.outgoing_group_id == group]


#: exit kind -> the names its target stands for, before the usability filter
_EXIT_NAMES: Mapping[RouteKind, Callable[[Snapshot, str], list[str]]] = {
    RouteKind.EXTERNAL_LINE: lambda snap, target: [target],
    RouteKind.SIP_TRUNK: lambda snap, target: [target],
    RouteKind.ROUTING_GROUP: lambda snap, target: list(snap.routing_groups[target].members),
    RouteKind.OUTGOING_GROUP: lambda snap, target: _group_members(snap, int(target)),
}


def _refined(plan: DialPlan, rules: tuple[RefineRule, ...], group: int, number: str) -> str:
    rule = plan.refine(rules, group, number)
    return plan.transitions[rule.transition].apply(number) if rule is not None else number


def _refine(snap: Snapshot, route: Route, group: int) -> Route:
    plan = snap.dialplan
    return dataclasses.replace(
        route, number=_refined(plan, plan.refine_called, group, route.number),
        caller_number=_refined(plan, plan.refine_caller, group, route.caller_number),
        outgoing_group=group)


def refine_for_exit(snapshot: Snapshot, route: Route, outgoing_group_id: int) -> Route:
    """``route`` as it leaves on a line or trunk of ``outgoing_group_id``: the longest
    ``refine_called`` and ``refine_caller`` rules of that group applied.

    :func:`route_call` has already done this when all candidates share one group
    (``route.outgoing_group`` is set); for that group this returns ``route`` itself, so
    calling it before every attempt is always right. Another group then is a mistake
    (ValueError), as is a route that does not leave the PBX.
    """
    if route.kind not in EXIT_KINDS:
        raise ValueError(f"a {route.kind.value} route does not leave on a line or trunk")
    if route.outgoing_group is not None:
        if route.outgoing_group == outgoing_group_id:
            return route
        raise ValueError(f"route already refined for outgoing group {route.outgoing_group}, "
                         f"not {outgoing_group_id}")
    return _refine(snapshot, route, outgoing_group_id)


def _leave(call: _Call, kind: RouteKind, target: str, names: Iterable[str], number: str,
           prefix: str) -> Route:
    """An exit route over ``names`` (usable ones, chains followed), refined if it can be."""
    candidates = _candidates(call, names)
    if not candidates:
        return reject(*NO_LINE, number, call.caller_number, prefix)
    route = Route(kind, target, number, caller_number=call.caller_number, prefix=prefix,
                  candidates=candidates)
    groups = {outgoing_group_of(call.snap, name) for name in candidates}
    if len(groups) == 1:
        return _refine(call.snap, route, groups.pop())
    return route


# -- local numbers -------------------------------------------------------------------------

def _local(call: _Call, number: str, prefix: str = "", user: str = "") -> Route | None:
    """The route of a local number: user ``user`` (or the user of ``number``), or a hunt
    or ring group pilot number; None when ``number`` is not local."""
    snap = call.snap
    name = user or number
    if name in snap.users:
        return Route(RouteKind.LOCAL_USER, name, number, caller_number=call.caller_number,
                     prefix=prefix)
    if user:
        return None
    pilots = [("hunt_group", g, h.number) for g, h in snap.services.hunt_groups.items()]
    pilots += [("ring_group", str(g), r.number)
               for g, r in snap.services.ring_groups.items()]
    for service, arg, pilot in pilots:
        if pilot and pilot == number:
            return Route(RouteKind.SERVICE, service, number, caller_number=call.caller_number,
                         prefix=prefix, argument=arg)
    return None


# -- analyze called: one function per route type ------------------------------------------

def _to_local_user(call: _Call, route: CalledRoute, prefix: str, number: str) -> Route:
    found = _local(call, number, prefix, route.target)
    return found or reject(*NOT_FOUND, number, call.caller_number, prefix)


def _to_service(call: _Call, route: CalledRoute, prefix: str, number: str) -> Route:
    service, _, arg = route.target.partition(":")
    return Route(RouteKind.SERVICE, service, number, caller_number=call.caller_number,
                 prefix=prefix, argument=arg)


def _to_exit(call: _Call, route: CalledRoute, prefix: str, number: str) -> Route:
    kind = RouteKind(route.route)
    names = _EXIT_NAMES[kind](call.snap, route.target)
    return _leave(call, kind, route.target, names, number, prefix)


_ROUTES: Mapping[RouteKind, Callable[[_Call, CalledRoute, str, str], Route]] = {
    RouteKind.LOCAL_USER: _to_local_user,
    RouteKind.SERVICE: _to_service,
    **{kind: _to_exit for kind in EXIT_KINDS},
}


def _analyzed(call: _Call, dialed: str) -> Route | None:
    hit = call.snap.dialplan.called_route(dialed)
    if hit is None:
        return None
    prefix, route = hit
    if call.call_right < route.call_right:
        return reject(403, f"Call right too low for {prefix}", dialed, call.caller_number,
                      prefix)
    number = _transform(call.snap.dialplan, route.transition, dialed)
    return _ROUTES[RouteKind(route.route)](call, route, prefix, number)


def _transform(plan: DialPlan, transition: int, number: str) -> str:
    return plan.transitions[transition].apply(number) if transition else number


# -- no match: outside via the outgroup prefix, or local -----------------------------------

def _outside(call: _Call, number: str, prefix: str) -> Route:
    """Out on the caller's own external line, else on every line open to all users."""
    assert call.user is not None
    if not number:
        return reject(*INCOMPLETE, number, call.caller_number, prefix)
    own = call.user.external_line
    if own:
        return _leave(call, RouteKind.EXTERNAL_LINE, own, [own], number, prefix)
    return _leave(call, RouteKind.OUTGOING_GROUP, "", call.snap.lines, number, prefix)


def _unmatched(call: _Call, dialed: str) -> Route:
    out = call.snap.system.outgroup_prefix
    local = call.user is not None  # only local users call out this way
    if local and out and dialed.startswith(out):
        return _outside(call, dialed[len(out):], out)
    found = _local(call, dialed)
    if found is not None:
        return found
    if local and not out and call.snap.lines:
        return _outside(call, dialed, "")
    return reject(*NOT_FOUND, dialed, call.caller_number)


def route_call(snapshot: Snapshot, caller: str, dialed: str, *, local: bool = True) -> Route:
    """Where a call from ``caller`` (a user name, or an outside number) to ``dialed`` goes.

    ``local=False``: the call came in on a line or trunk, so ``caller`` is an outside
    number even when it looks like a user's (an outside ``100`` has no rights of 100's).
    """
    plan = snapshot.dialplan
    rule = longest_prefix(plan.analyze_caller, caller)
    caller_number = _transform(plan, rule[1].transition, caller) if rule else caller
    user = snapshot.users.get(caller) if local else None
    call = _Call(snapshot, caller, user, caller_number)
    if not dialed:
        return reject(*INCOMPLETE, dialed, caller_number)
    if call.user is not None:
        feature = _feature(call, dialed)
        if feature is not None:
            return feature
    return _analyzed(call, dialed) or _unmatched(call, dialed)
