"""Operator break-in: a third party joins an answered call, and minisip mixes.

The operator's INVITE (``*75*101``, or a call to busy 101 with the
``operator_break_in`` right) is answered from a media endpoint of its own next
to the call's relay. From then on the relay no longer forwards: what each of
the three parties sends is decoded (G.711, by payload type) into a mixer
(media/mixer.py), and every 20 ms each party gets the sum of the other two,
encoded in its own codec and sent from the socket it already talks to. A call
whose media went direct first gets a relay and its two parties are re-INVITEd
to it. When the operator hangs up, the relay forwards again; when either
original party hangs up, the call ends for all three.
"""
from __future__ import annotations

import logging
import random
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..media import g711
from ..media.endpoint import MediaEndpoint
from ..media.mixer import Mixer, run_mixer
from ..media.relay import PortsExhausted
from ..media.rtp import RtpPacket, RtpStream, parse_rtp_untrusted
from ..media.sdp_media import answer_offer_untrusted, make_offer, \
    negotiated_from_answer_untrusted
from ..sip.errors import BadMessage
from ..sip.message import Request, Response, make_response
from . import moves
from .call import Call, Leg, LegState

if TYPE_CHECKING:
    from .media import CallMedia

log = logging.getLogger(__name__)

_DECODERS = {0: g711.ulaw_decode, 8: g711.alaw_decode}
OPERATOR = "C"  #: the mixer's name for the third party (the relay's sides are A and B)


class Conference:
    """The mix of a call's two parties and the operator; handler of the operator's leg."""

    def __init__(self, call: Call, leg: Leg, endpoint: MediaEndpoint, address: str) -> None:
        assert call.media is not None
        self.call, self.leg, self.endpoint = call, leg, endpoint
        self.address = address  #: the operator's media address as it was told
        self.media: CallMedia = call.media
        self.mixer = Mixer(("A", "B", OPERATOR))
        self.scope = trio.CancelScope()
        self.streams = {side: RtpStream() for side in ("A", "B", OPERATOR)}
        self._codecs: dict[str, tuple[bytes, bytes, str]] = {}
        self.running = False

    # -- media ---------------------------------------------------------------------
    def start(self) -> None:
        media = self.media
        media.conference = self
        media.session.leg("A").set_tap(lambda data, now: self._heard("A", data))
        media.session.leg("B").set_tap(lambda data, now: self._heard("B", data))
        self.endpoint.consumers.append(lambda packet, now: self._push(OPERATOR, packet))
        if media.spawn is not None:
            media.spawn(self._run)
        self.running = True

    async def _run(self) -> None:
        outputs = {side: partial(self._say, side) for side in ("A", "B", OPERATOR)}
        with self.scope:
            await run_mixer(self.mixer, outputs)

    def _heard(self, side: str, data: memoryview) -> bool:
        try:
            self._push(side, parse_rtp_untrusted(bytes(data)))
        except BadMessage:
            pass
        return True  # nothing goes straight through any more: the mixer speaks

    def _push(self, side: str, packet: RtpPacket) -> None:
        decode = _DECODERS.get(packet.payload_type)
        if decode is not None and packet.payload:
            self.mixer.push(side, decode(packet.payload))

    def _codec(self, side: str) -> str:
        if side == OPERATOR:
            return self.endpoint.codec
        party = self.call.a if side == "A" else self.call.winner
        if party is None:
            return "PCMU"
        known = self._codecs.get(side)  # read again only when the party's SDP changed
        if known is None or known[0] is not party.sdp_in or known[1] is not party.sdp_out:
            known = (party.sdp_in, party.sdp_out, moves.codec_of(party))
            self._codecs[side] = known
        return known[2]

    def _say(self, side: str, pcm: bytes, due: float) -> None:
        codec = self._codec(side)
        packet = self.streams[side].audio(g711.CODECS[codec][0], g711.encoder_for(codec)(pcm),
                                          due)
        if side == OPERATOR:
            self.endpoint.send(packet)
            return
        leg = self.media.session.leg(side)
        dest = leg.remote
        if dest is not None and not self.media.session.closed:
            try:
                leg.rtp.sock.sendto(packet, dest)
            except OSError:
                pass

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.scope.cancel()
        self.endpoint.close()
        if self.media.conference is self:
            self.media.conference = None
            for side in ("A", "B"):
                self.media.session.leg(side).set_tap(None)
            self.media.reconfigure()

    # -- the operator's leg (Call.managed) -----------------------------------------------
    def on_request(self, leg: Leg, req: Request) -> Response:
        if req.method == "BYE":
            self.leave(leg)
            return make_response(req, 200)
        if req.method in ("INVITE", "UPDATE") and req.body:
            leg.sdp_in = req.body
            try:
                body, neg = answer_offer_untrusted(req.body, self.address,
                                                   self.endpoint.rtp_port,
                                                   session_id=random.getrandbits(31))
            except BadMessage:
                return make_response(req, 488)
            self.endpoint.configure(neg)
            resp = make_response(req, 200, headers=[("Content-Type", "application/sdp")])
            resp.body = leg.sdp_out = moves.with_origin(body, leg.sdp_out)
            return resp
        return make_response(req, 200)

    def on_ack(self, leg: Leg, req: Request) -> None:
        if req.body:  # the answer to the offer our 200 made (an offerless INVITE)
            leg.sdp_in = req.body
            try:
                self.endpoint.configure(negotiated_from_answer_untrusted(req.body))
            except BadMessage as exc:
                log.info("call %s: operator's answer unusable: %s", self.call.key, exc)

    def leave(self, leg: Leg) -> None:
        """The operator hangs up: the two parties talk through the relay again."""
        self.stop()
        leg.state = LegState.GONE
        self.call.talk(leg, False)
        self.call.managed.pop(leg, None)
        self.call.history.append(f"{leg.user} left")

    def close(self, leg: Leg) -> None:
        self.stop()


