"""The ``minisip`` command. Thin: parse arguments, call into the rest.

Heavy imports (trio, the server) happen inside the commands that need them, so
``minisip --help`` and ``minisip user list`` start fast. ``main`` runs the Typer
app without its standalone error handling: every error, usage errors included,
is one line on stderr and a non-zero exit status.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import DEFAULT_CONFIG_DIR, Target, emit_json, fail, one_line, request, table
from .common import target as _target
from .common import write
from .presence import presence
from .tables import line_app, trunk_app, user_app
from .voicemail import voicemail_app

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="minisip: an open-source SIP PBX. Global options stand before or "
                       "after the command: minisip --config-dir /etc/minisip user list")
app.add_typer(user_app, name="user")
app.add_typer(line_app, name="line")
app.add_typer(trunk_app, name="trunk")
app.add_typer(voicemail_app, name="voicemail")

# After a sub-command: no environment variable here, so MINISIP_CONFIG_DIR never
# overrides a --config-dir given before the sub-command (the callback reads it).
ConfigDir = Annotated[Optional[Path], typer.Option(
    "--config-dir", help="Directory of the YAML configuration [default: configs].")]
DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Directory of live state (registrations, CDRs, TLS key, control "
                       "socket). Default: system.yaml's data_dir, relative to the "
                       "configuration directory.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
UserFilter = Annotated[Optional[str], typer.Option("--user", help="Only this user.")]


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        write(f"minisip {__version__}")
        raise typer.Exit()


@app.callback()
def _globals(
    ctx: typer.Context,
    config_dir: Annotated[Path, typer.Option(
        "--config-dir", envvar="MINISIP_CONFIG_DIR",
        help="Directory of the YAML configuration.")] = DEFAULT_CONFIG_DIR,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", envvar="MINISIP_DATA_DIR",
        help="Directory of live state. Default: system.yaml's data_dir, relative to the "
             "configuration directory.")] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """minisip: an open-source SIP PBX."""
    ctx.obj = Target(config_dir, data_dir)


@app.command()
def serve(
    ctx: typer.Context,
    config_dir: ConfigDir = None,
    data_dir: DataDir = None,
    host: Annotated[Optional[list[str]], typer.Option(
        "--host", help="Listen address (repeatable). Default: system.yaml's listen.")] = None,
    udp_port: Annotated[Optional[int], typer.Option(help="UDP port (0 = off).")] = None,
    tcp_port: Annotated[Optional[int], typer.Option(help="TCP port (0 = off).")] = None,
    tls_port: Annotated[Optional[int], typer.Option(help="TLS port (0 = off).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    log_format: Annotated[str, typer.Option(
        help="text (with timestamps), journal (syslog priority prefixes for journald), or "
             "auto: journal when stderr is the systemd journal.")] = "auto",
) -> None:
    """Run the PBX in the foreground until SIGINT/SIGTERM (SIGHUP reloads)."""
    from .serve import run_server

    t = _target(ctx, config_dir, data_dir)
    raise typer.Exit(run_server(t.config_dir, t.data_dir_option, host, udp_port, tcp_port,
                                tls_port, log_level, log_format))


# -- the running server ------------------------------------------------------------

@app.command()
def status(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
           json: Json = False) -> None:
    """Uptime, listeners, configuration state and counters of the running server."""
    import time as _time

    st = request(_target(ctx, config_dir, data_dir), "status")
    if json:
        emit_json(st)
        return
    cfg = st["config"]
    lines = [f"minisip {st['version']} up {st['uptime']:.0f} s"]
    lines += [f"  listening  {name}" for name in st["listeners"]]
    if st.get("tls_fingerprint"):
        lines.append(f"  TLS        SHA-256 {st['tls_fingerprint']}")
    lines.append(f"  config     {cfg['dir']} (generation {cfg['generation']})")
    for key, v in (cfg.get("restart_pending") or {}).items():
        lines.append(f"  restart    system.yaml {key}: {v['running']} -> {v['configured']} "
                     f"takes effect after restart")
    if cfg.get("error"):
        lines.append("  config     last reload failed, still serving the previous "
                     "configuration: " + "; ".join(cfg["error"].splitlines()))
    if st.get("data_dir"):
        lines.append(f"  data       {st['data_dir']}")
    lines.append(f"  users      {st['users']} configured, {st['online']} online, "
                 f"{st['bindings']} registered devices")
    ext = st.get("lines") or {}
    if ext.get("configured") or ext.get("trunks"):
        lines.append(f"  lines      {ext['online']} of {ext['configured']} online, "
                     f"{ext['trunks']} trunks, {ext['calls']} calls on them")
        lines += [f"  offline    {off}" for off in ext.get("offline", [])]
    lines.append(f"  calls      {st['calls']} in progress, {st['calls_completed']} completed")
    lines.append("  counters   " + ", ".join(f"{k} {v}" for k, v in st["counters"].items()))
    if st.get("security"):
        lines.append("  security   " + ", ".join(f"{k} {v}"
                                                 for k, v in st["security"].items()))
    if "transactions" in st:
        lines.append("  transactions " + ", ".join(f"{k} {v}"
                                                   for k, v in st["transactions"].items()))
    loop = st.get("loop")
    if loop is not None:
        line = (f"  loop       worst iteration {loop['worst_ms']} ms, {loop['stalls']} over "
                f"{loop['stall_threshold_ms']:.0f} ms; gc worst {loop['gc_worst_ms']} ms")
        if loop["recent_stalls"]:
            s = loop["recent_stalls"][-1]
            line += f"; last stall {s['ms']} ms in {s['task']}" + (
                f" ({', '.join(s['notes'])})" if s["notes"] else "")
        lines.append(line)
    faults = st.get("faults")
    if faults is not None:
        last = faults.get("last")
        tail = ""
        if last:
            when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(last["time"]))
            tail = f"; last at {when} in {last['kind']}: {last['text']}"
        lines.append(f"  faults     {faults['count']} (errors caught, the server kept serving)"
                     f"{tail}")
    write("\n".join(lines))


@app.command()
def reload(ctx: typer.Context, config_dir: ConfigDir = None,
           data_dir: DataDir = None) -> None:
    """Reload the YAML configuration now (the server also watches the files)."""
    r = request(_target(ctx, config_dir, data_dir), "reload")
    if not r["ok"]:
        fail("configuration not reloaded, still serving the previous one: "
             + "; ".join(r["error"].splitlines()))
    write(f"reloaded (generation {r['generation']})")


@app.command()
def registrations(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
                  user: UserFilter = None, json: Json = False) -> None:
    """Registered devices: user, contact, expiry, source address. Without a running
    server: the devices stored in registrations.db that have not expired."""
    t = _target(ctx, config_dir, data_dir)
    regs = request(t, "registrations", {"user": user}, required=False)
    if regs is None:
        regs = _stored_registrations(t, user)
    if json:
        emit_json(regs)
        return
    table("registrations", ["user", "contact", "expires", "source", "user agent"],
          [[r["user"], r["contact"], r["expires"], r["source"], r["user_agent"]] for r in regs])


def _stored_registrations(t: Target, user: str | None) -> list[dict[str, Any]]:
    import time

    from ..pbx.location import read_bindings

    if user is not None:
        _require_user(t, user)
    db = t.data_dir / "registrations.db"
    if not db.exists():
        fail(f"no minisip server is running and no registrations are stored in {t.data_dir}")
    sys.stderr.write(f"(no server running: devices as stored in {db})\n")
    now = time.time()
    return [{"user": b.aor, "contact": b.contact, "expires": b.remaining(now),
             "source": str(b.source), "user_agent": b.user_agent}
            for b in read_bindings(db, now) if user is None or b.aor == user]


def _require_user(t: Target, user: str) -> None:
    from ..config.loader import ConfigError
    from ..config.store import USERS

    try:
        if user not in USERS.get_all(t.config_dir):
            fail(f"no user {user!r} in users.yaml")
    except ConfigError as exc:
        fail(str(exc).splitlines()[0])


@app.command()
def calls(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
          user: UserFilter = None, json: Json = False) -> None:
    """Calls in progress (state routing, ringing, answered, talking or held)."""
    live = request(_target(ctx, config_dir, data_dir), "calls", {"user": user})
    if json:
        emit_json(live)
        return
    table("calls", ["caller", "callee", "dialed", "state", "duration", "ringing", "step",
                    "parked", "call id"],
          [[c["caller"], c["callee"], c["dialed"], c["state"], c["duration"],
            " ".join(c.get("ringing") or ()), c.get("step") or c["route"],
            c.get("parked") or "", c["call_id"]]
           for c in live])


#: CDR kinds, the manual's half-call model: O-CDR and T-CDR.
KINDS = {"O": "originating", "T": "terminating"}


@app.command()
def cdr(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
        user: Annotated[Optional[str], typer.Option(help="Calls of this user.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many records (0 = all).")] = 50,
        json: Json = False) -> None:
    """Call detail records, newest first (read from the data dir; no server needed).

    Each call leaves an originating record (the caller's half) and, when a callee
    was reached, a terminating record (the callee's half)."""
    import time as _time

    from ..pbx.cdr import read_cdrs

    t = _target(ctx, config_dir, data_dir)
    if user is not None:
        _require_user(t, user)
    rows = read_cdrs(t.data_dir, user=user, limit=limit)
    if rows is None:
        fail(f"no CDRs in {t.data_dir} (no cdr.db)")
    if json:
        emit_json(rows)
        return

    def fmt(t: float | None) -> str:
        return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t)) if t else ""

    table("CDRs", ["kind", "setup", "caller", "dialed", "final", "duration", "status", "cause",
                   "released by", "steps", "transfer"],
          [[KINDS.get(r["kind"], r["kind"]), fmt(r["setup_time"]), r["caller"], r["dialed"],
            r["final"], r["duration"], r["status"], r["cause"], r["released_by"],
            r.get("steps") or "",
            f"{r.get('transferred_by')} -> {r.get('transferred_to') or r['final']}"
            if r.get("transferred_by") else ""]
           for r in rows])


