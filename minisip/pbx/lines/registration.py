"""A type 0 line's registration to its provider: one UAC loop per line, no task.

Theory of operation
-------------------
Each registering line has one :class:`LineRegistration`. It sends REGISTER
through the PBX's transaction layer (``send_request``) and waits on the PBX's
timer heap, so a thousand lines cost a thousand small objects, not tasks:

* ``2xx``: online for the expiry the provider granted (our Contact's
  ``expires``, else Expires, else what we asked); the refresh goes out
  :func:`refresh_delay` before that runs out, on the same Call-ID (RFC 3261
  10.2.4).
* ``401``/``407``: answered with the line's credentials; a second challenge to
  credentials that were not stale means the password is wrong: offline.
* ``423``: asked again with the provider's Min-Expires.
* anything else, a timeout or a transport error: offline with that reason, and
  the next attempt after :func:`retry_delay` (back-off; Retry-After wins).

``stop()`` unregisters (Expires: 0) a line that was online; the manager then
forgets it. State names and their transitions are ``_TRANSITIONS``.
"""
from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from typing import Any

from ...config.schema import Line
from ...sip.digest import authorization_for
from ...sip.digits import is_digits
from ...sip.errors import BadMessage
from ...sip.message import MAX_EXPIRES, Request, Response, new_call_id, new_tag
from ...sip.peer import Peer
from ..timers import Timer
from .outgoing import auth_username, first_hop, hostport, outbound_proxy_route

log = logging.getLogger(__name__)


class RegState(enum.Enum):
    OFFLINE = "offline"  #: not registered; an attempt is scheduled or waits for DNS
    REGISTERING = "registering"  #: a REGISTER is in flight
    ONLINE = "online"  #: registered; the refresh is scheduled
    UNREGISTERING = "unregistering"  #: Expires: 0 in flight (line removed or changed)
    STOPPED = "stopped"  #: done; the manager drops it


_TRANSITIONS: dict[RegState, frozenset[RegState]] = {
    RegState.OFFLINE: frozenset({RegState.REGISTERING, RegState.STOPPED}),
    RegState.REGISTERING: frozenset({RegState.ONLINE, RegState.OFFLINE,
                                     RegState.UNREGISTERING, RegState.STOPPED}),
    RegState.ONLINE: frozenset({RegState.UNREGISTERING, RegState.OFFLINE}),
    RegState.UNREGISTERING: frozenset({RegState.STOPPED}),
    RegState.STOPPED: frozenset(),
}

RETRY_BASE = 10.0  #: seconds before the first retry after a failure
RETRY_BASE_REFUSED = 60.0  #: ... after a 403/404 (the account itself is refused)
RETRY_MAX = 1800.0
MAX_CHALLENGES = 2  #: challenges answered in a row before the password counts as wrong


def refresh_delay(expires: float) -> float:
    """When to refresh a registration granted for ``expires`` seconds: a minute early,
    or halfway for short ones."""
    return max(expires / 2, expires - 60)


def retry_delay(failures: int, status: int, retry_after: int | None = None,
                jitter: float = 1.0) -> float:
    """Seconds before attempt ``failures + 1``: doubling from the base, capped;
    ``jitter`` (0.8..1) spreads many lines; a provider's Retry-After wins."""
    if retry_after is not None and retry_after > 0:
        return float(retry_after)
    base = RETRY_BASE_REFUSED if status in (403, 404) else RETRY_BASE
    return min(RETRY_MAX, base * 2 ** max(0, failures - 1)) * jitter


def _seconds(value: str | None) -> int | None:
    """A delta-seconds header value (Min-Expires, Retry-After), ASCII digits only."""
    v = (value or "").strip()
    return min(int(v), MAX_EXPIRES) if is_digits(v) and len(v) <= 10 else None


def granted_expires(resp: Response, contact_uri: str, asked: int) -> int:
    """The expiry the provider granted our Contact (RFC 3261 10.2.4)."""
    try:
        for c in resp.contacts:
            value = c.params.get("expires") or ""
            if str(c.uri) == contact_uri and is_digits(value):
                return min(int(value), MAX_EXPIRES) if len(value) <= 10 else MAX_EXPIRES
        if resp.expires is not None:
            return resp.expires
    except BadMessage:
        pass
    return asked


