"""The administrator's first hour against a real server process: status, stale sockets,
busy ports, security events for fail2ban, held calls, trace lines, journald logs.
Each item asserts the command's one-line output and its exit status."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import (
    REPO, ServerProcess, banned_host, eventually, failregex, make_server, options_ping, run_sipp,
    start_sipp,
)
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop


def one_error(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------

def test_status_is_plain_lines_with_the_fingerprint_as_it_is(server: ServerProcess) -> None:
    out = server.cli("status")  # stdout is a pipe here: nothing may wrap
    assert out.returncode == 0 and out.stderr == ""
    st = json.loads(server.cli("status", "--json").stdout)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("minisip ") and " up " in lines[0]
    labels = [line.split()[0] for line in lines[1:]]
    assert labels == ["listening"] * 3 + ["TLS", "config", "data", "users", "calls",
                                          "counters", "security", "transactions", "loop",
                                          "faults"]
    tls = next(line for line in lines if line.lstrip().startswith("TLS"))
    assert tls.split()[-1] == st["tls_fingerprint"]  # `:CD:` is text, not an emoji
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", st["tls_fingerprint"])
    assert out.stdout.isascii()
    assert st["data_dir"] == str(server.data_dir)


def test_kill_9_leaves_a_stale_socket_that_status_names(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    assert run_sipp("register.xml", server.port, users=[("100", "100")], workdir=tmp_path).ok
    server.stop(signal.SIGKILL)
    assert (server.data_dir / "control.sock").exists()
    out = server.cli("status")
    assert out.returncode == 1 and out.stdout == ""
    assert "did not stop cleanly" in one_error(out)
    regs = server.cli("registrations", "--json")  # offline: what registrations.db holds
    assert regs.returncode == 0, regs.stderr
    assert [r["user"] for r in json.loads(regs.stdout)] == ["100"]
    assert regs.stderr.startswith("(no server running: devices as stored in")
    server.start()  # the next server replaces the stale socket
    assert server.cli("status").returncode == 0


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_serve_on_a_busy_port_fails_in_one_line(tmp_path: Path, kind: str) -> None:
    srv = make_server(tmp_path)
    with socket.socket(socket.AF_INET,
                       socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        if kind == "tcp":
            busy.listen()
        port = busy.getsockname()[1]
        ports = {"udp": "0", "tcp": "0", "tls": "0", kind: str(port)}
        out = srv.cli("serve", "--host", "127.0.0.1", "--udp-port", ports["udp"],
                      "--tcp-port", ports["tcp"], "--tls-port", ports["tls"])
    assert out.returncode == 1 and out.stdout == ""
    assert one_error(out) == (f"error: cannot listen on {kind}:127.0.0.1:{port}: "
                              "address already in use")


def scanner_options(port: int) -> None:
    """One OPTIONS from a known scanner: dropped unanswered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        branch = f"z9hG4bK{random.getrandbits(48):x}"
        s.sendto((f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch}\r\n"
                  f"From: <sip:100@127.0.0.1>;tag=s1\r\nTo: <sip:100@127.0.0.1>\r\n"
                  f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                  f"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", port))


