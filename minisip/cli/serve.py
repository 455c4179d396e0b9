"""``minisip serve``: start the server and print the startup summary."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import trio
from rich.console import Console

from ..config.loader import ConfigError
from ..server import ServeOptions, Server, ServerInfo


def _banner(console: Console, info: ServerInfo) -> None:
    console.print("[bold]minisip[/bold] serving")
    for name in info.listeners:
        console.print(f"  listening  {name}")
    console.print(f"  users      {info.users}")
    if info.tls_fingerprint:
        console.print(f"  TLS        SHA-256 {info.tls_fingerprint}")
    console.print(f"  data       {info.data_dir}")
    console.print(f"  control    {info.control_socket}")
    for user in info.default_passwords:
        console.print(f"[yellow]warning[/yellow]: user {user} still has its default "
                      f"password; change it with: minisip user set {user} --password ...")


def run_server(config_dir: Path, data_dir: Path | None, hosts: list[str] | None,
               udp_port: int | None, tcp_port: int | None, tls_port: int | None,
               log_level: str) -> int:
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    console = Console(highlight=False, soft_wrap=True)
    opts = ServeOptions(config_dir, data_dir, hosts or None, udp_port, tcp_port, tls_port)
    try:
        server = Server(opts)
    except ConfigError as exc:
        console.print(f"[red]error[/red]: configuration in {config_dir} is not valid:\n{exc}")
        return 2

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(server.run)
            _banner(console, info)

    try:
        trio.run(main)
    except OSError as exc:  # port in use, permission denied
        console.print(f"[red]error[/red]: {exc}")
        return 1
    except KeyboardInterrupt:
        pass
    console.print("minisip stopped")
    return 0
