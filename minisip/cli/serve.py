"""``minisip serve``: start the server, print the startup summary, fail in one line.

Logs go to stderr: with timestamps on a terminal or in a file (``text``), or,
under systemd, as ``<N>logger: message`` lines whose ``<N>`` prefix journald
reads as the syslog priority (``journal``; journald adds the time itself).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: " + super().format(record)


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device:inode of the journal stream it gave us."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(level: str, fmt: str = "auto") -> None:
    if fmt not in ("auto", "text", "journal"):
        raise ValueError(f"--log-format must be auto, text or journal, not {fmt!r}")
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"--log-level must be debug, info, warning or error, not {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    journal = fmt == "journal" or (fmt == "auto" and stderr_is_journal())
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _banner(info: object) -> str:
    from ..server import ServerInfo

    assert isinstance(info, ServerInfo)
    lines = ["minisip serving"]
    lines += [f"  listening  {name}" for name in info.listeners]
    lines.append(f"  users      {info.users}")
    if info.tls_fingerprint:
        lines.append(f"  TLS        SHA-256 {info.tls_fingerprint}")
    lines.append(f"  data       {info.data_dir}")
    lines.append(f"  control    {info.control_socket}")
    return "\n".join(lines) + "\n"


def _error(message: str) -> int:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    return 1


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside trio's exception groups (a nursery wraps what failed)."""
    while isinstance(exc, BaseExceptionGroup):
        import trio

        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        exc = inner[0] if inner else exc.exceptions[0]
    return exc


def run_server(config_dir: Path, data_dir: Path | None, hosts: list[str] | None,
               udp_port: int | None, tcp_port: int | None, tls_port: int | None,
               log_level: str, log_format: str = "auto") -> int:
    try:
        setup_logging(log_level, log_format)
    except ValueError as exc:
        return _error(str(exc))
    import trio

    from ..config.loader import ConfigError
    from ..control.server import ControlSocketInUse
    from ..server import ServeOptions, Server

    opts = ServeOptions(config_dir, data_dir, hosts or None, udp_port, tcp_port, tls_port)
    try:
        server = Server(opts)
    except ConfigError as exc:
        return _error(f"configuration in {config_dir} is not valid: "
                      + "; ".join(str(exc).splitlines()))
    except OSError as exc:  # the data directory cannot be made or opened
        return _error(f"{exc.strerror or exc}: {exc.filename or opts.data_dir}")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(server.run)
            sys.stdout.write(_banner(info))
            sys.stdout.flush()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # one line naming the problem, not a trace of groups
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            pass
        elif isinstance(leaf, OSError):
            where = f": {leaf.filename}" if leaf.filename else ""
            return _error(f"{leaf.strerror}{where}" if leaf.strerror else str(leaf))
        elif isinstance(leaf, (ControlSocketInUse, ValueError)):
            return _error(str(leaf))
        else:
            raise
    sys.stdout.write("minisip stopped\n")
    return 0
