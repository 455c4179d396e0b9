"""Apps: minisip as a party of a call (feature-code replies; voicemail, the
attendant and park come with their issues). Each app is an async function of
an :class:`~.session.AppSession`; :func:`starters` gives the call controller
one starter per app name that a plan's APP target may name."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .feature_code import feature_code
from .session import starter


def starters(config_dir: Path, spawn: Callable[..., Any],
             language: Callable[[], str]) -> dict[str, Any]:
    return {"feature_code": starter(feature_code(config_dir), spawn, language)}
