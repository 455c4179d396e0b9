"""The feature codes that change a user's settings: store, confirm, hang up.

The change goes to users.yaml with the CLI's round-trip, atomic edit (in a
worker thread: it is file I/O), so ``minisip user show`` tells it and the
watcher reloads it; the caller hears "your setting has been saved", or
"invalid number" when the edit was refused.
"""
from __future__ import annotations

import logging
from pathlib import Path

import trio

from ...config.store import set_user
from ..services.feature_codes import change
from .session import App, AppSession

log = logging.getLogger(__name__)


def feature_code(config_dir: Path) -> App:
    async def run(session: AppSession) -> None:
        code, _, argument = session.argument.partition("=")
        user = session.call.caller
        try:
            await trio.to_thread.run_sync(lambda: set_user(config_dir, user,
                                                           **change(code, argument)))
            prompt = "setting_saved"
            log.info("user %s: %s set to %r from the phone", user, code, argument)
        except Exception as exc:  # a refused edit is the caller's answer, not a crash
            log.warning("user %s: %s=%r not stored: %s", user, code, argument, exc)
            prompt = "invalid_number"
        await session.confirmed()
        await session.play(prompt)
        session.hangup()
    return run
