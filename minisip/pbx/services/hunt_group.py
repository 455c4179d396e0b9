"""Hunting groups: a pilot number whose calls try one member at a time.

Linear groups always start with the first member, circular ones after the
member tried last time (live state the PBX keeps). Each member rings
``ring_time`` seconds; members offline or busy are skipped, and one that is
busy, does not answer or fails passes the call to the next. When every member
was tried the caller hears busy if any was busy, else no answer.
"""
from __future__ import annotations

from .plan import Ctx, End, Kind, Outcome, Plan, Target


def plan(ctx: Ctx, name: str, label: str) -> Plan:
    group = ctx.snap.services.hunt_groups[name]
    n = len(group.members)
    start = ctx.live.hunt_start(name) % n if group.strategy == "circular" else 0
    order = [(start + i) % n for i in range(n)]
    return _member(ctx, name, order, False, label)


def _member(ctx: Ctx, name: str, order: list[int], busy_seen: bool, label: str) -> Plan:
    group = ctx.snap.services.hunt_groups[name]
    live = ctx.live
    for pos, index in enumerate(order):
        user = group.members[index]
        if user not in ctx.snap.users or not live.online(user):
            continue
        if live.busy(user):
            busy_seen = True
            continue
        live.hunt_tried(name, index)
        rest = order[pos + 1:]

        def next_(outcome: Outcome, rest: list[int] = rest, seen: bool = busy_seen) -> Plan:
            return _member(ctx, name, rest, seen or outcome is Outcome.BUSY, label)
        return ctx.step((Target(Kind.USER, user),), float(group.ring_time),
                        f"{label} {user}", next_)
    if busy_seen:
        return End(486, "Busy Here", "busy")
    return End(480, "No Answer", "no answer")
