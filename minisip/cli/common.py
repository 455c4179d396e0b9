"""What every command shares: where the server is, how to print, how to fail.

Output is plain text written as it is: no markup interpretation anywhere (a TLS
fingerprint containing ``:CD:`` must not turn into an emoji), no wrapping when
stdout is not a terminal, and every error is one line on stderr with a non-zero
exit status.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import typer

DEFAULT_CONFIG_DIR = Path("configs")


@dataclass(frozen=True)
class Target:
    """One server's configuration and data directories."""
    config_dir: Path = DEFAULT_CONFIG_DIR
    data_dir_option: Path | None = None

    @cached_property
    def data_dir(self) -> Path:
        # The rule `serve` follows: --data-dir, else system.yaml's data_dir read
        # relative to the configuration directory (not to where we run).
        from ..config.paths import data_dir_of
        return data_dir_of(self.config_dir, self.data_dir_option)

    @property
    def control_path(self) -> Path:
        return self.data_dir / "control.sock"


def target(ctx: typer.Context, config_dir: Path | None, data_dir: Path | None) -> Target:
    """The directories of this invocation: options after the sub-command win over the
    same options before it (``minisip --config-dir X user list``), which win over the
    environment (MINISIP_CONFIG_DIR, MINISIP_DATA_DIR) and the defaults."""
    root = ctx.find_root().obj
    base = root if isinstance(root, Target) else Target()
    return Target(config_dir or base.config_dir,
                  data_dir if data_dir is not None else base.data_dir_option)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"error: {one_line(message)}\n")
    raise typer.Exit(code)


def server_running(t: Target) -> bool:
    return t.control_path.exists()


def request(t: Target, op: str, args: dict[str, Any] | None = None,
            *, required: bool = True, timeout: float = 10.0) -> Any:
    """One control request; None when no server runs and ``required`` is False."""
    if not t.control_path.exists():  # spare the trio import: nobody listens
        if not required:
            return None
        fail(f"no minisip server is running (no control socket at {t.control_path})")
    from ..control.client import ControlError, ServerNotRunning, call

    try:
        return call(t.control_path, op, args or {}, timeout=timeout)
    except ServerNotRunning as exc:
        if not required:
            return None
        fail(str(exc))
    except ControlError as exc:
        fail(str(exc))


def write(text: str) -> None:
    """Text to stdout as it is (no markup, no wrapping)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Aligned columns. Plain text on purpose: rich's Table took 5 s for 10,000 users."""
    cells = [["" if v is None else _cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    bold = sys.stdout.isatty()
    head = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()
    out = [f"\x1b[1m{head}\x1b[0m" if bold else head]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    if not rows:
        out.append(f"(no {title})")
    sys.stdout.write("\n".join(out) + "\n")


def _cell(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def yaml_text(mapping: dict[str, Any], indent: int = 0) -> list[str]:
    """A mapping as YAML-like lines (``true``, ``[a, b]``, nested keys indented), the
    way the configuration files write it, rather than Python's reprs."""
    out = []
    pad = "  " * indent
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.append(f"{pad}{key}:")
            out += yaml_text(value, indent + 1)
        else:
            out.append(f"{pad}{key}: {yaml_scalar(value)}")
    return out


def yaml_scalar(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    if isinstance(value, str):
        if value == "" or value != value.strip() or value[:1] in "[]{}&*!|>'\"%@`#,?:-" or (
                ": " in value or " #" in value):
            return json.dumps(value, ensure_ascii=False)
        return value
    return str(value)
