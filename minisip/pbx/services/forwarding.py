"""Call forwarding (manual 3.3): unconditional, busy, no answer, unreachable.

A forwarded call is planned anew for the number it goes to, dialled by the
forwarding user (its call right and external lines apply), so it gets the
services of the user it reaches. The chain carries the users it passed: it
never returns to one of them and stops after :data:`MAX_HOPS`; a forwarding
that would break either rule is not taken, and the call goes on as if it
were not set (the user rings, or the next treatment applies).
"""
from __future__ import annotations

import dataclasses

from ..dialplan import RouteKind, route_call
from .plan import Ctx, Outcome, Plan

MAX_HOPS = 5

#: the forwarding that applies when a user's step ended this way
ON_OUTCOME = {
    Outcome.BUSY: "forward_busy",
    Outcome.NO_ANSWER: "forward_no_answer",
    Outcome.UNREACHABLE: "forward_unreachable",
}


def number(ctx: Ctx, user: str, kind: str) -> str:
    """The number ``user`` forwards to for ``kind``: "" unless right and number are set."""
    fwd = getattr(ctx.snap.users[user], kind)
    return fwd.number if fwd.enabled else ""


def forward(ctx: Ctx, user: str, kind: str) -> Plan | None:
    """The plan of ``user``'s call forwarded by ``kind``, or None when it is not set
    or the loop guard refuses it."""
    target = number(ctx, user, kind)
    if not target or len(ctx.chain) >= MAX_HOPS:
        return None  # (before the import below: most users forward nothing)
    from . import plan_route  # the forwarded call is planned like a new one

    chain = (*ctx.chain, user)
    route = route_call(ctx.snap, user, target)
    if route.kind is RouteKind.REJECT or (route.kind is RouteKind.LOCAL_USER and (
            route.target in chain or route.target == ctx.caller)):
        return None
    return plan_route(dataclasses.replace(ctx, chain=chain, via=(*ctx.via, f"{kind} {user}")),
                      route)


def on_outcome(ctx: Ctx, user: str, outcome: Outcome) -> Plan | None:
    kind = ON_OUTCOME.get(outcome)
    return forward(ctx, user, kind) if kind is not None else None
