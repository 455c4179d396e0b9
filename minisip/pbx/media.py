"""A call's media relay: when to use one, and the SDP each party sees.

The decision (``needs_relay``) follows system.yaml's ``relay_media``: always,
never, or auto = when the caller or callee has ``relay_media`` set, a party
looks NATed (the address in its SDP, or in its Contact, is not the address its
SIP arrives from), or the two parties speak different address families (an
IPv4 phone cannot send RTP to an IPv6-only one: the relay, on both, can). A
relayed call owns a ``RelaySession``: every SDP going to the callee names leg
B's port, every SDP going to the caller leg A's, and each party's own SDP
address is given to its leg as a latching hint.

A call whose media goes direct gets a relay for the time of a hold
(``hold_only``): the held party is re-INVITEd to the relay and hears music
on hold from it, and the resume re-INVITE sends both parties back to each
other (the relay closes). Music on hold and every prompt are tracks on the
server's one :class:`~minisip.media.pacer.Pacer`: no task per held call.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..config.schema import Snapshot
from ..media.dtmf import DtmfDigit, DtmfReceiver
from ..media.pacer import Pacer, Track
from ..media.player import Player
from ..media.prompts import prompt_path
from ..media.relay import MediaIO, PortPool, PortsExhausted, RelaySession
from ..sip.errors import BadMessage
from ..sip.peer import Peer
from ..sip.sdp import Media, parse_sdp_untrusted, rewrite_for_relay_untrusted
from ..sip.uri import parse_uri_untrusted

log = logging.getLogger(__name__)


def sdp_audio(body: bytes) -> Media | None:
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


def sdp_on_hold(body: bytes) -> bool:
    """True when an SDP body puts its audio on hold; False for no or unreadable SDP."""
    if not body:
        return False
    try:
        return parse_sdp_untrusted(body).on_hold
    except BadMessage:
        return False


def looks_nated(body: bytes, peer: Peer) -> bool:
    """Does the SDP's audio address differ from where its SIP came from?"""
    if _c_lines_name_only(body, (peer.host.encode(), b"0.0.0.0", b"::")):
        return False  # the usual answer, without parsing the SDP
    where = sdp_address(body)
    return where is not None and where[0] not in (peer.host, "0.0.0.0", "::")


def _c_lines_name_only(body: bytes, addresses: tuple[bytes, ...]) -> bool:
    """Whether every c= line of ``body`` is well formed and names one of ``addresses``:
    then so does the audio's, whatever stream it is (the c= lines are found as
    ``parse_sdp_untrusted`` finds them, their address as ``Connection`` reads it)."""
    for line in body.splitlines():
        if line[:2] == b"c=":
            parts = line[2:].split()
            if len(parts) != 3 or parts[2].partition(b"/")[0] not in addresses:
                return False
    return True


def _contact_host(contact: str) -> str | None:
    try:
        return parse_uri_untrusted(contact).host
    except BadMessage:
        return None


def hold_music(snap: Snapshot) -> Path:
    """What held parties hear: services.yaml's music_on_hold_file (relative to the
    config directory), else the built-in music."""
    name = snap.services.music_on_hold_file
    if name:
        path = Path(name)
        path = path if path.is_absolute() else snap.config_dir / path
        if path.is_file():
            return path
        log.warning("music_on_hold_file %s not found: the built-in music plays", path)
    return prompt_path(snap.system.voice_prompts, "hold_music")


def needs_relay(policy: str, flagged: bool, a_body: bytes, a_peer: Peer,
                b_contacts: list[tuple[str, Peer]]) -> bool:
    if policy == "never":
        return False
    if policy == "always" or flagged:
        return True
    if looks_nated(a_body, a_peer):
        return True
    v6 = ":" in a_peer.host
    # A Contact host other than the REGISTER's source: behind NAT (compared whole:
    # 10.0.0.1 is not 10.0.0.10). A device of the other address family: unreachable.
    return any(_contact_host(contact) != peer.host or (":" in peer.host) != v6
               for contact, peer in b_contacts)


