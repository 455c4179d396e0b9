"""Where a message came from or goes to: the transport-neutral address the layers share."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    transport: str  #: "udp", "tcp" or "tls" (lower case)
    host: str  #: IP address as text, IPv6 without brackets
    port: int

    def __str__(self) -> str:
        """``udp:192.0.2.7:5060``, ``udp:[2001:db8::7]:5060``: the port never merges
        into an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    @property
    def reliable(self) -> bool:
        # RFC 3261 17.1.1.2 / 17.2.1: no retransmissions over TCP/TLS, zero wait timers.
        return self.transport != "udp"
