"""Follow-me (manual 3.4): a user's calls ring destinations A, B and C too.

Strategy 0 rings them with the user at once; strategy 2 adds one more every
``interval`` seconds while the earlier ones keep ringing; strategy 1 rings the
user alone, then each destination in turn when the one before failed. A
destination is a number dialled by the user: another user's devices (not that
user's services: a colleague's voicemail must not take this user's call), or
an outside number through this user's lines.
"""
from __future__ import annotations

from ..dialplan import EXIT_KINDS, RouteKind, route_call
from .plan import Ctx, Kind, Next, Outcome, Plan, Target

ALL_AT_ONCE, IN_TURN, STAGGERED = 0, 1, 2


def destinations(ctx: Ctx, user: str) -> list[tuple[str, Target]]:
    """(letter, target) of each destination set, in order; unroutable ones left out."""
    dest = ctx.snap.users[user].follow_me.destinations
    out = []
    for letter in ("a", "b", "c"):
        num = getattr(dest, letter)
        if not num:
            continue
        route = route_call(ctx.snap, user, num)
        if route.kind is RouteKind.LOCAL_USER:
            if route.target != user and route.target not in ctx.chain:
                out.append((letter, Target(Kind.USER, route.target)))
        elif route.kind in EXIT_KINDS:
            out.append((letter, Target(Kind.NUMBER, route.number, route=route)))
    return out


def with_user(ctx: Ctx, user: str) -> list[Target]:
    """Destinations that ring in the user's own step (strategies 0 and 2)."""
    fm = ctx.snap.users[user].follow_me
    if fm.strategy == IN_TURN:
        return []
    found = [t for _, t in destinations(ctx, user)]
    if fm.strategy == STAGGERED:
        return [Target(t.kind, t.name, fm.interval * (i + 1), t.route)
                for i, t in enumerate(found)]
    return found


def in_turn(ctx: Ctx, user: str, timeout: float, then: Next) -> Next:
    """Strategy 1: after the user's step, each destination alone; ``then`` after the
    last. Other strategies go straight to ``then``."""
    if ctx.snap.users[user].follow_me.strategy != IN_TURN:
        return then
    chain = then
    for letter, target in reversed(destinations(ctx, user)):
        chain = _step(ctx, target, timeout, f"follow_me {user} {letter}", chain)
    return chain


def _step(ctx: Ctx, target: Target, timeout: float, label: str, then: Next) -> Next:
    def next_(outcome: Outcome) -> Plan:
        return ctx.step((target,), timeout, label, then)
    return next_
