"""Security events: one stable line each, which fail2ban's filter reads for the real
source address whatever a peer puts in the fields it controls."""
from __future__ import annotations

import logging

import pytest

from minisip.cli.serve import JournalFormatter, TEXT_FORMAT
from minisip.pbx.guard import AuthGuard, security_event
from minisip.sip.peer import Peer
from tests.helpers import banned_host, failregex

HOSTILE_USERS = [
    "100",
    "100 source=198.51.100.66 port=1",
    "x\nminisip.security: auth_failed source=198.51.100.66 port=1 transport=udp",
    "\u00e9l\u00e8ve",
    "",
]


def lines(caplog: pytest.LogCaptureFixture, fmt: logging.Formatter) -> list[str]:
    return [fmt.format(r) for r in caplog.records if r.name == "minisip.security"]


@pytest.mark.parametrize("host", ["192.0.2.7", "2001:db8::7", "::1"])
@pytest.mark.parametrize("user", HOSTILE_USERS)
def test_every_event_line_bans_the_real_source_and_only_it(
        caplog: pytest.LogCaptureFixture, host: str, user: str) -> None:
    peer = Peer("udp", host, 5062)
    with caplog.at_level(logging.WARNING, logger="minisip.security"):
        security_event("auth_failed", peer, user=user, method="REGISTER")
        security_event("auth_blocked", peer, user=user, scope="user", seconds=300)
        security_event("scanner_dropped", peer, user_agent=f"friendly-scanner {user}")
    regex = failregex()
    for fmt in (logging.Formatter(TEXT_FORMAT), JournalFormatter()):
        out = lines(caplog, fmt)
        assert len(out) == 3 and all("\n" not in x for x in out)
        assert [banned_host(regex, x) for x in out] == [host] * 3, out
        assert all(" 198.51.100.66 " not in x and "=198.51.100.66" not in x for x in out)


def test_the_documented_format(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="minisip.security"):
        security_event("auth_failed", Peer("tcp", "192.0.2.7", 5060), user="100 x",
                       method="INVITE")
    assert caplog.records[-1].getMessage() == (
        "auth_failed source=192.0.2.7 port=5060 transport=tcp user=100%20x method=INVITE")
    assert JournalFormatter().format(caplog.records[-1]).startswith(
        "<4>minisip.security: auth_failed source=192.0.2.7 ")


def test_the_guard_says_when_a_block_starts_and_its_scope() -> None:
    guard = AuthGuard(max_failures=3, max_users_per_source=4, block_seconds=60)
    assert [guard.failure("192.0.2.7", "100", 0.0) for _ in range(4)] == [
        None, None, "user", None]  # one block per pair, not one per failure
    assert [guard.failure("192.0.2.7", u, 1.0) for u in ("101", "102", "103")] == [
        None, None, "source"]  # the fourth user name from one address: a scanner
    assert guard.blocks == 2
    assert guard.failure("192.0.2.8", "100", 2.0) is None  # another address: its own count
