"""Where a provider's or trunk's host name leads: RFC 3263 SRV, then A/AAAA, cached by TTL.

Theory of operation
-------------------
Calls and registrations read addresses synchronously from the cache
(:meth:`Resolver.peers`); a name nobody resolved yet reads as ``None`` (the
caller says "not resolved yet" and moves on). Lookups happen off the SIP path,
in the resolver's own task (:meth:`Resolver.run`), which wakes when a new name
is wanted or an entry's TTL runs out and then calls ``on_change`` so that a
waiting registration can go. An entry stays usable after its TTL until the
refresh answers: a DNS hiccup does not take a line down.

An IP address is its own answer. For a name, the port decides (RFC 3263 4.2):
the transport's default port (5060, TLS 5061) means "no port given", so the
``_sip._udp`` / ``_sip._tcp`` / ``_sips._tcp`` SRV records are asked first and
their targets and ports win; otherwise, or without SRV records, the name's A
then AAAA records with the configured port. Names DNS does not know (the hosts
file's) fall back to the system resolver, cached for ``FALLBACK_TTL``.
"""
from __future__ import annotations

import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from ...sip.peer import Peer

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
FALLBACK_TTL = 300.0  #: seconds a hosts-file answer (no DNS TTL) is kept
NEGATIVE_TTL = 30.0  #: seconds before a name that resolved to nothing is asked again
MIN_TTL = 5.0  #: a TTL of 0 would make us ask on every wake-up
LOOKUP_TIMEOUT = 5.0