class LineRegistration:
    """One type 0 line's registration (see the module docstring)."""

    def __init__(self, name: str, line: Line, *, pbx: Any,
                 peers: Callable[[str, int, str], tuple[Peer, ...] | None],
                 on_state: Callable[[LineRegistration], None],
                 rand: Callable[[], float] = lambda: random.uniform(0.8, 1.0)) -> None:
        self.name, self.line = name, line
        self.pbx = pbx  #: send_request, timers, now, via_for, contact_for
        self._peers = peers
        self._on_state = on_state
        self._rand = rand
        self.state = RegState.OFFLINE
        self.reason = "not registered yet"
        self.call_id, self.tag, self.cseq = new_call_id(), new_tag(), 0
        self.expires = 0  #: granted by the provider
        self.registered_at: float | None = None  #: pbx.now() of the last 2xx
        self.failures = 0
        self.registrations = 0  #: 2xx received (refreshes included)
        self._asked = line.register_expires
        self._challenges = 0
        self._key: object = None
        self._timer: Timer | None = None
        self._peer: Peer | None = None
        self._contact = ""

    # -- state ----------------------------------------------------------------------
    def _set_state(self, new: RegState, reason: str) -> None:
        old = self.state
        if new is not old and new not in _TRANSITIONS[old]:
            raise RuntimeError(f"line {self.name}: {old.name} -> {new.name}")
        changed = (old, self.reason) != (new, reason)
        self.state, self.reason = new, reason
        if changed:
            log.info("line %s: %s -> %s (%s)", self.name, old.value, new.value, reason)
            self._on_state(self)

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.pbx.timers.schedule(self.pbx.now() + delay, fn)

    # -- driving ----------------------------------------------------------------------
    def start(self) -> None:
        """Register now (or as soon as the provider's name resolves). An online line
        stays online while its refresh is in flight."""
        if self.state in (RegState.STOPPED, RegState.UNREGISTERING, RegState.REGISTERING):
            return
        host, port = first_hop(self.line)
        peers = self._peers(host, port, self.line.transport)
        if peers is None:
            self._set_state(RegState.OFFLINE, f"resolving {host}")
            return  # the manager calls dns_changed() when DNS answers
        if not peers:
            self._fail(0, f"{host} does not resolve")
            return
        self._peer = peers[0]
        self._contact = self.pbx.contact_for(self._peer, self.line.account).strip("<>")
        self._challenges = 0
        self._send(self._asked)
        if self.state is RegState.OFFLINE:
            self._set_state(RegState.REGISTERING, self.reason if self.failures
                            else "registering")

    def dns_changed(self) -> None:
        if self.state is RegState.OFFLINE and (self.reason.startswith("resolving")
                                               or self.failures):
            self.start()

    def stop(self) -> None:
        """Unregister (when registered) and end."""
        if self._timer is not None:
            self._timer.cancel()
        if self.state in (RegState.ONLINE, RegState.REGISTERING) and self._peer is not None:
            self._challenges = 0
            self._send(0)
            self._set_state(RegState.UNREGISTERING, "unregistering")
        elif self.state is not RegState.UNREGISTERING:
            self._set_state(RegState.STOPPED, "removed")

    def _send(self, expires: int, auth: list[tuple[str, str]] | None = None) -> None:
        line, peer = self.line, self._peer
        assert peer is not None
        self.cseq += 1
        aor = f"<sip:{line.account}@{hostport(line.server, line.port, line.transport)}>"
        transport = "" if line.transport == "udp" else f";transport={line.transport}"
        uri = f"sip:{hostport(line.server, line.port, line.transport)}{transport}"
        headers = [("Via", self.pbx.via_for(peer)), ("Max-Forwards", "70"),
                   *outbound_proxy_route(line),
                   ("From", f"{aor};tag={self.tag}"), ("To", aor), ("Call-ID", self.call_id),
                   ("CSeq", f"{self.cseq} REGISTER"), ("Contact", f"<{self._contact}>"),
                   ("Expires", str(expires)), ("User-Agent", self.pbx.server_header),
                   *(auth or [])]
        self._key = self.pbx.send_request(Request("REGISTER", uri, headers), peer,
                                          self._on_response, self)

    def _on_response(self, _: object, resp: Response, key: object = None) -> None:
        if key is not self._key or resp.status < 200:
            return
        unregistering = self.state is RegState.UNREGISTERING
        asked = 0 if unregistering else self._asked
        if resp.status in (401, 407) and self._answer(resp, asked):
            return
        if unregistering:
            self._set_state(RegState.STOPPED, "removed")
            return
        if 200 <= resp.status < 300:
            self._registered(granted_expires(resp, self._contact, asked))
        elif resp.status == 423 and _seconds(resp.headers.get("Min-Expires")) is not None:
            self._asked = _seconds(resp.headers.get("Min-Expires")) or 0
            self._send(self._asked)
        else:
            retry = (resp.headers.get("Retry-After") or "").split()
            self._fail(resp.status, f"{resp.status} {resp.reason}",
                       _seconds(retry[0]) if retry else None)

    def _answer(self, resp: Response, expires: int) -> bool:
        """Resend with credentials for ``resp``'s challenge. False when we must not
        (an unregistration then just ends; a registration has failed already)."""
        line = self.line
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        challenges = resp.headers.get_all(header)
        stale = any("stale=true" in c.lower().replace(" ", "") for c in challenges)
        if line.password and challenges and (stale or self._challenges < MAX_CHALLENGES - 1):
            self._challenges += 1
            transport = "" if line.transport == "udp" else f";transport={line.transport}"
            uri = f"sip:{hostport(line.server, line.port, line.transport)}{transport}"
            name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            for challenge in challenges:
                try:
                    value = authorization_for(challenge, "REGISTER", uri,
                                              auth_username(line), line.password)
                except BadMessage:
                    continue  # an algorithm we do not speak: try the next challenge
                self._send(expires, [(name, value)])
                return True
            why = "no usable challenge"
        else:
            why = "no password set" if not line.password else "wrong credentials"
        if self.state is RegState.UNREGISTERING:
            return False
        self._fail(resp.status, f"{resp.status} {resp.reason}: {why}")
        return True

    def _registered(self, expires: int) -> None:
        self.expires, self.registered_at = expires, self.pbx.now()
        self.failures, self._challenges = 0, 0
        self.registrations += 1
        self._set_state(RegState.ONLINE, f"registered for {expires} s")
        self._schedule(refresh_delay(expires), self._refresh)

    def _refresh(self) -> None:
        if self.state is RegState.ONLINE:
            self.start()

    def _fail(self, status: int, reason: str, retry_after: int | None = None) -> None:
        self.failures += 1
        self.expires, self.registered_at = 0, None
        self._set_state(RegState.OFFLINE, reason)
        self._schedule(retry_delay(self.failures, status, retry_after, self._rand()),
                       self._retry)

    def _retry(self) -> None:
        if self.state is RegState.OFFLINE:
            self.start()

    # -- what the CLI shows ------------------------------------------------------------
    def remaining(self) -> int:
        if self.state is not RegState.ONLINE or self.registered_at is None:
            return 0
        return max(0, int(self.registered_at + self.expires - self.pbx.now() + 0.5))
