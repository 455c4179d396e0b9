"""Brute-force and scanner throttling for digest authentication.

Failures are counted per (source address, user name), not per address alone,
so one guesser behind an office NAT does not lock out the office's phones.
A source that fails for many *different* user names (a scanner walking the
extension range) is blocked as a whole. Known scanner User-Agents are dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..sip.peer import Peer

#: Security events, one line each (README "Security events"; fail2ban matches them):
#:   auth_failed source=192.0.2.7 port=5060 transport=udp user=100 method=REGISTER
#:   auth_blocked source=192.0.2.7 port=5060 transport=udp user=100 scope=user seconds=300
#:   scanner_dropped source=192.0.2.7 port=5060 transport=udp user_agent=friendly-scanner
#: The event and the source address come first and never change; values a peer chose
#: are percent-encoded, so no user name can forge a field or a line.
security_log = logging.getLogger("minisip.security")

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~!*+@-")


def _field(value: object) -> str:
    text = str(value)
    if all(c in _SAFE for c in text) and text:
        return text
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text
                   ) or "-"


def security_event(event: str, peer: Peer, **fields: object) -> None:
    """Log one security event in the documented, stable format."""
    extra = "".join(f" {k}={_field(v)}" for k, v in fields.items())
    security_log.warning("%s source=%s port=%d transport=%s%s", event, peer.host, peer.port,
                         peer.transport, extra)

SCANNER_AGENTS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr",
                  "iWar", "sipsak", "VaxSIPUserAgent", "pplsip", "SIPScan")
_SCANNER_LOWER = tuple(a.lower() for a in SCANNER_AGENTS)


def is_scanner(user_agent: str | None) -> bool:
    if not user_agent:
        return False
    ua = user_agent.lower()
    return any(a in ua for a in _SCANNER_LOWER)


@dataclass(slots=True)
class _Record:
    failures: int = 0
    first: float = 0.0
    blocked_until: float = 0.0


@dataclass
class AuthGuard:
    max_failures: int = 10  #: per (address, user) within ``window``
    max_users_per_source: int = 20  #: distinct failing user names before the address is blocked
    window: float = 60.0
    block_seconds: float = 300.0
    _pairs: dict[tuple[str, str], _Record] = field(default_factory=dict)
    _sources: dict[str, dict[str, float]] = field(default_factory=dict)
    _blocked_sources: dict[str, float] = field(default_factory=dict)
    blocked: int = 0  #: requests refused while blocked (for status)
    blocks: int = 0  #: blocks started (for status)

    def is_blocked(self, host: str, user: str, now: float) -> bool:
        until = self._blocked_sources.get(host)
        if until is not None:
            if now < until:
                self.blocked += 1
                return True
            del self._blocked_sources[host]
        rec = self._pairs.get((host, user))
        if rec is not None and now < rec.blocked_until:
            self.blocked += 1
            return True
        return False

    def failure(self, host: str, user: str, now: float) -> str | None:
        """Count one failed authentication; the scope of a block it starts ("user":
        this address for this user name, "source": the whole address), else None."""
        self._trim(now)
        started = None
        rec = self._pairs.setdefault((host, user), _Record(first=now))
        if now - rec.first > self.window:
            rec.failures, rec.first = 0, now
        rec.failures += 1
        if rec.failures >= self.max_failures:
            if rec.blocked_until <= now:
                started = "user"
            rec.blocked_until = now + self.block_seconds
        users = self._sources.setdefault(host, {})
        users[user] = now
        if len(users) >= self.max_users_per_source:
            self._blocked_sources[host] = now + self.block_seconds
            users.clear()
            started = "source"
        if started is not None:
            self.blocks += 1
        return started

    def success(self, host: str, user: str) -> None:
        self._pairs.pop((host, user), None)

    def _trim(self, now: float) -> None:
        # Bounded memory under a flood of distinct sources: forget stale records.
        if len(self._pairs) > 50_000:
            horizon = now - self.window
            self._pairs = {k: r for k, r in self._pairs.items()
                           if r.first > horizon or r.blocked_until > now}
        if len(self._sources) > 50_000:
            self._sources.clear()
