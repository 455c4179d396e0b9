"""Which line or trunk a request comes from, and where its call goes (pure).

A call from the outside world is recognised by where it comes from, never by
what it says about itself:

* a **type 0 line**: from its provider, i.e. an address of its ``server`` (or of
  its outbound proxy) at that port;
* a **type 1 line**: from the address and port its gateway registered from;
* a **SIP trunk**: from its ``address``, at its ``port`` unless ``match_port`` is
  false.

When several lines share one provider address, the line whose account is the
Request-URI's (or To's) user wins, else the first in lines.yaml. A request from
a trunk's host at another port (``match_port``) that does not come from a local
user is refused (403): the trunk's address is known, the sender is not the trunk.

An identified call is not challenged: it goes to ``incoming.destination_number``
(blank: the number dialled) through the dial plan, the caller being an outside
number, or to the automatic attendant.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ...config.schema import Line, Snapshot, Trunk
from ...sip.peer import Peer
from ..dialplan import Route, RouteKind, route_call


@dataclass(frozen=True, slots=True)
class Origin:
    name: str  #: the line or trunk
    exit: Line | Trunk

    @property
    def kind(self) -> str:
        return "line" if isinstance(self.exit, Line) else "trunk"


@dataclass(frozen=True, slots=True)
class OriginIndex:
    """Source addresses -> the lines and trunks they stand for, built once per change."""
    exact: Mapping[tuple[str, int], tuple[str, ...]]  #: (host, port) -> names
    any_port: Mapping[str, tuple[str, ...]]  #: host -> trunks without match_port
    trunk_hosts: Mapping[str, tuple[str, ...]]  #: host -> trunks (the 403 rule)


def build_index(snap: Snapshot, peers_of: Callable[[str], Iterable[Peer]]) -> OriginIndex:
    """``peers_of(name)``: the addresses a line or trunk sends from (resolved)."""
    exact: dict[tuple[str, int], list[str]] = {}
    any_port: dict[str, list[str]] = {}
    hosts: dict[str, list[str]] = {}
    for name in (*snap.lines, *snap.trunks):
        trunk = snap.trunks.get(name)
        for p in peers_of(name):
            if trunk is not None:
                hosts.setdefault(p.host, []).append(name)
                if not trunk.match_port:
                    any_port.setdefault(p.host, []).append(name)
                    continue
            exact.setdefault((p.host, p.port), []).append(name)
    return OriginIndex({k: tuple(dict.fromkeys(v)) for k, v in exact.items()},
                       {k: tuple(dict.fromkeys(v)) for k, v in any_port.items()},
                       {k: tuple(dict.fromkeys(v)) for k, v in hosts.items()})


def identify(index: OriginIndex, snap: Snapshot, peer: Peer,
             users: Iterable[str] = ()) -> Origin | None:
    """The line or trunk ``peer`` is (``users``: the Request-URI and To users, to
    choose among lines sharing a provider)."""
    names = index.exact.get((peer.host, peer.port)) or index.any_port.get(peer.host)
    if not names:
        return None
    wanted = set(users)
    for name in names:
        line = snap.lines.get(name)
        if line is not None and line.account in wanted:
            return Origin(name, line)
    name = names[0]
    return Origin(name, snap.lines.get(name) or snap.trunks[name])


def untrusted_trunk_port(index: OriginIndex, peer: Peer) -> str | None:
    """The trunk whose host ``peer`` is, when ``peer`` is not that trunk (its port
    differs); None otherwise."""
    names = index.trunk_hosts.get(peer.host)
    return names[0] if names else None


def incoming_route(snap: Snapshot, origin: Origin, caller: str, dialed: str) -> Route:
    """Where a call from ``caller`` arriving on ``origin`` for ``dialed`` goes."""
    incoming = origin.exit.incoming
    if incoming.transfer_to == "auto_attendant":
        return Route(RouteKind.SERVICE, "auto_attendant", dialed, caller_number=caller)
    return route_call(snap, caller, incoming.destination_number or dialed, local=False)
