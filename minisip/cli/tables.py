"""``minisip user|line|trunk add/list/show/set/remove``: one factory, three tables.

Edits go to the YAML files round trip (comments and order kept) and are written
atomically; the running server picks them up through its watcher. ``list``
adds live state from the server when one runs, and shows the config alone
when none does.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .common import Target, emit_json, fail, request, table

ConfigDir = Annotated[Path, typer.Option("--config-dir", envvar="MINISIP_CONFIG_DIR",
                                         help="Directory of the YAML configuration.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", envvar="MINISIP_DATA_DIR",
                                                 help="Directory of live state.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Items = Annotated[Optional[list[str]], typer.Argument(
    help="Items as key=value, e.g. display_name=Alice max_duration=600 "
         "forward_busy.number=200 (key= alone restores the default).")]


def _parse_items(tbl: Any, items: list[str] | None) -> dict[str, Any]:
    """key=value words typed by the schema (``number=0086`` stays text)."""
    raw: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{item!r}: expected key=value")
        raw[key.strip()] = value
    return _edit(tbl.parse_items, raw) if raw else {}


def _edit(fn: Callable[..., Any], *args: Any, **fields: Any) -> Any:
    from ..config.loader import ConfigError
    from ..config.store import StoreError

    try:
        return fn(*args, **fields)
    except (ConfigError, StoreError) as exc:
        fail(str(exc))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def make_table_app(kind: str, store_table: str, summary: Callable[[str, Any], dict[str, Any]],
                   live: Callable[[Target, dict[str, Any]], None] | None = None) -> typer.Typer:
    """A Typer app with add/list/show/set/remove for one configuration table."""
    app = typer.Typer(no_args_is_help=True, help=f"Manage {kind}s ({store_table}).")

    def tbl() -> Any:
        from ..config import store
        return getattr(store, store_table)

    @app.command("add")
    def add(name: str, items: Items = None,
            password: Annotated[Optional[str], typer.Option(help="Password.")] = None,
            config_dir: ConfigDir = Path("configs")) -> None:
        """Add one entry."""
        fields = _parse_items(tbl(), items)
        if password is not None:
            fields["password"] = password
        _edit(tbl().add, config_dir, name, **fields)
        typer.echo(f"{kind} {name} added")

    @app.command("set")
    def set_(name: str, items: Items = None,
             password: Annotated[Optional[str], typer.Option(help="New password.")] = None,
             config_dir: ConfigDir = Path("configs")) -> None:
        """Change items of one entry."""
        fields = _parse_items(tbl(), items)
        if password is not None:
            fields["password"] = password
        if not fields:
            fail("nothing to set: give key=value items or --password")
        _edit(tbl().set, config_dir, name, **fields)
        typer.echo(f"{kind} {name} changed")

    @app.command("remove")
    def remove(name: str, config_dir: ConfigDir = Path("configs")) -> None:
        """Remove one entry."""
        _edit(tbl().remove, config_dir, name)
        typer.echo(f"{kind} {name} removed")

    @app.command("show")
    def show(name: str, config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
             json: Json = False) -> None:
        """Every item of one entry, defaults filled in."""
        entry = _plain(_edit(tbl().get, config_dir, name))
        entry.pop("password", None)
        rows = {"name": name, **entry}
        if live is not None:
            live(Target(config_dir, data_dir), rows)
        if json:
            emit_json(rows)
            return
        for key, value in rows.items():
            typer.echo(f"{key}: {value}")

    @app.command("list")
    def list_(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
              json: Json = False) -> None:
        """All entries, with live state when the server runs."""
        entries = _edit(tbl().get_all, config_dir)
        rows = [{"name": n, **summary(n, e)} for n, e in entries.items()]
        if live is not None:
            target = Target(config_dir, data_dir)
            for r in rows:
                r.setdefault("state", "")
            live(target, {"rows": rows})
        if json:
            emit_json(rows)
            return
        cols = list(rows[0]) if rows else ["name"]
        table(f"{kind}s", cols, [[r.get(c) for c in cols] for r in rows])

    return app


def _user_summary(name: str, u: Any) -> dict[str, Any]:
    return {"display_name": u.display_name, "state": "offline", "contacts": []}


def _user_live(target: Target, rows: dict[str, Any]) -> None:
    states = request(target, "user_states", required=False)
    if states is None:
        for r in rows.get("rows", [rows]):
            r["state"] = "(no server)"
        return
    regs = request(target, "registrations", {})
    contacts: dict[str, list[str]] = {}
    for reg in regs:
        contacts.setdefault(reg["user"], []).append(reg["contact"])
    for r in rows.get("rows", [rows]):
        r["state"] = states.get(r["name"], "offline")
        r["contacts"] = contacts.get(r["name"], [])


user_app = make_table_app("user", "USERS", _user_summary, _user_live)
line_app = make_table_app("external line", "LINES", lambda n, line: {
    "type": line.type, "account": line.account, "server": line.server, "port": line.port,
    "outgoing_group_id": line.outgoing_group_id})
trunk_app = make_table_app("SIP trunk", "TRUNKS", lambda n, t: {
    k: getattr(t, k) for k in ("address", "port", "outgoing_group_id") if hasattr(t, k)})
