"""sipp registers the manual's preset users over UDP, TCP and TLS with digest auth."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, free_port, make_server, need, options_ping, run_sipp

pytestmark = pytest.mark.interop

PRESET = [("100", "100"), ("101", "101"), ("102", "102")]


@pytest.fixture
def tls_proxy(server: ServerProcess) -> Iterator[int]:
    """sipp (this build) has no TLS: socat turns its TCP into TLS to our TLS port."""
    socat = need("socat")
    port = free_port((socket.SOCK_STREAM,))
    proc = subprocess.Popen([socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                             f"OPENSSL:127.0.0.1:{server.tls_port},verify=0"],
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_preset_users_register_with_digest_auth(server: ServerProcess, transport: str,
                                                tmp_path: Path) -> None:
    r = run_sipp("register.xml", server.port, users=PRESET, calls=3, transport=transport,
                 workdir=tmp_path)
    assert (r.successful, r.failed) == (3, 0), r.output + server.log()


def test_preset_users_register_over_tls(server: ServerProcess, tls_proxy: int,
                                        tmp_path: Path) -> None:
    r = run_sipp("register.xml", tls_proxy, users=PRESET, calls=3, transport="t1",
                 workdir=tmp_path)
    assert (r.successful, r.failed) == (3, 0), r.output + server.log()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_wrong_password_never_gets_200(server: ServerProcess, transport: str,
                                       tmp_path: Path) -> None:
    wrong = [("100", "nope"), ("101", "100"), ("102", ""), ("999", "999")]
    r = run_sipp("register_wrong_password.xml", server.port, users=wrong, calls=4,
                 transport=transport, workdir=tmp_path)
    assert (r.successful, r.failed) == (4, 0), r.output + server.log()


def _online(server: ServerProcess) -> dict[str, str]:
    out = server.cli("user", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {u["name"]: u["state"] for u in json.loads(out.stdout)}


def test_registrations_survive_kill_9(server: ServerProcess, tmp_path: Path) -> None:
    r = run_sipp("register.xml", server.port, users=PRESET, calls=3, workdir=tmp_path)
    assert r.successful == 3, r.output
    assert set(_online(server).values()) == {"online"}
    server.stop(signal.SIGKILL)
    server.start()
    assert _online(server) == {"100": "online", "101": "online", "102": "online"}


def test_server_listens_on_ipv6_too(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv = make_server(tmp_path)
    srv.hosts = ["127.0.0.1", "::1"]
    srv.start()
    try:
        reply = options_ping(srv.port, "::1")
        assert reply is not None and reply.startswith(b"SIP/2.0 200 ")
        assert b"received=" not in reply.split(b"\r\n\r\n")[0] or b"::1" in reply
    finally:
        srv.stop()


def _udp_register(port: int, user: str, password: str, algorithm: str) -> int:
    """REGISTER from a plain socket, answering the ``algorithm`` challenge."""
    from minisip.sip.digest import authorization_for
    from minisip.sip.parser import parse_message_untrusted

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        lport = s.getsockname()[1]
        auth = ""
        for cseq in (1, 2):
            s.sendto((f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKsha{cseq};rport\r\n"
                      f"From: <sip:{user}@127.0.0.1>;tag=sha\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                      f"Call-ID: sha256-{user}\r\nCSeq: {cseq} REGISTER\r\n"
                      f"Contact: <sip:{user}@127.0.0.1:{lport}>\r\n{auth}"
                      f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
            resp = parse_message_untrusted(s.recv(65535))
            if resp.status != 401:  # type: ignore[union-attr]
                return resp.status  # type: ignore[union-attr]
            challenge = next(v for v in resp.headers.get_all("WWW-Authenticate")
                             if f"algorithm={algorithm}" in v)
            auth = "Authorization: " + authorization_for(
                challenge, "REGISTER", "sip:127.0.0.1", user, password) + "\r\n"
        return 401


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_both_digest_algorithms_register(tmp_path: Path, algorithm: str) -> None:
    srv = make_server(tmp_path)
    system = srv.config_dir / "system.yaml"
    system.write_text(system.read_text().replace("digest_algorithms: [MD5]",
                                                 "digest_algorithms: [SHA-256, MD5]"))
    srv.start()
    try:
        assert _udp_register(srv.port, "101", "101", algorithm) == 200
        assert _udp_register(srv.port, "102", "wrong", algorithm) == 401
    finally:
        srv.stop()