Key = tuple[str, int, str]  #: (host, port, transport)


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What a DNS query returned: records as text (or Srv) and their TTL."""
    records: tuple[object, ...]
    ttl: float


#: (name, "SRV" | "A" | "AAAA") -> Answer, or None when the name has no such records
Query = Callable[[str, str], Awaitable[Answer | None]]


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_srv(records: Sequence[Srv], rand: Callable[[float], float] | None = None) -> list[Srv]:
    """RFC 2782: lowest priority first; within one priority, a weighted random order."""
    pick = rand or (lambda total: random.uniform(0, total))
    out: list[Srv] = []
    for prio in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == prio]
        group.sort(key=lambda r: r.weight)  # zero weights first, as the RFC says
        while group:
            total = sum(r.weight for r in group)
            mark = min(max(pick(total), 0), total)  # a number in [0, total]
            running, chosen = 0, len(group) - 1
            for i, r in enumerate(group):
                running += r.weight
                if running >= mark:
                    chosen = i
                    break
            out.append(group.pop(chosen))
    return out


class Resolver:
    def __init__(self, query: Query | None = None,
                 getaddrinfo: Callable[..., Awaitable[list[tuple]]] | None = None,
                 *, now: Callable[[], float] = trio.current_time) -> None:
        self._query = query or dns_query
        self._getaddrinfo = getaddrinfo or trio.socket.getaddrinfo
        self._now = now
        self._cache: dict[Key, tuple[tuple[Peer, ...], float]] = {}
        self._wanted: set[Key] = set()
        self._wake = trio.Event()
        self.on_change: Callable[[Key], None] = lambda key: None
        self.lookups = 0

    # -- what the SIP side reads ---------------------------------------------------------
    def peers(self, host: str, port: int, transport: str) -> tuple[Peer, ...] | None:
        """Addresses of ``host`` in preference order; () = does not resolve; None = not
        resolved yet (the name is then queued for the resolver task)."""
        if is_ip(host):
            return (Peer(transport, host, port),)
        key = (host.lower(), port, transport)
        hit = self._cache.get(key)
        if hit is None:
            self.want([key])
            return None
        return hit[0]

    def name_for(self, peer: Peer) -> str | None:
        """The configured host name ``peer`` was resolved from (a TLS peer's expected
        certificate name), or None."""
        for (host, _, _), (peers, _) in self._cache.items():
            if peer in peers:
                return host
        return None

    def want(self, keys: Sequence[Key]) -> None:
        """Keep these names resolved (and only these: others are forgotten)."""
        new = {k for k in keys if not is_ip(k[0])}
        if new - self._wanted:
            self._wanted |= new
            self._wake.set()

    def retain(self, keys: set[Key]) -> None:
        """Forget every name not in ``keys`` (lines and trunks removed from the config)."""
        self._wanted &= keys
        for k in [k for k in self._cache if k not in keys]:
            del self._cache[k]

    def _due(self) -> tuple[list[Key], float]:
        now = self._now()
        due, nxt = [], float("inf")
        for k in self._wanted:
            hit = self._cache.get(k)
            if hit is None or hit[1] <= now:
                due.append(k)
            else:
                nxt = min(nxt, hit[1])
        return due, nxt

    # -- the task ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            due, nxt = self._due()
            if not due:
                self._wake = trio.Event()
                with trio.move_on_at(nxt):
                    await self._wake.wait()
                continue
            for key in due:
                await self.resolve(key)

    async def resolve(self, key: Key) -> tuple[Peer, ...]:
        host, port, transport = key
        self.lookups += 1
        try:
            with trio.fail_after(LOOKUP_TIMEOUT):
                peers, ttl = await self._lookup(host, port, transport)
        except (trio.TooSlowError, OSError) as exc:
            log.info("DNS: %s: %s", host, exc)
            peers, ttl = (), NEGATIVE_TTL
        old = self._cache.get(key)
        if not peers and old is not None and old[0]:
            peers = old[0]  # keep the last good answer through a failed refresh
        self._cache[key] = (peers, self._now() + max(ttl, MIN_TTL))
        if old is None or old[0] != peers:
            self.on_change(key)
        return peers

    async def _lookup(self, host: str, port: int, transport: str
                      ) -> tuple[tuple[Peer, ...], float]:
        targets: list[tuple[str, int]] = [(host, port)]
        ttl = FALLBACK_TTL
        if port == DEFAULT_PORTS[transport]:
            srv = await self._query(SRV_PREFIX[transport] + host, "SRV")
            if srv is not None and srv.records:
                ttl = srv.ttl
                targets = [(r.target.rstrip("."), r.port)
                           for r in order_srv([r for r in srv.records if isinstance(r, Srv)])]
        out: list[Peer] = []
        for name, p in targets:
            addrs, t = await self._addresses(name)
            ttl = min(ttl, t)
            out += [Peer(transport, a, p) for a in addrs]
        return tuple(dict.fromkeys(out)), (ttl if out else NEGATIVE_TTL)

    async def _addresses(self, name: str) -> tuple[list[str], float]:
        if is_ip(name):
            return [name], FALLBACK_TTL
        found: list[str] = []
        ttl = FALLBACK_TTL
        for rtype in ("A", "AAAA"):
            ans = await self._query(name, rtype)
            if ans is not None and ans.records:
                found += [str(r) for r in ans.records]
                ttl = min(ttl, ans.ttl)
        if found:
            return found, ttl
        try:  # the hosts file (and what else the system resolver knows)
            infos = await self._getaddrinfo(name, None, type=socket.SOCK_DGRAM)
        except OSError:
            return [], NEGATIVE_TTL
        return list(dict.fromkeys(str(i[4][0]) for i in infos)), FALLBACK_TTL


async def dns_query(name: str, rtype: str) -> Answer | None:
    """One DNS query through dnspython (trio backend); None when nothing is there."""
    import dns.asyncresolver
    import dns.exception

    try:
        ans = await dns.asyncresolver.resolve(name, rtype, lifetime=LOOKUP_TIMEOUT)
    except dns.exception.DNSException:  # no such name or record, no server, timeout
        return None
    ttl = float(ans.rrset.ttl) if ans.rrset is not None else FALLBACK_TTL
    if rtype == "SRV":
        return Answer(tuple(Srv(r.priority, r.weight, r.port, r.target.to_text())
                            for r in ans), ttl)
    return Answer(tuple(r.to_text() for r in ans), ttl)
