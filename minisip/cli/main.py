"""The ``minisip`` command. Thin: parse arguments, call into the rest.

Heavy imports (trio, the server, rich tables) happen inside the commands that
need them, so ``minisip --help`` and ``minisip user list`` start fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="minisip: an open-source SIP PBX.")

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
