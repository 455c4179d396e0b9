"""Ringing groups (manual 3.5): users with the same ringing_group_id ring together.

A direct call to a member rings the whole group unless the member has
``suppress_ring_group`` or the caller is a member too; the pilot number of
services.yaml ``ring_groups`` rings every member. The first to answer takes
the call. Members that are offline or busy are left out.
"""
from __future__ import annotations

from .plan import Ctx, End, Kind, Plan, Target, finish


def members(ctx: Ctx, group: int, but: str = "") -> list[Target]:
    live = ctx.live
    return [Target(Kind.USER, name) for name, u in ctx.snap.users.items()
            if u.ringing_group_id == group and name != but and name not in ctx.chain
            and live.online(name) and not live.busy(name)]


def with_user(ctx: Ctx, user: str) -> list[Target]:
    """The other members who ring on a direct call to ``user``."""
    u = ctx.snap.users[user]
    group = u.ringing_group_id
    caller = ctx.caller_user
    if not group or u.suppress_ring_group or (caller is not None
                                              and caller.ringing_group_id == group):
        return []
    return members(ctx, group, but=user)


def plan(ctx: Ctx, group: int, label: str) -> Plan:
    """A call to the group's pilot number."""
    targets = members(ctx, group)
    if not targets:
        busy = any(u.ringing_group_id == group and ctx.live.busy(n)
                   for n, u in ctx.snap.users.items())
        return End(486, "Busy Here", "busy") if busy else End(480, "No group member online",
                                                              "unavailable")
    cfg = ctx.snap.services.ring_groups.get(group)
    timeout = (cfg.no_answer_time if cfg is not None else 0) or ctx.snap.system.no_answer_time
    return ctx.step(targets, float(timeout), label, finish)