Spawn = Callable[..., None]  #: the call's start_task: players live in the call's nursery
OnDigit = Callable[[str, DtmfDigit], None]  #: (side the key was pressed on, digit)


def _other(side: str) -> str:
    return "B" if side == "A" else "A"


class CallMedia:
    """The relay of one call, the SDP rewriting around it, and what minisip adds to it:
    music on hold, and DTMF converted when the two parties signal keys differently
    (RFC 4733 events on one side, SIP INFO on the other)."""

    def __init__(self, session: RelaySession, a_address: str, b_address: str,
                 spawn: Spawn | None = None, pacer: Pacer | None = None) -> None:
        self.session = session
        self.address = {"A": a_address, "B": b_address}  # what each party is told
        self.spawn = spawn
        self.pacer = pacer
        #: the side whose hold on a direct-media call opened this relay ("A"/"B"); its
        #: resume closes it again. None: the call's media is relayed for good.
        self.hold_only: str | None = None
        self.audio: dict[str, Media | None] = {"A": None, "B": None}
        self._music: dict[str, Track] = {}  # side hearing music -> its pacer track
        #: music for a side whose SDP is not known yet (a party being re-INVITEd): it
        #: starts when the party's SDP says its codec and address
        self._music_pending: dict[str, Path] = {}
        self._players: dict[str, Player] = {}
        self.on_digit: OnDigit | None = None  #: set by the call: a key to pass on as INFO
        #: a break-in mixes the parties (pbx/conference.py): it owns the legs' taps
        self.conference: Any = None

    @classmethod
    def open(cls, io: MediaIO, pool: PortPool, bind: str, a_address: str, b_address: str,
             call_id: str, spawn: Spawn | None = None,
             pacer: Pacer | None = None) -> CallMedia | None:
        try:
            return cls(RelaySession(io, pool, bind, call_id=call_id), a_address, b_address,
                       spawn, pacer)
        except (PortsExhausted, OSError) as exc:
            log.warning("call %s: no media relay (%s); media goes direct", call_id, exc)
            return None

    # -- DTMF -------------------------------------------------------------------------
    def event_type(self, side: str) -> int | None:
        """The telephone-event payload type ``side`` offered/answered, or None (INFO)."""
        m = self.audio[side]
        return m.event_payload_type() if m is not None else None

    def reconfigure(self) -> None:
        """The legs' taps as the parties' SDP wants them (after a conference)."""
        self._configure_dtmf()

    def _configure_dtmf(self) -> None:
        # Only a party sending RFC 4733 to one that cannot read it needs a listener.
        if self.conference is not None:
            return
        for side in ("A", "B"):
            pt = self.event_type(side)
            leg = self.session.leg(side)
            if (pt is not None and self.audio[_other(side)] is not None
                    and self.event_type(_other(side)) is None):
                leg.set_tap(partial(self._tap, DtmfReceiver(payload_type=pt), side))
            else:
                leg.set_tap(None)

    def _tap(self, receiver: DtmfReceiver, side: str, data: memoryview, now: float) -> bool:
        """Events become digits (then SIP INFO); they are not forwarded (RFC 3264 5.1:
        the other party did not accept telephone-event)."""
        digits = receiver.tap_untrusted(data, now)
        for digit in digits or ():
            if self.on_digit is not None:
                self.on_digit(side, digit)
        return digits is not None

    def wants_events(self, side: str) -> bool:
        """True when ``side`` reads keys as RFC 4733 but the other party sends INFO."""
        return self.event_type(side) is not None and self.event_type(_other(side)) is None

    def send_digit(self, side: str, digit: str, duration_ms: int = 100) -> None:
        """Play a key press to ``side`` as RFC 4733 events."""
        player = self._player(side)
        if player is not None and self.spawn is not None:
            self.spawn(player.send_dtmf, digit, max(40, min(duration_ms, 1000)))

    # -- music on hold ----------------------------------------------------------------
    def start_music(self, side: str, path: Path) -> None:
        """``side`` hears ``path`` in a loop instead of the other party (who holds)."""
        if side in self._music or self.pacer is None:
            return
        player = self._player(side)
        if player is None:
            self._music_pending[side] = path
            return
        try:
            self._music[side] = player.start_loop(path)
        except (OSError, ValueError) as exc:  # a bad music_on_hold_file: silence, not a crash
            log.warning("call %s: music on hold %s not played: %s", self.session.call_id,
                        path, exc)
            return
        self.session.leg(_other(side)).mute(True)

    def stop_music(self, side: str) -> None:
        self._music_pending.pop(side, None)
        track = self._music.pop(side, None)
        if track is not None and self.pacer is not None:
            self.pacer.stop(track)
            self.session.leg(_other(side)).mute(False)

    def music_playing(self, side: str) -> bool:
        return side in self._music or side in self._music_pending

    def _player(self, side: str) -> Player | None:
        """A player sending to ``side`` from its relay socket, in its negotiated codec."""
        player = self._players.get(side)
        if player is None:
            m = self.audio[side]
            if m is None:
                return None
            codec = next((c for c in (m.encoding(pt) for pt in m.payload_types())
                          if c and c[0] in ("PCMU", "PCMA")), None)
            if codec is None:
                return None
            leg = self.session.leg(side)

            def send(packet: bytes) -> bool:
                dest = leg.remote
                if dest is None or self.session.closed:
                    return False
                try:
                    leg.rtp.sock.sendto(packet, dest)
                    return True
                except OSError:
                    return False

            player = Player(send, codec=codec[0], dtmf_payload_type=self.event_type(side),
                            pacer=self.pacer)
            self._players[side] = player
        return player

    def sdp_from(self, side: str, body: bytes) -> bytes:
        """``side``'s SDP, on its way to the other party: learn, then rewrite.

        When the other party signals keys as RFC 4733 events and ``side`` cannot
        (INFO only), the SDP it receives still offers telephone-event, with the
        other party's payload type: minisip itself reads those events and turns
        them into SIP INFO for ``side`` (RFC 3264 would otherwise forbid sending
        them, and the conversion could never happen)."""
        if not body:
            return body
        leg = self.session.leg(side)
        other = _other(side)
        try:
            m = sdp_audio(body)
            if m is not None:
                self.audio[side] = m
                self._players.pop(side, None)  # codec or address may have changed
                self._configure_dtmf()
                if m.rtp_address is not None:
                    leg.set_remote(m.rtp_address, m.rtcp_target)
                if side in self._music_pending:
                    self.start_music(side, self._music_pending.pop(side))
            out = self.session.leg(other)
            body = rewrite_for_relay_untrusted(body, self.address[other], [out.rtp_port])
            theirs = self.audio[other]
            pt = theirs.event_payload_type() if theirs is not None else None
            if m is not None and pt is not None and m.event_payload_type() is None \
                    and pt not in m.payload_types():
                sd = parse_sdp_untrusted(body)
                audio = sd.audio()
                if audio is not None:
                    fmtp = theirs.fmtp.get(pt) if theirs is not None else None
                    audio.add_payload_type(pt, "telephone-event/8000", fmtp or "0-15")
                    body = sd.to_bytes()
            return body
        except (BadMessage, ValueError) as exc:
            log.info("call %s: SDP from %s not relayed (%s)", self.session.call_id, side, exc)
            return body

    def idle_seconds(self) -> float:
        return self.session.idle_seconds()

    def stats(self) -> dict[str, Any]:
        return self.session.stats()

    def close(self) -> None:
        for side in list(self._music):
            self.stop_music(side)
        self.session.close()