def test_security_events_are_logged_for_fail2ban_and_counted(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    system = srv.config_dir / "system.yaml"
    system.write_text(system.read_text().replace("auth_failures_before_block: 10",
                                                 "auth_failures_before_block: 2"))
    srv.start()
    try:
        wrong = [("101", "nope"), ("101", "nope"), ("999", "999")]
        r = run_sipp("register_wrong_password.xml", srv.port, users=wrong, calls=3,
                     rate=1, workdir=tmp_path)
        assert r.failed == 0, r.output
        scanner_options(srv.port)
        security = lambda: [x for x in srv.log().splitlines() if "minisip.security:" in x]  # noqa: E731
        assert eventually(lambda: len(security()) >= 5), srv.log()
        events = [x.split("minisip.security: ")[1].split()[0] for x in security()]
        assert events == ["auth_failed", "auth_failed", "auth_blocked", "auth_failed",
                          "scanner_dropped"], security()
        regex = failregex()
        assert all(banned_host(regex, x) == "127.0.0.1" for x in security())
        assert "user=101 scope=user seconds=300" in security()[2]
        assert banned_host(regex, "INFO minisip: configuration reloaded: 3 users") is None
        out = srv.cli("status", "--json")
        assert json.loads(out.stdout)["security"] == {
            "auth_failed": 3, "blocks": 1, "refused_while_blocked": 0, "scanners_dropped": 1}
        human = srv.cli("status").stdout.splitlines()
        assert next(x for x in human if x.startswith("  security")) == (
            "  security   auth_failed 3, blocks 1, refused_while_blocked 0, scanners_dropped 1")
    finally:
        srv.stop()


def test_a_hand_edit_giving_a_user_its_name_as_password_is_warned(
        server: ServerProcess) -> None:
    warning = "user {0} has its name as password; change it with: minisip user set {0} "
    assert warning.format("100") in server.log()  # at start
    users = server.config_dir / "users.yaml"
    users.write_text(users.read_text() + '  "300":\n    password: "300"\n')
    assert eventually(lambda: warning.format("300") in server.log()), server.log()
    assert server.log().count(warning.format("100")) == 1  # said once, not at every reload
    assert server.cli("user", "set", "300", "--password", "s3cret").returncode == 0
    users.write_text(users.read_text() + '  "301":\n    password: "301"\n')
    assert eventually(lambda: warning.format("301") in server.log()), server.log()
    assert server.log().count(warning.format("300")) == 1


def test_reload_errors_are_one_line(server: ServerProcess) -> None:
    users = server.config_dir / "users.yaml"
    users.write_text(users.read_text() + '  "103":\n    max_concurrent_calls: two\n')
    out = server.cli("reload")
    assert out.returncode == 1 and out.stdout == ""
    line = one_error(out)
    assert line.startswith("error: configuration not reloaded, still serving the previous one:"
                           " users.yaml line ")
    assert "103: password is required" in line and "max_concurrent_calls" in line
    logged = [x for x in server.log().splitlines() if "not reloaded" in x]
    assert logged and all("users.yaml line" in x for x in logged)


def test_logs_carry_journal_priorities_when_stderr_is_the_journal(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    log_path, out_path = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with open(log_path, "wb") as err, open(out_path, "wb") as out:
        st = os.fstat(err.fileno())
        env = {**srv.env(), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "minisip.cli.main", "serve", "--host", "127.0.0.1",
             "--udp-port", str(srv.port), "--tcp-port", "0", "--tls-port", "0"],
            env=env, stdout=out, stderr=err, cwd=REPO)
    try:
        assert eventually(lambda: "minisip serving" in out_path.read_text(), 15), \
            log_path.read_text()
        proc.send_signal(signal.SIGHUP)  # systemctl reload
        assert eventually(lambda: "configuration reloaded" in log_path.read_text(), 15)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    lines = log_path.read_text().splitlines()
    assert "<4>minisip: user 100 has its name as password; change it with: minisip user set " \
           "100 --password ..." in lines
    assert "<6>minisip: configuration reloaded: 3 users" in lines
    assert all(re.match(r"<[2-7]>minisip[.\w]*: ", x) for x in lines), lines


def test_trace_lines_carry_their_time_and_ipv6_peers_keep_their_port_apart(
        tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    srv.hosts = ["127.0.0.1", "::1"]
    srv.start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "minisip.cli.main", "trace", "--count",
                                 "3"], env=srv.env(), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # Ping until it has printed its three lines: pings before it subscribed (a busy
            # machine starts it slowly) are not traced.
            deadline = time.monotonic() + 20
            while proc.poll() is None:
                assert time.monotonic() < deadline, "the trace printed too little"
                assert options_ping(srv.port, host="::1") is not None
                time.sleep(0.2)
            out, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
        heads = [x for x in out.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", x)]
        ways = [h.split()[1:3] for h in heads]
        # an OPTIONS in, then its 200 out (the first line may be the 200 of the ping before)
        assert len(ways) == 3 and [["<--", "udp"], ["-->", "udp"]] in (ways[:2], ways[1:]), \
            out + err
        assert all(re.fullmatch(r"\S+ \S+ udp \[::1\]:\d+", h) for h in heads), heads
        r = start_sipp("register.xml", remote=f"[::1]:{srv.port}", users=[("100", "100")],
                       workdir=tmp_path, extra=("-i", "::1")).wait()
        assert r.ok, r.output
        regs = json.loads(srv.cli("registrations", "--json").stdout)
        assert re.fullmatch(r"udp:\[::1\]:\d+", regs[0]["source"]), regs
    finally:
        srv.stop()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_a_held_call_shows_held_and_the_callee_can_call_the_caller_back(
        server: ServerProcess, stack: ExitStack) -> None:
    a = stack.enter_context(PyPhone(server.port, "100", "100"))
    b = stack.enter_context(PyPhone(server.port, "101", "101"))
    assert a.register().status == 200 and b.register().status == 200
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(a.call("101")))
    t.start()
    invite = b.answer_incoming()
    t.join(10)
    # domain "" (the default): the caller's address names the server as the callee
    # reaches it, so calling it back works; no unresolvable "minisip" host.
    assert (invite.headers.get("From") or "").startswith("<sip:100@127.0.0.1>")

    def states() -> list[str]:
        out = server.cli("calls", "--json")
        assert out.returncode == 0, out.stderr
        return [c["state"] for c in json.loads(out.stdout)]

    assert eventually(lambda: states() == ["talking"])
    assert a.reinvite("sendonly").status == 200
    assert eventually(lambda: states() == ["held"])
    table = server.cli("calls", "--user", "101").stdout.splitlines()
    assert table[0].split()[:4] == ["CALLER", "CALLEE", "DIALED", "STATE"]
    assert table[1].split()[:4] == ["100", "101", "101", "held"]
    assert json.loads(server.cli("calls", "--json", "--user", "102").stdout) == []
    out = server.cli("calls", "--user", "999")
    assert out.returncode == 1 and one_error(out) == "error: no user '999' in users.yaml"
    assert a.reinvite("sendrecv").status == 200
    assert eventually(lambda: states() == ["talking"])
    users = {u["name"]: u["state"] for u in json.loads(server.cli("user", "list",
                                                                  "--json").stdout)}
    assert users == {"100": "talking", "101": "talking", "102": "offline"}
    assert a.bye().status == 200
    assert eventually(lambda: states() == [])


def test_registrations_of_an_unknown_user_say_so(server: ServerProcess) -> None:
    out = server.cli("registrations", "--user", "999")
    assert out.returncode == 1 and out.stdout == ""
    assert one_error(out) == "error: no user '999' in users.yaml"
    out = server.cli("registrations", "--user", "100", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_systemd_unit_verifies_and_runs_minisip_unprivileged(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (make test installs it)")
    unit = (REPO / "contrib" / "minisip.service").read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines()
                if "=" in line and not line.startswith("#"))
    assert keys["User"] == "minisip" and keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["AmbientCapabilities"] == keys["CapabilityBoundingSet"] == \
        "CAP_NET_BIND_SERVICE"
    assert keys["ExecStart"].split()[1:] == ["serve", "--config-dir", "/etc/minisip"]
    # verify checks that ExecStart exists: point it at this checkout's minisip.
    here = Path(sys.executable).parent / "minisip"
    (tmp_path / "minisip.service").write_text(unit.replace(keys["ExecStart"].split()[0],
                                                           str(here)))
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "minisip.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_commands_find_the_server_from_any_directory(tmp_path: Path) -> None:
    """No --data-dir anywhere: serve and every command read system.yaml's data_dir
    (../data) relative to the configuration directory, not to where they run."""
    srv = make_server(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINISIP_")}
    (tmp_path / "elsewhere").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "minisip.cli.main", "serve", "--config-dir",
         str(srv.config_dir), "--host", "127.0.0.1", "--udp-port", str(srv.port),
         "--tcp-port", "0", "--tls-port", "0"],
        env=env, cwd=tmp_path / "elsewhere", stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        sock = tmp_path / "site" / "data" / "control.sock"
        assert eventually(sock.exists, 15)

        def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "minisip.cli.main", *args], env=env,
                                  cwd=cwd, capture_output=True, text=True, timeout=20)

        for cwd, config in ((tmp_path, "site/configs"), (tmp_path / "elsewhere",
                                                         "../site/configs"),
                            (Path("/"), str(srv.config_dir))):
            out = cli(cwd, "--config-dir", config, "status", "--json")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["data_dir"] == str(tmp_path / "site" / "data")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
