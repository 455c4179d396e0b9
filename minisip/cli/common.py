"""What every command shares: where the server is, how to print, how to fail."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer


@dataclass(frozen=True)
class Target:
    """One server's configuration and data directories."""
    config_dir: Path
    data_dir_option: Path | None

    @property
    def data_dir(self) -> Path:
        if self.data_dir_option is not None:
            return self.data_dir_option
        # Same default as `serve`: system.yaml's data_dir, else "data".
        try:
            from ruamel.yaml import YAML
            doc = YAML(typ="safe").load((self.config_dir / "system.yaml").read_text()) or {}
            value = doc.get("data_dir") if isinstance(doc, dict) else None
            if not value and isinstance(doc, dict) and isinstance(doc.get("system"), dict):
                value = doc["system"].get("data_dir")
            return Path(value or "data")
        except (OSError, ValueError, AttributeError):
            return Path("data")
        except Exception:  # a broken system.yaml must not hide the server
            return Path("data")

    @property
    def control_path(self) -> Path:
        return self.data_dir / "control.sock"


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def request(target: Target, op: str, args: dict[str, Any] | None = None,
            *, required: bool = True, timeout: float = 5.0) -> Any:
    """One control request; None when no server runs and ``required`` is False."""
    if not target.control_path.exists():  # spare the trio import: nobody listens
        if not required:
            return None
        fail(f"no minisip server is running (no control socket at {target.control_path})")
    from ..control.client import ControlError, ServerNotRunning, call

    try:
        return call(target.control_path, op, args or {}, timeout=timeout)
    except ServerNotRunning:
        if not required:
            return None
        fail(f"no minisip server is running (no control socket at {target.control_path})")
    except ControlError as exc:
        fail(str(exc))


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
    return str(v)
