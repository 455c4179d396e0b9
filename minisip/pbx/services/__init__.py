"""Services: from a dial plan Route to the Plan the call executes.

``plan_route`` is the one entry: the route kind (and a service's name) picks
the module that plans it. Each module is pure (see plan.py); the call
controller gives them a :class:`~.plan.Ctx` with the snapshot and live state.
"""
from __future__ import annotations

from collections.abc import Callable

from ..dialplan import EXIT_KINDS, Route, RouteKind
from . import feature_codes, hunt_group, local_user, ring_group
from .plan import Ctx, End, Kind, Outcome, Plan, Step, Target, finish

#: feature codes whose caller joins a live call (pbx/pickup.py finds it):
#: field name -> (the CALL target's name, the step's label)
JOINS: dict[str, tuple[str, str]] = {
    "directed_pickup": ("pickup", "pickup {}"),
    "group_pickup": ("pickup", "group pickup"),
    "call_retrieve": ("retrieve", "retrieve {}"),
    "one_number_join": ("join", "join"),
    "break_in": ("break_in", "break-in {}"),
}


def _app(ctx: Ctx, name: str, argument: str, label: str) -> Step:
    return ctx.step((Target(Kind.APP, name, argument=argument),), 0.0, label, finish)


def _voicemail(ctx: Ctx, user: str, label: str) -> Plan:
    """``voicemail``: the caller listens to its own messages (a user's own phone is
    authenticated already); ``voicemail:USER``: the caller leaves USER a message."""
    if not user:
        if ctx.caller_user is None:
            return End(403, "Voicemail from your own phone only", "forbidden")
        return _app(ctx, "voicemail", "", label or "voicemail")
    mailbox = ctx.snap.users.get(user)
    if mailbox is None or not mailbox.voicemail:
        return End(404, f"No mailbox {user}", "not found")
    return _app(ctx, "voicemail", user, label or f"voicemail {user}")


def join(ctx: Ctx, name: str, argument: str, label: str) -> Step:
    """A step whose caller joins a live call (nothing rings)."""
    return ctx.step((Target(Kind.CALL, name, argument=argument),), 0.0, label, finish)


def _service(ctx: Ctx, route: Route, label: str) -> Plan:
    name, arg = route.target, route.argument
    if name == "hunt_group":
        return hunt_group.plan(ctx, arg, label or f"hunt_group {arg}")
    if name == "ring_group":
        return ring_group.plan(ctx, int(arg), label or f"ring_group {arg}")
    if name in feature_codes.SETTINGS:
        return _app(ctx, "feature_code", f"{name}={arg}", label or f"feature {name}")
    if name == "voicemail":
        return _voicemail(ctx, arg, label)
    if name == "auto_attendant":
        return _app(ctx, "auto_attendant", arg, label or "auto_attendant")
    if name == "call_park":
        return _app(ctx, "park", arg, label or f"park {arg}".rstrip())
    if name == "break_in":
        return local_user.break_in(ctx, arg, label)
    if name in JOINS:
        target, text = JOINS[name]
        return join(ctx, target, arg, label or text.format(arg))
    return End(404, "Number not found", "not found")


def relay_failure(outcome: Outcome) -> End:
    """An outside number that did not answer: the caller hears the last line's answer as
    it was (the far end's 486 or 404, or why no line could take the call)."""
    return finish(outcome) if outcome is Outcome.NO_ANSWER else End(0, "", outcome.value)


def _outside(ctx: Ctx, route: Route, label: str) -> Plan:
    # No step timeout: each line or trunk tried rings for its own no_answer_time.
    target = Target(Kind.NUMBER, route.number, route=route)
    return ctx.step((target,), 0.0, label or f"{route.kind.value} {route.target}".rstrip(),
                    relay_failure)


_PLANNERS: dict[RouteKind, Callable[[Ctx, Route, str], Plan]] = {
    RouteKind.LOCAL_USER: lambda ctx, route, label: local_user.plan(ctx, route.target, label),
    RouteKind.SERVICE: _service,
    RouteKind.REJECT: lambda ctx, route, label: End(route.status, route.reason, "rejected"),
    **{kind: _outside for kind in EXIT_KINDS},
}


def plan_route(ctx: Ctx, route: Route, label: str = "") -> Plan:
    """The plan of a call that the dial plan routed to ``route``."""
    return _PLANNERS[route.kind](ctx, route, label)
