"""Brute-force and scanner throttling for digest authentication.

Failures are counted per (source address, user name), not per address alone,
so one guesser behind an office NAT does not lock out the office's phones.
A source that fails for many *different* user names within the window (a
scanner walking the extension range) is blocked as a whole. Known scanner
User-Agents are dropped.

Bounded under a flood: every table is an insertion-ordered dict whose order is
its expiry order (a window opened, a block placed; re-inserted when renewed),
so expired entries are always at the front. Each failure costs O(1), and the
server's timer loop drops what expired (``get_timer``/``handle_timer``), so the
tables empty again after a flood even when no more failures come. ``max_entries``
caps each table against a flood of distinct sources within one window: the
oldest entry goes first. (After a reload shortens the window or the block, an
entry may wait behind a longer one; it is ignored once expired all the same.)
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from ..sip.peer import Peer

K = TypeVar("K")
V = TypeVar("V")

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
class _Window:
    """Failures of one (address, user) pair, or the failing users of one address."""
    ends: float  #: when this window's failures are forgotten
    failures: int = 0
    users: set[str] | None = None


@dataclass
class AuthGuard:
    max_failures: int = 10  #: per (address, user) within ``window``
    max_users_per_source: int = 20  #: distinct failing user names before the address is blocked
    window: float = 60.0  #: failures older than this are forgotten (s)
    block_seconds: float = 300.0
    max_entries: int = 100_000  #: per table, oldest dropped first
    _pairs: OrderedDict[tuple[str, str], _Window] = field(default_factory=OrderedDict)
    _sources: OrderedDict[str, _Window] = field(default_factory=OrderedDict)
    _blocked_pairs: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    _blocked_sources: OrderedDict[str, float] = field(default_factory=OrderedDict)
    blocked: int = 0  #: requests refused while blocked (for status)
    blocks: int = 0  #: blocks started (for status)

    def configure(self, *, max_failures: int, max_users_per_source: int, window: float,
                  block_seconds: float) -> None:
        """New limits (a reload): failures counted so far and blocks in force stay."""
        self.max_failures, self.max_users_per_source = max_failures, max_users_per_source
        self.window, self.block_seconds = window, block_seconds

    def is_blocked(self, host: str, user: str, now: float) -> bool:
        until = self._blocked_sources.get(host)
        if until is None or until <= now:
            until = self._blocked_pairs.get((host, user))
        if until is not None and now < until:
            self.blocked += 1
            return True
        return False

    def failure(self, host: str, user: str, now: float) -> str | None:
        """Count one failed authentication; the scope of a block it starts ("user":
        this address for this user name, "source": the whole address), else None."""
        self.handle_timer(now)
        started = None
        pair = (host, user)
        w = self._pairs.get(pair)
        if w is None or w.ends <= now:  # (not yet dropped if a reload shortened the window)
            w = _put(self._pairs, pair, _Window(now + self.window), self.max_entries)
        w.failures += 1
        if w.failures >= self.max_failures:
            del self._pairs[pair]
            if self._blocked_pairs.get(pair, 0.0) <= now:
                started = "user"
            _put(self._blocked_pairs, pair, now + self.block_seconds, self.max_entries)
        s = self._sources.get(host)
        if s is None or s.ends <= now:
            s = _put(self._sources, host, _Window(now + self.window, users=set()),
                     self.max_entries)
        assert s.users is not None
        s.users.add(user)
        if len(s.users) >= self.max_users_per_source:
            del self._sources[host]
            _put(self._blocked_sources, host, now + self.block_seconds, self.max_entries)
            started = "source"
        if started is not None:
            self.blocks += 1
        return started

    def success(self, host: str, user: str) -> None:
        self._pairs.pop((host, user), None)

    # -- expiry (pulled by the server's timer loop; monotonic time) ------------------------
    def get_timer(self) -> float | None:
        best: float | None = None
        for table in (self._pairs, self._sources):
            if table:
                ends = next(iter(table.values())).ends
                best = ends if best is None or ends < best else best
        for blocks in (self._blocked_pairs, self._blocked_sources):
            if blocks:
                until = next(iter(blocks.values()))
                best = until if best is None or until < best else best
        return best

    def handle_timer(self, now: float) -> None:
        for table in (self._pairs, self._sources):
            while table and next(iter(table.values())).ends <= now:
                table.popitem(last=False)
        for blocks in (self._blocked_pairs, self._blocked_sources):
            while blocks and next(iter(blocks.values())) <= now:
                blocks.popitem(last=False)

    def __len__(self) -> int:
        """Entries held in all tables (for status and the flood tests)."""
        return (len(self._pairs) + len(self._sources) + len(self._blocked_pairs)
                + len(self._blocked_sources))


def _put(table: OrderedDict[K, V], key: K, value: V, limit: int) -> V:
    """Insert at the back (the latest expiry); drop the front past ``limit``."""
    table.pop(key, None)
    table[key] = value
    if len(table) > limit:
        table.popitem(last=False)
    return value
