"""The dial plan: a pure function from (snapshot, caller, dialed) to a Route.

First cut: local users by exact number; everything else is "not found". The
full manual dial plan (analyze caller/called, longest prefix, call rights,
transitions, outgroup prefix) replaces the body of ``route_call``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class RouteKind(enum.Enum):
    LOCAL_USER = "local_user"
    EXTERNAL_LINE = "external_line"
    OUTGOING_GROUP = "outgoing_group"
    ROUTING_GROUP = "routing_group"
    SIP_TRUNK = "sip_trunk"
    SERVICE = "service"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    target: str = ""  #: user name, line/trunk/group id, or service name
    number: str = ""  #: the called number after transitions
    status: int = 0  #: for REJECT: the SIP status to answer
    reason: str = ""


def route_call(snapshot: Any, caller: str, dialed: str) -> Route:
    if dialed in snapshot.users:
        return Route(RouteKind.LOCAL_USER, dialed, dialed)
    return Route(RouteKind.REJECT, status=404, reason="Number not found")
