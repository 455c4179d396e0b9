"""The real CLI against a real server process: edits reach the running server."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, ServerProcess, eventually, make_server, options_ping, run_sipp

pytestmark = pytest.mark.interop


def registers(server: ServerProcess, user: str, password: str, tmp_path: Path) -> bool:
    return run_sipp("register.xml", server.port, users=[(user, password)],
                    workdir=tmp_path).ok


def states(server: ServerProcess) -> dict[str, str]:
    out = server.cli("user", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {u["name"]: u["state"] for u in json.loads(out.stdout)}


def test_added_user_registers_shows_online_and_is_refused_once_removed(
        server: ServerProcess, tmp_path: Path) -> None:
    out = server.cli("user", "add", "200", "--password", "s3cret")
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    assert eventually(lambda: registers(server, "200", "s3cret", tmp_path))
    assert time.monotonic() - t0 < 2.5
    assert states(server)["200"] == "online"
    regs = json.loads(server.cli("registrations", "--json", "--user", "200").stdout)
    assert len(regs) == 1 and regs[0]["contact"].startswith("sip:200@")
    assert server.cli("user", "remove", "200").returncode == 0
    assert eventually(lambda: "200" not in states(server))
    assert json.loads(server.cli("registrations", "--json").stdout) == []
    r = run_sipp("register_wrong_password.xml", server.port, users=[("200", "s3cret")],
                 workdir=tmp_path)
    assert r.ok, r.output  # challenged again: never 200


def test_changed_password_applies_at_next_authentication(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    assert server.cli("user", "set", "101", "--password", "n3w").returncode == 0
    assert eventually(lambda: registers(server, "101", "n3w", tmp_path))
    assert not registers(server, "101", "101", tmp_path)


def test_garbage_in_users_yaml_keeps_users_and_is_reported(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    users = server.config_dir / "users.yaml"
    good = users.read_text()
    users.write_text(good + '  "103":\n    password: "103"\n    max_concurrent_calls: two\n')

    def error() -> str | None:
        st = json.loads(server.cli("status", "--json").stdout)
        return st["config"]["error"]

    assert eventually(lambda: error() is not None)
    assert "users.yaml line" in error() and "max_concurrent_calls" in error()  # type: ignore[operator]
    human = server.cli("status").stdout
    assert "users.yaml line" in human and "previous configuration" in human
    assert registers(server, "100", "100", tmp_path)  # the old snapshot still serves
    assert not registers(server, "103", "103", tmp_path)
    users.write_text(good + '  "103":\n    password: "103"\n')  # fixed
    assert eventually(lambda: error() is None)
    assert registers(server, "103", "103", tmp_path)


def test_reload_command_and_sighup(server: ServerProcess, tmp_path: Path) -> None:
    out = server.cli("reload")
    assert out.returncode == 0 and "reloaded" in out.stdout
    before = json.loads(server.cli("status", "--json").stdout)["config"]["generation"]
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: json.loads(server.cli("status", "--json").stdout)
                      ["config"]["generation"] > before)


def test_trace_shows_live_sip_messages(server: ServerProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "minisip.cli.main", "trace", "--json",
                             "--count", "2"], env=server.env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            # Until it has subscribed (a loaded machine takes a while to start it), pings
            # go unseen; one ping's in and out are published together, never split.
            assert options_ping(server.port) is not None
            time.sleep(0.3)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    frames = [json.loads(line) for line in out.splitlines()]
    assert [f["data"]["direction"] for f in frames] == ["in", "out"], err
    assert frames[0]["data"]["text"].startswith("OPTIONS ")


def test_cli_without_server_says_so_in_one_line(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    out = srv.cli("status")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: no minisip server is running")
    assert len(out.stderr.strip().splitlines()) == 1
    listing = json.loads(srv.cli("user", "list", "--json").stdout)
    assert [u["name"] for u in listing] == ["100", "101", "102"]


def test_bad_edit_is_refused_with_file_line_and_key(server: ServerProcess) -> None:
    out = server.cli("user", "set", "100", "max_concurrent_calls=two")
    assert out.returncode == 1
    assert "users.yaml line" in out.stderr and "max_concurrent_calls" in out.stderr
    out = server.cli("user", "set", "100", "max_concurent_calls=2")
    assert out.returncode == 1 and "did you mean" in out.stderr


def test_status_reports_the_loop_and_the_collector(server: ServerProcess) -> None:
    st = json.loads(server.cli("status", "--json").stdout)
    loop = st["loop"]
    assert loop["iterations"] > 0 and loop["stall_threshold_ms"] == 50
    assert {"stalls", "worst_ms", "gc_pauses", "gc_worst_ms", "recent_stalls"} <= set(loop)
    assert "loop       worst iteration" in server.cli("status").stdout
