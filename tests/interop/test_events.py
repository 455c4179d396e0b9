"""The control socket's event stream: user states, registrations and reloads, live."""
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from minisip.control.client import subscribe
from tests.helpers import ServerProcess, run_sipp

pytestmark = pytest.mark.interop


async def test_registration_user_state_and_reload_events(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    sock = server.data_dir / "control.sock"
    seen: list[tuple[str, dict[str, object]]] = []
    with trio.fail_after(20):
        async with subscribe(sock, ["users", "registrations", "reloads"],
                             {"user": "100"}) as events:
            await trio.to_thread.run_sync(lambda: run_sipp(
                "register.xml", server.port, users=[("100", "100")], workdir=tmp_path))
            async for frame in events:
                seen.append((frame["event"], frame["data"]))
                if frame["event"] == "user_state":
                    break
    assert ("registered", "100") in [(e, d["user"]) for e, d in seen]
    assert ("user_state", {"user": "100", "state": "online"}) in seen


async def test_reload_events_report_errors(server: ServerProcess) -> None:
    sock = server.data_dir / "control.sock"
    users = server.config_dir / "users.yaml"
    with trio.fail_after(20):
        async with subscribe(sock, ["reloads"]) as events:
            users.write_text(users.read_text() + "  oops: [\n")
            frame = await events.__anext__()
    assert frame["event"] == "reload_failed"
    assert "users.yaml line" in frame["data"]["error"]