def break_in(call: Call, p: Call) -> None:
    """``p``'s caller, an operator, joins the answered ``call`` as a third party."""
    ctl = moves.controller(call)
    opened = moves.relayed(call)
    if ctl.media_io is None or ctl.port_pool is None:
        raise moves.CannotMove(503, "No media for a conference")
    address = ctl.core.local_address(p.a.peer)[0]
    try:
        endpoint = MediaEndpoint(ctl.media_io, ctl.port_pool, "::" if ":" in address
                                 else "0.0.0.0")
    except (PortsExhausted, OSError) as exc:
        raise moves.CannotMove(503, f"No media port for the operator ({exc})") from None
    offer_in = p.a.invite.body
    try:
        if offer_in:
            body, neg = answer_offer_untrusted(offer_in, address, endpoint.rtp_port,
                                               session_id=random.getrandbits(31))
            endpoint.configure(neg)
        else:
            body = make_offer(address, endpoint.rtp_port, session_id=random.getrandbits(31))
    except BadMessage as exc:
        endpoint.close()
        raise moves.CannotMove(488, str(exc) or "Not Acceptable Here") from None
    victim = call.winner.user if call.winner is not None else call.caller
    leg = moves.answer_joiner(call, p, OPERATOR, (), victim, body=body)
    conf = Conference(call, leg, endpoint, address)
    call.managed[leg] = conf
    call.b_legs.append(leg)
    leg.state = LegState.CONFIRMED
    assert leg.dialog is not None
    moves.controller(call).register_dialog(leg.dialog.id, call, leg)
    call.talk(leg, True)
    conf.start()
    for party in (call.a, call.winner):
        if party is not None and party.state is not LegState.GONE and (
                opened or moves.held(party)):
            moves.reoffer(call, party)
    call.history.append(f"broken into by {leg.user}")
