"""The automatic attendant: "please enter the extension number", then connect.

The caller keys a number while the welcome plays or after it; ``#`` ends it,
and so does ``digit_timeout`` seconds without a key. What the number means is
decided by :func:`destination`: a ``menu`` entry of services.yaml first (the
whole number must match), then ``0`` for the ``operator``, then the number as
the caller would dial it (the dial plan decides: a number it refuses is
invalid). The caller is handed on through the plan of that number, so the
services of whoever it reaches apply (forwarding, follow-me, voicemail). When
the number is not reached (busy, no answer, unreachable and no voicemail) the
caller comes back, hears why, and is welcomed again.

A wrong number gets the "invalid number" prompt; a silence is no number.
After ``max_attempts`` of either the caller goes to the operator, or hears
goodbye when there is none.
"""
from __future__ import annotations

from collections.abc import Callable

from ...config.schema import Snapshot
from ..dialplan import RouteKind, route_call
from .session import App, AppSession

#: what the caller hears when the number handed on was not reached, by the End's cause
SORRY = {"busy": "busy", "no answer": "no_answer"}


def destination(snap: Snapshot, caller: str, number: str) -> str | None:
    """Where the keyed ``number`` leads, or None when it leads nowhere (pure)."""
    cfg = snap.services.auto_attendant
    entry = cfg.menu.get(number)
    if entry is not None:
        return entry.number
    if number == "0" and cfg.operator:
        return cfg.operator
    if not number or route_call(snap, caller, number).kind is RouteKind.REJECT:
        return None
    return number


def attendant(snapshot: Callable[[], Snapshot]) -> App:
    async def goodbye(session: AppSession) -> None:
        await session.play("goodbye")
        session.hangup()

    async def welcome(session: AppSession) -> None:
        await session.confirmed()
        if session.returned is not None:  # back from a number nobody took
            await session.play(SORRY.get(session.returned.cause, "not_available"))
        cfg = snapshot().services.auto_attendant
        for _ in range(cfg.max_attempts):
            number = await session.collect("welcome", timeout=cfg.digit_timeout)
            target = destination(snapshot(), session.call.caller, number)
            if target is not None:
                await session.play("connecting")
                session.hand_on(target, then=welcome)
                return
            if number:
                await session.play("invalid_number")
        if cfg.operator:
            await session.play("connecting")
            session.hand_on(cfg.operator, then=goodbye)
        else:
            await goodbye(session)
    return welcome
