"""The ``minisip`` command. Thin: parse arguments, call into the rest.

Heavy imports (trio, the server, rich tables) happen inside the commands that
need them, so ``minisip --help`` and ``minisip user list`` start fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from .common import Target

from .tables import line_app, trunk_app, user_app

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="minisip: an open-source SIP PBX.")
app.add_typer(user_app, name="user")
app.add_typer(line_app, name="line")
app.add_typer(trunk_app, name="trunk")

ConfigDir = Annotated[Path, typer.Option("--config-dir", envvar="MINISIP_CONFIG_DIR",
                                         help="Directory of the YAML configuration.")]
DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar="MINISIP_DATA_DIR",
    help="Directory of live state (registrations, CDRs, TLS key, control socket). "
         "Default: system.yaml's data_dir.")]


@app.command()
def serve(
    config_dir: ConfigDir = Path("configs"),
    data_dir: DataDir = None,
    host: Annotated[Optional[list[str]], typer.Option(
        "--host", help="Listen address (repeatable). Default: system.yaml's listen.")] = None,
    udp_port: Annotated[Optional[int], typer.Option(help="UDP port (0 = off).")] = None,
    tcp_port: Annotated[Optional[int], typer.Option(help="TCP port (0 = off).")] = None,
    tls_port: Annotated[Optional[int], typer.Option(help="TLS port (0 = off).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the PBX in the foreground until SIGINT/SIGTERM."""
    from .serve import run_server

    raise typer.Exit(run_server(config_dir, data_dir, host, udp_port, tcp_port, tls_port,
                                log_level))


# -- the running server ------------------------------------------------------------
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _target(config_dir: Path, data_dir: Path | None) -> "Target":
    from .common import Target
    return Target(config_dir, data_dir)


@app.command()
def status(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
           json: Json = False) -> None:
    """Uptime, listeners, configuration state and counters of the running server."""
    from .common import emit_json, request

    st = request(_target(config_dir, data_dir), "status")
    if json:
        emit_json(st)
        return
    from rich.console import Console
    c = Console(highlight=False)
    c.print(f"[bold]minisip[/bold] up {st['uptime']:.0f} s")
    for name in st["listeners"]:
        c.print(f"  listening  {name}")
    if st.get("tls_fingerprint"):
        c.print(f"  TLS        SHA-256 {st['tls_fingerprint']}")
    cfg = st["config"]
    c.print(f"  config     {cfg['dir']} (generation {cfg['generation']})")
    if cfg.get("error"):
        c.print(f"[red]  last reload failed, still serving the previous configuration:[/red]"
                f"\n{cfg['error']}")
    c.print(f"  users      {st['users']} configured, {st['online']} online, "
            f"{st['bindings']} registered devices")
    c.print(f"  calls      {st['calls']} in progress, {st['calls_completed']} completed")
    c.print("  counters   " + ", ".join(f"{k} {v}" for k, v in st["counters"].items()))


@app.command()
def reload(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None) -> None:
    """Reload the YAML configuration now (the server also watches the files)."""
    from .common import fail, request

    r = request(_target(config_dir, data_dir), "reload")
    if not r["ok"]:
        fail(f"configuration not reloaded, still serving the previous one:\n{r['error']}")
    typer.echo(f"reloaded (generation {r['generation']})")


@app.command()
def registrations(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
                  user: Annotated[Optional[str], typer.Option(help="Only this user.")] = None,
                  json: Json = False) -> None:
    """Registered devices: user, contact, expiry, source address."""
    from .common import emit_json, request, table

    regs = request(_target(config_dir, data_dir), "registrations", {"user": user})
    if json:
        emit_json(regs)
        return
    table("registrations", ["user", "contact", "expires", "source", "user agent"],
          [[r["user"], r["contact"], r["expires"], r["source"], r["user_agent"]] for r in regs])


@app.command()
def calls(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
          json: Json = False) -> None:
    """Calls in progress."""
    from .common import emit_json, request, table

    live = request(_target(config_dir, data_dir), "calls")
    if json:
        emit_json(live)
        return
    table("calls", ["caller", "callee", "dialed", "state", "duration", "ringing", "step",
                    "call id"],
          [[c["caller"], c["callee"], c["dialed"], c["state"], c["duration"],
            " ".join(c.get("ringing") or ()), c.get("step") or c["route"], c["call_id"]]
           for c in live])


@app.command()
def cdr(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
        user: Annotated[Optional[str], typer.Option(help="Calls of this user.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many records.")] = 50,
        json: Json = False) -> None:
    """Call detail records, newest first (read from the data dir; no server needed)."""
    import time as _time

    from ..pbx.cdr import CdrStore
    from .common import Target, emit_json, fail, table

    data = Target(config_dir, data_dir).data_dir
    if not (data / "cdr.db").exists():
        fail(f"no CDRs in {data}")
    store = CdrStore(data)
    try:
        rows = store.query(user=user, limit=limit)
    finally:
        store.close()
    if json:
        emit_json(rows)
        return
    fmt = lambda t: _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t)) if t else ""  # noqa: E731
    table("CDR", ["kind", "setup", "caller", "dialed", "final", "duration", "status", "cause",
                  "released by", "steps"],
          [[r["kind"], fmt(r["setup_time"]), r["caller"], r["dialed"], r["final"],
            r["duration"], r["status"], r["cause"], r["released_by"], r.get("steps") or ""]
           for r in rows])


@app.command()
def trace(config_dir: ConfigDir = Path("configs"), data_dir: DataDir = None,
          user: Annotated[Optional[str], typer.Option(help="Only messages of this user.")] = None,
          call_id: Annotated[Optional[str], typer.Option(help="Only this Call-ID.")] = None,
          count: Annotated[int, typer.Option(help="Stop after this many (0 = forever).")] = 0,
          json: Json = False) -> None:
    """Live SIP messages, like a small sngrep. Ctrl-C stops."""
    from .trace import run_trace

    run_trace(_target(config_dir, data_dir), user, call_id, count, json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
