"""Call park: the park app holds its caller in a slot with music on hold.

A call reaches the app through the dial plan's ``call_park`` code: a phone
transfers its party to ``*70*nn`` (blind: the transferee becomes the app's
caller), or calls ``*70`` itself and then completes an attended transfer (the
transferee replaces the parker in this call). Without a slot the app takes the
first free one and says it ("parked at slot" + digits) before the music starts;
the parker hears it in the attended flow. ``*71*nn`` (pbx/pickup.py) takes the
call out of its slot. After ``call_park.park_timer`` seconds the call rings back
the user who parked it (the transferor, else the caller); unanswered, it ends.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ...config.schema import Snapshot
from ...media.prompts import prompt_path
from ..call import Call
from ..moves import controller
from .session import App, AppSession

log = logging.getLogger(__name__)


class ParkLot:
    """Parked calls by slot (the controller's; one per server)."""

    def __init__(self) -> None:
        self.slots: dict[str, Call] = {}

    def free_slot(self, first: int, last: int) -> str | None:
        return next((str(n) for n in range(first, last + 1) if str(n) not in self.slots), None)

    def can_park(self, slot: str, first: int, last: int) -> bool:
        """Is there room: ``slot`` free, or any slot free when ``slot`` is ""?"""
        return slot not in self.slots if slot else self.free_slot(first, last) is not None

    def park(self, call: Call, slot: str) -> bool:
        if slot in self.slots:
            return False
        self.slots[slot] = call
        call.parked = slot
        return True

    def get(self, slot: str) -> Call | None:
        return self.slots.get(str(int(slot))) if slot.isdigit() else None

    def remove(self, call: Call) -> None:
        if self.slots.get(call.parked) is call:
            del self.slots[call.parked]
        call.parked = ""


def park(lot: ParkLot, snapshot: Callable[[], Snapshot]) -> App:
    """The app, with services.yaml's call_park (slots, park_timer) from ``snapshot()``."""
    async def run(session: AppSession) -> None:
        call = session.call
        cp = snapshot().services.call_park
        first, last, timer = cp.first_slot, cp.last_slot, cp.park_timer
        slot = str(int(session.argument)) if session.argument else lot.free_slot(first, last)
        if slot is None or not lot.park(call, slot):
            log.info("call %s: park slot %s is taken", call.key, slot or "(none free)")
            await session.confirmed()
            await session.play("busy")
            session.hangup("park slot taken")
            return
        call.history.append(f"parked in slot {slot}")
        controller(call).call_state_changed(call, call.state, call.state)  # shows the slot
        try:
            await session.confirmed()
            if not session.argument:
                await session.play("parked_at_slot", *(f"digits/{d}" for d in slot))
            session.media.start_music("A", prompt_path(session.language, "hold_music"))
            party, start = call.a, trio.current_time()
            while True:  # a transferee that replaced the parker waits a park_timer of its own
                await trio.sleep_until(start + timer)
                if call.a is party:
                    break
                party, start = call.a, call.a.placed
            parker = call.transferred_by or call.caller
            log.info("call %s: parked %ds in slot %s, ringing back %s", call.key, timer, slot,
                     parker)
            lot.remove(call)
            call.history.append(f"park timer: ringing back {parker}")
            session.hand_on(parker)
        finally:
            lot.remove(call)
    return run
