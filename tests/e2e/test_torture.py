"""RFC 4475 torture messages sent to a running server, each followed by an OPTIONS.

The messages are read from ../shared/rfc4475/ (never copied into the repo);
cases.json gives each one's policy (see its README).
"""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.helpers import SHARED, ServerProcess, make_server, options_ping

TORTURE = SHARED / "rfc4475"
CASES = json.loads((TORTURE / "cases.json").read_text()) if TORTURE.exists() else {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path_factory.mktemp("torture"))
    srv.start()
    yield srv
    srv.stop()


def _send(server: ServerProcess, name: str) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        raw = (TORTURE / f"{name}.sip").read_bytes()
        for key, value in ((b"{HOST}", b"127.0.0.1"), (b"{PORT}", str(server.port).encode()),
                           (b"{LHOST}", b"127.0.0.1"), (b"{LPORT}", str(lport).encode())):
            raw = raw.replace(key, value)
        s.sendto(raw, ("127.0.0.1", server.port))
        s.settimeout(0.4)
        replies = []
        try:
            while True:
                replies.append(s.recv(65535))
                s.settimeout(0.1)
        except OSError:
            pass
        return replies


def _final_codes(replies: list[bytes]) -> list[int]:
    return [int(r.split(b" ", 2)[1]) for r in replies
            if r.startswith(b"SIP/2.0 ") and not r.startswith(b"SIP/2.0 1")]


@pytest.mark.skipif(not CASES, reason="../shared/rfc4475 is not beside the checkout")
@pytest.mark.parametrize("name", sorted(CASES))
def test_torture_message_gets_its_policy_and_server_keeps_serving(
        server: ServerProcess, name: str) -> None:
    policy = CASES[name]["policy"]
    codes = _final_codes(_send(server, name))
    if policy == "valid-request":
        assert codes, f"{name}: no final response"
    elif policy == "valid-reject":
        assert codes and all(c >= 300 for c in codes), f"{name}: {codes}"
    elif policy == "no-response":
        assert codes == [], f"{name}: answered {codes}"
    elif policy == "invalid-strict":
        assert all(400 <= c < 600 for c in codes), f"{name}: {codes}"
    reply = options_ping(server.port)
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), server.log()