@app.command()
def trace(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
          user: Annotated[Optional[str], typer.Option(help="Only messages of this user.")] = None,
          call_id: Annotated[Optional[str], typer.Option(help="Only this Call-ID.")] = None,
          count: Annotated[int, typer.Option(help="Stop after this many (0 = forever).")] = 0,
          json: Json = False) -> None:
    """Live SIP messages with their time, like a small sngrep. Ctrl-C stops."""
    from .trace import run_trace

    run_trace(_target(ctx, config_dir, data_dir), user, call_id, count, json)


app.command()(presence)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the exit status. Usage errors are one line (status 2), like the rest."""
    from typer.main import get_command

    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # typer before 0.29 used click itself
        from click.exceptions import ClickException  # type: ignore[no-redef,import-not-found]

    command = get_command(app)
    try:
        rv = command.main(args=argv, prog_name="minisip", standalone_mode=False)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `minisip` alone: the help
            sys.stderr.write(exc.format_message() + "\n")
            return exc.exit_code
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"error: {one_line(exc.format_message())}{hint}\n")
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except BrokenPipeError:  # `minisip registrations | head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        if os.environ.get("MINISIP_TRACEBACK"):
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {one_line(str(exc))} "
                         f"(MINISIP_TRACEBACK=1 shows where)\n")
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
