"""A call's media relay: when to use one, and the SDP each party sees.

The decision (``needs_relay``) follows system.yaml's ``relay_media``: always,
never, or auto = when the caller or callee has ``relay_media`` set, or a party
looks NATed (the address in its SDP, or in its Contact, is not the address its
SIP arrives from). A relayed call owns a ``RelaySession``: every SDP going to
the callee names leg B's port, every SDP going to the caller leg A's, and each
party's own SDP address is given to its leg as a latching hint.
"""
from __future__ import annotations

import logging
from typing import Any

from ..media.relay import MediaIO, PortPool, PortsExhausted, RelaySession
from ..media.sdp_media import MediaDescription, parse_sdp_untrusted, rewrite_sdp
from ..sip.errors import BadMessage
from ..sip.peer import Peer

log = logging.getLogger(__name__)


def sdp_audio(body: bytes) -> MediaDescription | None:
    """The first active audio stream of an SDP body, or None."""
    if not body:
        return None
    try:
        return parse_sdp_untrusted(body).audio()
    except BadMessage:
        return None


def sdp_address(body: bytes) -> tuple[str, int] | None:
    """(connection address, port) of the SDP's audio, None if absent or on c=0 hold."""
    m = sdp_audio(body)
    return m.rtp_address if m is not None else None


def looks_nated(body: bytes, peer: Peer) -> bool:
    where = sdp_address(body)
    return where is not None and where[0] not in (peer.host, "0.0.0.0", "::")


def needs_relay(policy: str, flagged: bool, a_body: bytes, a_peer: Peer,
                b_contacts: list[tuple[str, Peer]]) -> bool:
    if policy == "never":
        return False
    if policy == "always" or flagged:
        return True
    if looks_nated(a_body, a_peer):
        return True
    return any(peer.host not in contact for contact, peer in b_contacts)


class CallMedia:
    """The relay of one call and the SDP rewriting around it."""

    def __init__(self, session: RelaySession, a_address: str, b_address: str) -> None:
        self.session = session
        self.address = {"A": a_address, "B": b_address}  # what each party is told

    @classmethod
    def open(cls, io: MediaIO, pool: PortPool, bind: str, a_address: str, b_address: str,
             call_id: str) -> CallMedia | None:
        try:
            return cls(RelaySession(io, pool, bind, call_id=call_id), a_address, b_address)
        except (PortsExhausted, OSError) as exc:
            log.warning("call %s: no media relay (%s); media goes direct", call_id, exc)
            return None

    def sdp_from(self, side: str, body: bytes) -> bytes:
        """``side``'s SDP, on its way to the other party: learn, then rewrite."""
        if not body:
            return body
        leg = self.session.leg(side)
        other = "B" if side == "A" else "A"
        try:
            m = sdp_audio(body)
            if m is not None and m.rtp_address is not None:
                leg.set_remote(m.rtp_address, m.rtcp_target)
            out = self.session.leg(other)
            return rewrite_sdp(body, self.address[other], [out.rtp_port])
        except (BadMessage, ValueError) as exc:
            log.info("call %s: SDP from %s not relayed (%s)", self.session.call_id, side, exc)
            return body

    def idle_seconds(self) -> float:
        return self.session.idle_seconds()

    def stats(self) -> dict[str, Any]:
        return self.session.stats()

    def close(self) -> None:
        self.session.close()
