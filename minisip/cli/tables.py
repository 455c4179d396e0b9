"""``minisip user|line|trunk add/list/show/set/remove``: one factory, three tables.

Edits go to the YAML files round trip (comments and order kept) and are written
atomically; the running server picks them up through its watcher. ``list``
adds live state from the server when one runs, and shows the config alone
when none does.

The options and the help of ``add`` and ``set`` are generated from the entity's
schema (config/schema.py): one ``--key`` option per top-level value with its
doc and default, ``key=value`` items for every key (nested ones dotted), and
examples from the schema's ``example`` values. So a line offers no user keys,
and a trunk, which has no password, offers no ``--password``.
"""
# No `from __future__ import annotations`: the commands' annotations refer to
# names local to make_table_app, and Typer must read them as objects.
import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..config.schema import (
    FILES, LinesFile, ListC, NestedC, SeqC, TableC, TrunksFile, UsersFile, specs, walk,
)
from .common import Target, emit_json, fail, request, table, target, write, yaml_text

ConfigDir = Annotated[Optional[Path], typer.Option(
    "--config-dir", help="Directory of the YAML configuration [default: configs].")]
DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Directory of live state. Default: system.yaml's data_dir.")]
# Edits touch only the YAML files; they take --data-dir too, so that every command
# accepts the same global options in either place.
EditDataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Accepted like every command's; edits need only the YAML files.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _entry_cls(file_cls: type, key: str) -> type:
    check = specs(file_cls)[key].check
    assert isinstance(check, TableC)
    return check.cls


def _shell_word(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f'"{text}"' if not text or any(c in text for c in " \"'$*?#;&|") else text


def examples(cls: type, limit: int = 3) -> str:
    """``key=value`` examples from the schema's ``example`` values (password aside:
    it has its option), for the help of add and set."""
    shown = [f"{path}={_shell_word(spec.example)}" for path, spec in walk(cls)
             if spec.example is not None and path != "password"]
    return " ".join(shown[:limit])


def _value_options(cls: type) -> list[inspect.Parameter]:
    """One ``--key`` option per top-level value of the entity (nested ones are items)."""
    params = []
    for name, spec in specs(cls).items():
        if isinstance(spec.check, (NestedC, TableC, ListC)):
            continue
        required = spec.default is dataclasses.MISSING
        default = "required" if required else f"default {_shell_word(_yaml(spec.default))}"
        what = spec.check.what
        if isinstance(spec.check, SeqC):
            what = f"comma-separated, each {spec.check.item.what}"
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
            default=typer.Option(None, "--" + name.replace("_", "-"), metavar="VALUE",
                                 help=f"{spec.doc} ({what}; {default}).")))
    return params


def _yaml(value: Any) -> Any:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def _with_options(fn: Callable[..., None], extra: list[inspect.Parameter]) -> Callable[..., None]:
    """``fn`` with the generated options added to its signature (Typer reads it)."""
    sig = inspect.signature(fn)
    # The generated options replace **values; Typer passes them by name into it.
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    fn.__annotations__ = {**{p.name: p.annotation for p in params + extra},
                          "return": sig.return_annotation}
    return fn


def _parse_items(tbl: Any, items: list[str] | None, options: dict[str, str | None]
                 ) -> dict[str, Any]:
    """key=value words and --key options, typed by the schema (``number=0086`` stays
    text); an option wins over an item for the same key."""
    raw: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{item!r}: expected key=value (e.g. "
                 f"{examples(_entry_cls(tbl.file_cls, tbl.key), 1)})")
        raw[key.strip()] = value
    raw.update({k: v for k, v in options.items() if v is not None})
    return _edit(tbl.parse_items, raw) if raw else {}


