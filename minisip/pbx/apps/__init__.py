"""Apps: minisip as a party of a call: feature-code replies, voicemail, the
automatic attendant, call park. Each app is an async function
of an :class:`~.session.AppSession`; :func:`starters` gives the call controller
one starter per app name that a plan's APP target may name."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...config.schema import Snapshot
from .attendant import attendant
from .feature_code import feature_code
from .park import ParkLot, park
from .session import starter
from .voicemail import VoicemailService


def starters(config_dir: Path, language: Callable[[], str], *,
             snapshot: Callable[[], Snapshot], voicemail: VoicemailService,
             parking: ParkLot | None = None) -> dict[str, Any]:
    out = {"feature_code": starter(feature_code(config_dir), language),
           "voicemail": starter(voicemail, language),
           "auto_attendant": starter(attendant(snapshot), language)}
    if parking is not None:
        start, lot = starter(park(parking, snapshot), language), parking

        def start_park(call: Any, target: Any) -> bool:  # a taken slot refuses (503)
            slot = str(int(target.argument)) if target.argument else ""
            cp = snapshot().services.call_park
            return lot.can_park(slot, cp.first_slot, cp.last_slot) and start(call, target)
        out["park"] = start_park
    return out
