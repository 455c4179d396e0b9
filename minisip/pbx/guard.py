"""Brute-force and scanner throttling for digest authentication.

Failures are counted per (source address, user name), not per address alone,
so one guesser behind an office NAT does not lock out the office's phones.
A source that fails for many *different* user names (a scanner walking the
extension range) is blocked as a whole. Known scanner User-Agents are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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

    def failure(self, host: str, user: str, now: float) -> None:
        self._trim(now)
        rec = self._pairs.setdefault((host, user), _Record(first=now))
        if now - rec.first > self.window:
            rec.failures, rec.first = 0, now
        rec.failures += 1
        if rec.failures >= self.max_failures:
            rec.blocked_until = now + self.block_seconds
        users = self._sources.setdefault(host, {})
        users[user] = now
        if len(users) >= self.max_users_per_source:
            self._blocked_sources[host] = now + self.block_seconds
            users.clear()

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
