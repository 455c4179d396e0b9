"""Where a server keeps its live state: one rule for ``serve`` and every other command.

system.yaml's ``data_dir`` is read relative to the configuration directory, so
``minisip status --config-dir /srv/pbx/configs`` finds the server's control socket
from any working directory. ``--data-dir`` on the command line wins, as given.
"""
from __future__ import annotations

import os
from pathlib import Path

#: system.yaml's default: a ``data`` directory beside the configuration directory.
DEFAULT_DATA_DIR = "../data"


def resolve_data_dir(config_dir: Path, configured: str, override: Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    path = Path(configured).expanduser()
    if path.is_absolute():
        return path
    return Path(os.path.normpath(Path(config_dir) / path))


def data_dir_of(config_dir: Path, override: Path | None = None) -> Path:
    """The data directory of the server configured in ``config_dir``, for the CLI.

    Tolerant on purpose: a system.yaml broken by an edit still names the data
    directory of the server that keeps serving its previous configuration.
    """
    if override is not None:
        return Path(override)
    return resolve_data_dir(config_dir, _configured(Path(config_dir)))


def _configured(config_dir: Path) -> str:
    try:
        text = (config_dir / "system.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return DEFAULT_DATA_DIR
    from . import fastyaml

    try:
        doc = fastyaml.parse(text)
    except Exception:  # outside the fast subset or broken: ask the full parser
        from ruamel.yaml import YAML

        try:
            doc = YAML(typ="safe").load(text)
        except Exception:
            return DEFAULT_DATA_DIR
    value = doc.get("data_dir") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else DEFAULT_DATA_DIR
