"""What one B-leg is: everything a Call needs to send its INVITE and carry it through.

The call controller makes one ``LegSpec`` per target: a local user's device
(``device_spec``), or an outside number through a line or trunk
(``pbx/lines/outgoing.py``). The Call builds the INVITE from it, answers a
401/407 with its credentials, and knows from ``exit`` which line's limits and
CDR the leg belongs to. A plain frozen value: no sockets, no clock.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..sip.peer import Peer


@dataclass(frozen=True, slots=True)
class LegSpec:
    uri: str  #: the Request-URI
    peer: Peer  #: first hop: the device, the provider, or the outbound proxy
    to: str  #: the To header value (no tag)
    from_uri: str  #: the URI of our From header
    display: str = ""  #: From's display name ("" = none)
    contact_user: str = ""  #: user part of our Contact on this leg
    callee: str = ""  #: who the leg reaches: a user name, or the number sent out
    headers: tuple[tuple[str, str], ...] = ()  #: extra headers (Route to an outbound proxy)
    #: (username, password) answering the peer's 401/407; None = a challenge fails the leg
    credentials: tuple[str, str] | None = None
    strip_100rel: bool = False  #: offer no 100rel on this leg (provider chokes on it)
    exit: str = ""  #: the line or trunk this leg leaves on; "" = a local device
    caller_number: str = ""  #: the caller number this leg presents (for the CDR)
    no_answer_time: float = 0.0  #: ringing limit on this leg (s); 0 = the call's
    max_duration: float = 0.0  #: talk limit once this leg answers (s); 0 = the call's
