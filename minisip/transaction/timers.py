"""RFC 3261 transaction timers, named exactly as in its Table 4 (plus RFC 6026).

The three base values are configurable (``system.timers`` in the YAML); every
timer is derived from them here and nowhere else::

    Timer  Value                    Section     Meaning
    -----  -----------------------  ----------  ----------------------------------------
    T1     500 ms default           17.1.1.1    RTT estimate
    T2     4 s                      17.1.2.2    maximum retransmit interval for
                                                non-INVITE requests and INVITE responses
    T4     5 s                      17.1.2.2    maximum duration a message will remain
                                                in the network
    A      initially T1             17.1.1.2    INVITE request retransmit interval,
                                                unreliable transports only (doubles)
    B      64*T1                    17.1.1.2    INVITE transaction timeout timer
    D      > 32 s for UDP, 0 TCP    17.1.1.2    wait time for response retransmits
    E      initially T1             17.1.2.2    non-INVITE request retransmit interval,
                                                unreliable only (doubles up to T2)
    F      64*T1                    17.1.2.2    non-INVITE transaction timeout timer
    G      initially T1             17.2.1      INVITE response retransmit interval
                                                (unreliable only, doubles up to T2)
    H      64*T1                    17.2.1      wait time for ACK receipt
    I      T4 for UDP, 0 TCP        17.2.1      wait time for ACK retransmits
    J      64*T1 for UDP, 0 TCP     17.2.2      wait time for non-INVITE request
                                                retransmits
    K      T4 for UDP, 0 TCP        17.1.2.2    wait time for response retransmits
    L      64*T1                    RFC 6026 8  wait time for accepted INVITE request
                                                retransmits (IST "Accepted")
    M      64*T1                    RFC 6026 8  wait time for retransmission of 2xx to
                                                INVITE or additional 2xx from other
                                                branches of a forked INVITE (ICT
                                                "Accepted")

Timer C (proxy INVITE timeout, > 3 min) belongs to a proxy core, not to this
layer, and is not defined. The timers whose value depends on the transport
(D, I, J, K) are methods taking ``reliable``; the others are properties.
"""
from __future__ import annotations

from dataclasses import dataclass

#: RFC 3261 17.1.1.2: Timer D is "at least 32 seconds" for unreliable transports,
#: a fixed figure rather than a multiple of T1.
TIMER_D_UNRELIABLE = 32.0


@dataclass(frozen=True, slots=True)
class Timers:
    t1: float = 0.5  #: RTT estimate (s)
    t2: float = 4.0  #: maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  #: maximum time a message stays in the network

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0:
            raise ValueError(f"bad SIP timers: T1={self.t1} T2={self.t2} T4={self.t4}")

    @property
    def A(self) -> float:  # noqa: N802 (RFC name)
        """Initial INVITE retransmit interval (unreliable transports only)."""
        return self.t1

    @property
    def B(self) -> float:  # noqa: N802
        """INVITE client transaction timeout."""
        return 64 * self.t1

    def D(self, reliable: bool) -> float:  # noqa: N802
        """ICT Completed: wait for response retransmissions.

        "At least 32 seconds": the server keeps retransmitting its final
        response for up to Timer H = 64*T1 of *its* T1, so a T1 configured
        above 500 ms stretches D with it; a smaller T1 never shrinks it.
        """
        return 0.0 if reliable else max(TIMER_D_UNRELIABLE, 64 * self.t1)

    @property
    def E(self) -> float:  # noqa: N802
        """Initial non-INVITE retransmit interval (unreliable transports only)."""
        return self.t1

    @property
    def F(self) -> float:  # noqa: N802
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def G(self) -> float:  # noqa: N802
        """Initial INVITE final-response retransmit interval (unreliable only)."""
        return self.t1

    @property
    def H(self) -> float:  # noqa: N802
        """IST Completed: wait for the ACK."""
        return 64 * self.t1

    def I(self, reliable: bool) -> float:  # noqa: N802, E743
        """IST Confirmed: wait for ACK retransmissions."""
        return 0.0 if reliable else self.t4

    def J(self, reliable: bool) -> float:  # noqa: N802
        """NIST Completed: wait for request retransmissions."""
        return 0.0 if reliable else 64 * self.t1

    def K(self, reliable: bool) -> float:  # noqa: N802
        """NICT Completed: wait for response retransmissions."""
        return 0.0 if reliable else self.t4

    @property
    def L(self) -> float:  # noqa: N802
        """RFC 6026 IST Accepted: wait for INVITE retransmissions after a 2xx."""
        return 64 * self.t1

    @property
    def M(self) -> float:  # noqa: N802
        """RFC 6026 ICT Accepted: wait for 2xx retransmissions and forked 2xx."""
        return 64 * self.t1
