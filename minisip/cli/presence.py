"""``minisip presence``: every user's state and who watches whom."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import emit_json, request, table, target
from .tables import ConfigDir, DataDir, Json


def _watch(entries: list[dict[str, str]]) -> str:
    by_user: dict[str, list[str]] = {}
    for e in entries:
        by_user.setdefault(e["user"], []).append(e["event"])
    return ", ".join(f"{u} ({'/'.join(sorted(events))})" for u, events in by_user.items())


def presence(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
             user: Annotated[Optional[str], typer.Option("--user", help="Only this user.")]
             = None, json: Json = False) -> None:
    """Users' presence and calls, and who watches whom (busy lamps, presence, MWI)."""
    rows = request(target(ctx, config_dir, data_dir), "presence", {"user": user})
    if json:
        emit_json(rows)
        return
    table("users", ["user", "state", "presence", "note", "watched by", "watches"],
          [[u["user"], u["state"], u["presence"], u["note"], _watch(u["watched_by"]),
            _watch(u["watches"])] for u in rows])
