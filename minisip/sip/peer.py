"""Where a message came from or goes to: the transport-neutral address the layers share."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    transport: str  #: "udp", "tcp" or "tls" (lower case)
    host: str  #: IP address as text, IPv6 without brackets
    port: int

    @property
    def reliable(self) -> bool:
        # RFC 3261 17.1.1.2 / 17.2.1: no retransmissions over TCP/TLS, zero wait timers.
        return self.transport != "udp"
