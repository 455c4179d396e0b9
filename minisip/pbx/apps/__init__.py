"""Apps: minisip as a party of a call: feature-code replies, voicemail, the
automatic attendant (park comes with its issue). Each app is an async function
of an :class:`~.session.AppSession`; :func:`starters` gives the call controller
one starter per app name that a plan's APP target may name."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...config.schema import Snapshot
from .attendant import attendant
from .feature_code import feature_code
from .session import starter
from .voicemail import VoicemailService


def starters(config_dir: Path, spawn: Callable[..., Any], language: Callable[[], str], *,
             snapshot: Callable[[], Snapshot], voicemail: VoicemailService) -> dict[str, Any]:
    return {"feature_code": starter(feature_code(config_dir), spawn, language),
            "voicemail": starter(voicemail, spawn, language),
            "auto_attendant": starter(attendant(snapshot), spawn, language)}