def _edit(fn: Callable[..., Any], *args: Any, **fields: Any) -> Any:
    from ..config.loader import ConfigError
    from ..config.store import StoreError

    try:
        return fn(*args, **fields)
    except ConfigError as exc:
        fail("; ".join(str(exc).splitlines()))
    except StoreError as exc:
        fail(str(exc))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def make_table_app(kind: str, store_name: str, file_cls: type, key: str,
                   summary: Callable[[str, Any], dict[str, Any]],
                   live: Callable[[Target, list[dict[str, Any]], str | None], None] | None = None
                   ) -> typer.Typer:
    """A Typer app with add/list/show/set/remove for one configuration table
    (``store_name``: its Table in config/store.py, imported when a command runs, so
    that help and other commands do not load ruamel)."""
    cls = _entry_cls(file_cls, key)
    file = next(n for n, c in FILES.items() if c is file_cls)
    app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help=f"Manage {kind}s ({file}).")

    def table_of() -> Any:
        from ..config import store
        return getattr(store, store_name)

    options = _value_options(cls)
    names = [p.name for p in options]
    required = [n for n, s in specs(cls).items() if s.default is dataclasses.MISSING]
    items_help = (f"Items as key=value for any key, nested ones dotted, e.g. "
                  f"{examples(cls)} (key= alone restores the default).")
    Items = Annotated[Optional[list[str]], typer.Argument(help=items_help, show_default=False)]

    def add(ctx: typer.Context, name: str, items: Items = None,
            config_dir: ConfigDir = None, data_dir: EditDataDir = None,
            **values: str | None) -> None:
        tbl = table_of()
        fields = _parse_items(tbl, items, values)
        _edit(tbl.add, target(ctx, config_dir, None).config_dir, name, **fields)
        write(f"{kind} {name} added")

    a = "an" if kind[0] in "aeio" else "a"  # an external line, a user
    add.__doc__ = (f"Add {a} {kind}" + (f" (required: {', '.join(required)})" if required else "")
                   + f". Example: minisip {key[:-1]} add NAME "
                   + " ".join(f"--{n.replace('_', '-')} {_shell_word(s.example)}"
                              for n, s in specs(cls).items() if s.example is not None
                              and n in required + ["password"]) + ".")
    app.command("add")(_with_options(add, options))

    def set_(ctx: typer.Context, name: str, items: Items = None,
             config_dir: ConfigDir = None, data_dir: EditDataDir = None,
            **values: str | None) -> None:
        tbl = table_of()
        fields = _parse_items(tbl, items, values)
        if not fields:
            fail(f"nothing to set: give key=value items or options, e.g. {examples(cls, 1)}")
        _edit(tbl.set, target(ctx, config_dir, None).config_dir, name, **fields)
        write(f"{kind} {name} changed")

    set_.__doc__ = f"Change items of {a} {kind}."
    app.command("set")(_with_options(set_, options))

    @app.command("remove")
    def remove(ctx: typer.Context, name: str, config_dir: ConfigDir = None,
               data_dir: EditDataDir = None) -> None:
        """Remove one entry."""
        _edit(table_of().remove, target(ctx, config_dir, None).config_dir, name)
        write(f"{kind} {name} removed")

    @app.command("show")
    def show(ctx: typer.Context, name: str, config_dir: ConfigDir = None,
             data_dir: DataDir = None, json: Json = False) -> None:
        """Every item of one entry, defaults filled in (the password is not shown)."""
        t = target(ctx, config_dir, data_dir)
        entry = _plain(_edit(table_of().get, t.config_dir, name))
        entry.pop("password", None)
        rows = [{"name": name, **entry}]
        if live is not None:
            live(t, rows, name)
        if json:
            emit_json(rows[0])
            return
        write("\n".join(yaml_text(rows[0])))

    @app.command("list")
    def list_(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
              json: Json = False) -> None:
        """All entries, with live state when the server runs."""
        t = target(ctx, config_dir, data_dir)
        entries = _edit(table_of().get_all, t.config_dir)
        rows = [{"name": n, **summary(n, e)} for n, e in entries.items()]
        if live is not None:
            live(t, rows, None)
        if json:
            emit_json(rows)
            return
        cols = list(rows[0]) if rows else ["name"]
        table(f"{kind}s", cols, [[r.get(c) for c in cols] for r in rows])

    assert len(set(names)) == len(names)
    return app


def _user_summary(name: str, u: Any) -> dict[str, Any]:
    return {"display_name": u.display_name, "state": "offline", "contacts": []}


def _user_live(t: Target, rows: list[dict[str, Any]], user: str | None) -> None:
    """States from the server (it lists the users that are not offline)."""
    states = request(t, "user_states", {"user": user} if user else {}, required=False)
    if states is None:
        for r in rows:
            r["state"] = "(no server)"
        return
    live = {s["user"]: s for s in states}
    for r in rows:
        s = live.get(r["name"])
        r["state"] = s["state"] if s else "offline"
        r["contacts"] = s["contacts"] if s else []


_LINE_LIVE = ("state", "reason", "expires", "registrations", "calls", "outgoing")


def _line_live(t: Target, rows: list[dict[str, Any]], line: str | None) -> None:
    """State (online/offline and why), registration expiry and calls, from the server."""
    states = request(t, "line_states", required=False)
    by_name = {s["line"]: s for s in states or ()}
    for r in rows:
        live = by_name.get(r["name"])
        if live is None:
            r["state"] = "(no server)" if states is None else "unknown"
            continue
        r.update({k: live[k] for k in _LINE_LIVE})


user_app = make_table_app("user", "USERS", UsersFile, "users", _user_summary, _user_live)
line_app = make_table_app("external line", "LINES", LinesFile, "lines", lambda n, line: {
    "type": line.type, "account": line.account, "server": line.server, "port": line.port,
    "outgoing_group_id": line.outgoing_group_id}, _line_live)
trunk_app = make_table_app("SIP trunk", "TRUNKS", TrunksFile, "trunks", lambda n, t: {
    k: getattr(t, k) for k in ("address", "port", "transport", "outgoing_group_id")})
