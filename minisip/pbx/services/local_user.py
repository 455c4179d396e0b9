"""A call to a local user: the order in which the user's services apply.

0. auto_attendant: the user is an automatic attendant; the attendant app
   answers its calls (nothing rings; the attendant hands the caller on).
1. do_not_disturb: busy treatment at once.
2. forward_unconditional: the call goes on to that number.
3. The user is busy (at its call limit, or talking without call_waiting): an
   operator with operator_break_in breaks into its call (not into a user with
   operator_overstep); anyone else gets busy treatment.
4. Offline with forward_unreachable set: unreachable treatment.
5. Otherwise one step rings the user's devices (all, or the latest one without
   one_number_multi_devices), its ring group and its follow-me destinations
   (strategies 0 and 2) for the user's no-answer time; follow-me strategy 1
   rings each destination in turn after it. Nothing to ring: unreachable.

Treatment when nobody answered: the forwarding for that outcome (busy, no
answer, unreachable), else voicemail when the user has the right, else the
caller hears busy or no answer.
"""
from __future__ import annotations

from ...config.schema import User
from . import follow_me, forwarding, ring_group
from .plan import Ctx, End, Kind, Next, Outcome, Plan, Target, finish

#: outcomes that voicemail takes when no forwarding does
VOICEMAIL_ON = frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.UNREACHABLE})


def busy(u: User, active: int, talking: int) -> bool:
    """Is a user with ``active`` calls, ``talking`` of them answered, busy for a new one?
    max_concurrent_calls is the hard limit; below it, a user who is talking gets a second
    call offered (the phone shows it waiting) only with the call_waiting right."""
    return active >= u.max_concurrent_calls or (talking > 0 and not u.call_waiting)


def treatment(ctx: Ctx, user: str, outcome: Outcome) -> Plan:
    """What a call to ``user`` does after a step ended with ``outcome``."""
    fwd = forwarding.on_outcome(ctx, user, outcome)
    if fwd is not None:
        return fwd
    if outcome in VOICEMAIL_ON and ctx.snap.users[user].voicemail:
        return ctx.step((Target(Kind.APP, "voicemail", argument=user),), 0.0,
                        f"voicemail {user}", finish)
    return finish(outcome)


def break_in(ctx: Ctx, user: str, label: str = "",
             otherwise: Next = finish) -> Plan:
    """The operator joins ``user``'s call as a third party (pbx/pickup.py); a user with
    operator_overstep cannot be broken into. ``otherwise``: when there is no such call."""
    u = ctx.snap.users.get(user)
    if u is None:
        return End(404, "Number not found", "not found")
    if u.operator_overstep:
        return End(403, "Overstep protection", "overstep")
    return ctx.step((Target(Kind.CALL, "break_in", argument=user),), 0.0,
                    label or f"break-in {user}", otherwise)


def plan(ctx: Ctx, user: str, label: str = "") -> Plan:
    u = ctx.snap.users[user]
    label = label or user
    if u.auto_attendant:
        return ctx.step((Target(Kind.APP, "auto_attendant", argument=user),), 0.0,
                        f"auto_attendant {user}", finish)
    if u.do_not_disturb:
        return treatment(ctx, user, Outcome.BUSY)
    fwd = forwarding.forward(ctx, user, "forward_unconditional")
    if fwd is not None:
        return fwd
    if ctx.live.busy(user):
        caller = ctx.caller_user
        if caller is not None and caller.operator_break_in and not u.operator_overstep:
            return break_in(ctx, user, "", lambda _: treatment(ctx, user, Outcome.BUSY))
        return treatment(ctx, user, Outcome.BUSY)
    online = ctx.live.online(user)
    if not online and forwarding.number(ctx, user, "forward_unreachable"):
        return treatment(ctx, user, Outcome.UNREACHABLE)
    targets = [Target(Kind.USER, user, latest_only=not u.one_number_multi_devices)] \
        if online else []
    for t in [*ring_group.with_user(ctx, user), *follow_me.with_user(ctx, user)]:
        if all((t.kind, t.name) != (o.kind, o.name) for o in targets):
            targets.append(t)
    timeout = float(u.no_answer_time or ctx.snap.system.no_answer_time)

    def then(outcome: Outcome) -> Plan:
        return treatment(ctx, user, outcome)
    nxt = follow_me.in_turn(ctx, user, timeout, then)
    if not targets:
        return nxt(Outcome.UNREACHABLE)
    last_delay = max(t.delay for t in targets)
    return ctx.step(targets, timeout + last_delay, label, nxt)
