"""Who sent a request: a user trusted by address, or one proved by digest.

INVITE, SUBSCRIBE, PUBLISH and MESSAGE are authenticated alike (407, like
REGISTER's 401): the From user must be the user whose credentials answered the
challenge, or a user whose ``allowed_ips`` hold the request's source address
(FEATURES.md: a user may be authorized by address instead of REGISTER).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from ..sip.message import Request, Response, make_response, new_tag
from ..sip.peer import Peer
from .registrar import Registrar


def trusted(host: str, networks: tuple[str, ...]) -> bool:
    """Is ``host`` in one of a user's ``allowed_ips`` (addresses or networks)?"""
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in _network(n) for n in networks)


@lru_cache(maxsize=4096)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An ``allowed_ips`` entry, parsed once (not per request): entries are configuration
    text, so the cache holds what users.yaml names, and a reload's new text is parsed
    anew; the bound only keeps a huge configuration from growing it further."""
    return ipaddress.ip_network(text, strict=False)


class Identity:
    def __init__(self, registrar: Registrar, users: Callable[[], Mapping[str, Any]]) -> None:
        self.registrar = registrar
        self.users = users

    def challenge(self, req: Request, peer: Peer, now: float) -> Response | None:
        """The 407 for a request without credentials, or None for a sender trusted
        by address (it goes on to a transaction like any authenticated request)."""
        u = self.users().get(req.from_addr.uri.user or "")
        if u is not None and trusted(peer.host, u.allowed_ips):
            return None
        auth = self.registrar.authenticate(req, peer, now, proxy=True)
        return auth if isinstance(auth, Response) else None

    def sender(self, req: Request, peer: Peer, now: float) -> str | Response:
        """The user the request comes from, or the response to send (407/403)."""
        from_user = req.from_addr.uri.user or ""
        u = self.users().get(from_user)
        if u is not None and trusted(peer.host, u.allowed_ips):
            return from_user
        auth = self.registrar.authenticate(req, peer, now, proxy=True)
        if isinstance(auth, Response):
            return auth
        if (auth != from_user and from_user) or auth not in self.users():
            # (a line's gateway account authenticates its REGISTER, but is no user)
            return make_response(req, 403, "Authenticated user does not match From",
                                 to_tag=new_tag())
        return auth
