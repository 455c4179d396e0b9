"""The lines and trunks of the running PBX: registrations, addresses, usage, state.

The glue between the pure parts of this package and the PBX: it follows the
configuration (``configure`` on every snapshot: a removed line unregisters, a
changed line registers again), keeps the names of providers and trunks resolved,
answers the call controller (which line a request comes from, the leg for an
exit candidate), counts usage for the limits, and publishes each line's state on
the ``lines`` topic.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ...config.schema import Line, Snapshot
from ...sip.message import Request
from ...sip.peer import Peer
from ..dialplan import Route, outgoing_group_of, refine_for_exit
from ..legspec import LegSpec
from ..location import Binding, LocationService, device_peer, route_headers
from .dns import Key, Resolver
from .incoming import Origin, OriginIndex, build_index, identify, untrusted_trunk_port
from .outgoing import Refusal, first_hop, line_leg, trunk_leg
from .registration import LineRegistration, RegState
from .usage import Usage

log = logging.getLogger(__name__)

#: line keys whose change needs a new registration
_REGISTRATION_KEYS = ("type", "account", "password", "server", "port", "transport",
                      "authorization_id", "register_expires", "outbound_proxy",
                      "auth_user_with_domain", "do_not_register")


def registers(line: Line) -> bool:
    return line.type == 0 and not line.do_not_register


class LineManager:
    def __init__(self, pbx: Any, location: LocationService, snapshot: Callable[[], Snapshot],
                 resolver: Resolver | None = None) -> None:
        self.pbx = pbx
        self.location = location
        self.snapshot = snapshot
        self.resolver = resolver or Resolver(now=pbx.now)
        self.resolver.on_change = self._dns_changed
        self.usage = Usage()
        self.registrations: dict[str, LineRegistration] = {}
        self._lines: dict[str, Line] = {}
        self._index: OriginIndex | None = None
        self._published: dict[str, tuple[str, str]] = {}
        #: sends what the layers queued; set by the server (DNS answers come outside a batch)
        self.flush: Callable[[], None] = lambda: None

    # -- configuration ----------------------------------------------------------------
    def configure(self, snap: Snapshot) -> None:
        """Follow a new snapshot: start, restart and stop registrations. A changed line
        registers anew only once its old registration is gone (an unregistration
        racing the new registration could remove the new binding)."""
        self._lines = dict(snap.lines)
        for name, reg in list(self.registrations.items()):
            line = snap.lines.get(name)
            if line is None or not registers(line) or _changed(reg.line, line):
                reg.stop()  # _registration_state forgets it once STOPPED
            else:
                reg.line = line  # the same registration; other keys (limits...) changed
        for name in snap.lines:
            self._ensure(name)
        for name in [n for n in self._published if n not in snap.lines]:
            del self._published[name]
            self.pbx.publish("lines", "line_state", {"line": name, "state": "removed",
                                                     "reason": "removed"})
        keys = set(self._keys(snap))
        self.resolver.retain(keys)
        self.resolver.want(sorted(keys))
        self._index = None
        for name in snap.lines:
            self._publish(name)

    def _ensure(self, name: str) -> None:
        line = self._lines.get(name)
        if line is not None and registers(line) and name not in self.registrations:
            reg = self.registrations[name] = LineRegistration(
                name, line, pbx=self.pbx, peers=self.resolver.peers,
                on_state=self._registration_state)
            reg.start()

    @staticmethod
    def _keys(snap: Snapshot) -> list[Key]:
        keys: list[Key] = []
        for line in snap.lines.values():
            if line.type == 0:
                keys.append((line.server.lower(), line.port, line.transport))
                if line.outbound_proxy.enabled:
                    host, port = first_hop(line)
                    keys.append((host.lower(), port, line.transport))
        keys += [(t.address.lower(), t.port, t.transport) for t in snap.trunks.values()]
        return keys

    def _dns_changed(self, key: Key) -> None:
        self._index = None
        for reg in list(self.registrations.values()):
            host, port = first_hop(reg.line)
            if (host.lower(), port, reg.line.transport) == key:
                reg.dns_changed()
        self.flush()

    def gateway_changed(self, account: str) -> None:
        """A type 1 gateway registered or went away (the location service says)."""
        self._index = None
        for name, line in self.snapshot().lines.items():
            if line.type == 1 and line.account == account:
                self._publish(name)

    def gateway_account(self, user: str) -> Line | None:
        """The type 1 line whose gateway registers as ``user`` (a user name wins)."""
        snap = self.snapshot()
        if user in snap.users:
            return None
        for line in snap.lines.values():
            if line.type == 1 and line.account == user:
                return line
        return None

    def stop(self) -> None:
        """Shutdown: unregister every line; none registers again (a stopped registration
        of a line still configured would start anew)."""
        self._lines = {}
        for reg in list(self.registrations.values()):  # (a stop may remove it at once)
            reg.stop()

    # -- state ------------------------------------------------------------------------------
    def _registration_state(self, reg: LineRegistration) -> None:
        if self.registrations.get(reg.name) is not reg:
            return
        if reg.state is RegState.STOPPED:
            del self.registrations[reg.name]
            self._ensure(reg.name)  # a changed line: its new registration starts now
        self._publish(reg.name)

    def state(self, name: str) -> tuple[str, str]:
        """(online | offline | registering, reason) of line ``name``."""
        line = self._lines.get(name)
        if line is None:
            return "removed", "removed"
        if line.type == 1:
            b = self._gateway(line)
            return (("online", f"gateway registered from {b.source.host}:{b.source.port}")
                    if b is not None else ("offline", "gateway not registered"))
        if line.do_not_register:
            return "online", "does not register (do_not_register)"
        reg = self.registrations.get(name)
        if reg is None:
            return "offline", "not registered"
        state = reg.state.value if reg.state is not RegState.UNREGISTERING else "offline"
        return state, reg.reason

    def _publish(self, name: str) -> None:
        st = self.state(name)
        if self._published.get(name) != st:
            self._published[name] = st
            self.pbx.publish("lines", "line_state", {"line": name, "state": st[0],
                                                     "reason": st[1]})

    def states(self) -> list[dict[str, Any]]:
        out = []
        for name, line in self.snapshot().lines.items():
            state, reason = self.state(name)
            reg = self.registrations.get(name)
            out.append({"line": name, "type": line.type, "state": state, "reason": reason,
                        "expires": reg.remaining() if reg is not None else 0,
                        "registrations": reg.registrations if reg is not None else 0,
                        "calls": self.usage.calls.get(name, 0),
                        "outgoing": self.usage.outgoing.get(name, 0)})
        return out

    def trunk_states(self) -> list[dict[str, Any]]:
        return [{"trunk": name, "calls": self.usage.calls.get(name, 0)}
                for name in self.snapshot().trunks]

    # -- incoming ---------------------------------------------------------------------------
    def _gateway(self, line: Line) -> Binding | None:
        bindings = self.location.bindings(line.account)
        return max(bindings, key=lambda b: b.registered_at) if bindings else None

    def _sources(self, name: str) -> list[Peer]:
        snap = self.snapshot()
        trunk = snap.trunks.get(name)
        if trunk is not None:
            return list(self.resolver.peers(trunk.address, trunk.port, trunk.transport) or ())
        line = snap.lines[name]
        if line.type == 1:
            return [b.source for b in self.location.bindings(line.account)]
        out = list(self.resolver.peers(line.server, line.port, line.transport) or ())
        if line.outbound_proxy.enabled:
            host, port = first_hop(line)
            out += self.resolver.peers(host, port, line.transport) or ()
        return out

    def _origins(self) -> OriginIndex:
        if self._index is None:
            self._index = build_index(self.snapshot(), self._sources)
        return self._index

    def origin(self, req: Request, peer: Peer) -> Origin | None:
        """The line or trunk ``req`` comes from, or None (a user, or a stranger)."""
        snap = self.snapshot()
        if not snap.lines and not snap.trunks:
            return None
        return identify(self._origins(), snap, peer,
                        (req.request_uri.user or "", req.to_addr.uri.user or ""))

    def untrusted_trunk(self, peer: Peer) -> str | None:
        """A trunk whose host ``peer`` is, though ``peer`` is not the trunk (wrong port)."""
        if not self.snapshot().trunks:
            return None
        return untrusted_trunk_port(self._origins(), peer)

    # -- outgoing ---------------------------------------------------------------------------
    def leg(self, name: str, route: Route, *, local_host: Callable[[Peer], str],
            domain: str) -> tuple[LegSpec, Route] | Refusal:
        """The leg of ``route`` through candidate ``name``, with the route refined for
        its outgoing group; or why ``name`` cannot take the call now."""
        snap = self.snapshot()
        line, trunk = snap.lines.get(name), snap.trunks.get(name)
        exit_ = line or trunk
        if exit_ is None:
            return 503, f"{name} is no longer configured"
        refused = self.usage.refusal(name, exit_, outgoing=True)
        if refused is not None:
            return refused
        refined = refine_for_exit(snap, route, outgoing_group_of(snap, name))
        if trunk is not None:
            peers = self.resolver.peers(trunk.address, trunk.port, trunk.transport)
            if not peers:
                return 503, f"Trunk {name}: {trunk.address} " + (
                    "not resolved yet" if peers is None else "does not resolve")
            return trunk_leg(name, trunk, refined.number, refined.caller_number, peers[0],
                             local_host=local_host(peers[0])), refined
        assert line is not None
        state, reason = self.state(name)
        if state != "online":
            return 503, f"Line {name} {state}: {reason}"
        if line.type == 1:
            b = self._gateway(line)
            assert b is not None
            return line_leg(name, line, refined.number, refined.caller_number, device_peer(b),
                            gateway_contact=b.contact, gateway_route=route_headers(b),
                            domain=domain), refined
        host, port = first_hop(line)
        peers = self.resolver.peers(host, port, line.transport)
        if not peers:
            return 503, f"Line {name}: {host} " + (
                "not resolved yet" if peers is None else "does not resolve")
        return line_leg(name, line, refined.number, refined.caller_number, peers[0]), refined


def _changed(old: Line, new: Line) -> bool:
    return any(getattr(old, k) != getattr(new, k) for k in _REGISTRATION_KEYS)
