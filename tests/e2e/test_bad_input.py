"""Bad bytes on any transport get a 400 or nothing, and block nobody."""
from __future__ import annotations

import os
import random
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, make_server, options_ping


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path_factory.mktemp("bad"))
    srv.start()
    yield srv
    srv.stop()


def _alive(server: ServerProcess) -> None:
    # Like a UA, retransmit: a flood may have filled the socket buffer when we asked.
    reply = None
    for _ in range(4):
        reply = reply or options_ping(server.port, timeout=1.0)
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), server.log()


def test_request_with_bad_header_gets_400_naming_the_problem(server: ServerProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lport};"
                  "branch=z9hG4bKbad1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n"
                  "Call-ID: bad1\r\nCSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", server.port))
        s.settimeout(2)
        reply = s.recv(65535)
    assert reply.startswith(b"SIP/2.0 400 ")
    assert b"CSeq" in reply.split(b"\r\n")[0]


def test_garbage_flood_and_oversized_datagrams_leave_server_serving(
        server: ServerProcess) -> None:
    rng = random.Random(4475)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            size = rng.choice([0, 1, 20, 500, 1400, 9000, 65000])
            s.sendto(os.urandom(size) if i % 2 else b"INVITE " + os.urandom(size),
                     ("127.0.0.1", server.port))
    _alive(server)


def test_stalled_tcp_peer_blocks_no_one(server: ServerProcess) -> None:
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        for c in stalled:  # half a message, then silence
            c.sendall(b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK1\r\n")
        _alive(server)
        # TCP still serves a well-behaved client alongside.
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as c:
            c.sendall(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;"
                      b"branch=z9hG4bKtcp1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n"
                      b"Call-ID: tcp1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            assert c.recv(65535).startswith(b"SIP/2.0 200 ")
    finally:
        for c in stalled:
            c.close()


def test_tcp_without_content_length_is_closed_not_hung(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as c:
        c.sendall(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;"
                  b"branch=z9hG4bKtcp2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n"
                  b"Call-ID: tcp2\r\nCSeq: 1 OPTIONS\r\n\r\n")
        data = b""
        while chunk := c.recv(65535):
            data += chunk
    assert b"200 OK" not in data
    _alive(server)


def test_tls_peer_that_never_handshakes_blocks_no_one(server: ServerProcess) -> None:
    silent = [socket.create_connection(("127.0.0.1", server.tls_port)) for _ in range(10)]
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.tls_port), timeout=3) as raw, \
                ctx.wrap_socket(raw) as c:
            c.sendall(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;"
                      b"branch=z9hG4bKtls1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n"
                      b"Call-ID: tls1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            assert c.recv(65535).startswith(b"SIP/2.0 200 ")
        _alive(server)
    finally:
        for c in silent:
            c.close()


def test_crlf_keepalive_ping_gets_pong(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as c:
        c.sendall(b"\r\n\r\n")
        assert c.recv(16) == b"\r\n"


def test_tls_certificate_is_generated_once_into_data_dir(server: ServerProcess) -> None:
    cert = Path(server.data_dir) / "tls" / "cert.pem"
    key = Path(server.data_dir) / "tls" / "key.pem"
    assert cert.exists() and key.exists()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
