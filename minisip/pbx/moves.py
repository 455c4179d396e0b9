"""Moving a party from one call to another: what transfer, park, pick-up, join and
break-in share.

Theory of operation
-------------------
A call (pbx/call.py) has two positions: side A (``call.a``, its relay leg "A") and
side B (``call.winner``, relay leg "B"). A move takes the party of a leg out of one
call (:func:`detach`) and puts it in a position of another (:func:`place`), or makes
it the caller of a new call (:func:`split`, blind transfer), or answers the caller
of a new INVITE into a position of a live call (:func:`answer_joiner`: pick-up,
retrieve, join, Replaces). The counters follow the parties: a leg counts its user as
talking while it is in a call (``Call.talk``); the caller of a call is counted by
the controller until it leaves (``caller_left``).

Media: a moved call's media always goes through minisip's relay, so that one side
can change without the other noticing. When a party moves into a call, or a call
that had direct media gets a relay, minisip re-INVITEs the party that stays or
arrives with its own offer (:func:`reoffer`: the relay's address, sendrecv, which
also takes a party off hold) with one G.711 codec, the one the party staying in
the call already uses, so both ends of the relay speak the same codec (minisip
relays, it does not transcode). A new INVITE joining a call is answered the same
way. The o= line of every offer continues the last one the party received.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..media.prompts import prompt_path
from ..media.sdp_media import (
    answer_offer_untrusted, event_payload_type_untrusted, g711_codecs_untrusted, make_offer,
    session_codec_untrusted, with_origin,
)
from ..sip.errors import BadMessage
from ..sip.message import Response, new_call_id
from ..sip.sdp import parse_sdp_untrusted
from ..sip.peer import Peer
from .call import NOBODY, Call, CallState, Leg, LegState

if TYPE_CHECKING:
    from .calls import CallController

log = logging.getLogger(__name__)

#: a re-INVITE that meets another (491) is tried again after 0.5-2 s, at most this often
GLARE_RETRIES = 3


class CannotMove(Exception):
    """A move is impossible (no relay port, no common codec): ``status`` for the answer."""
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def controller(call: Call) -> CallController:
    return call.pbx  # type: ignore[return-value]


def codec_of(leg: Leg) -> str:
    """The G.711 codec ``leg``'s party speaks now (PCMU when its SDP says nothing)."""
    try:
        return session_codec_untrusted(leg.sdp_in, leg.sdp_out) or "PCMU"
    except BadMessage:
        return "PCMU"


def _codecs(leg: Leg) -> tuple[str, ...]:
    try:
        return tuple(g711_codecs_untrusted(leg.sdp_in)) or ("PCMU", "PCMA")
    except BadMessage:
        return ("PCMU", "PCMA")


def _event_pt(body: bytes) -> int | None:
    try:
        return event_payload_type_untrusted(body) if body else 101
    except BadMessage:
        return None


def hold_music(call: Call) -> None:
    """The caller (side A) hears music on hold while it waits for its next party."""
    media = call.media
    if media is not None and not media.music_playing("A"):
        lang = controller(call).snapshot().system.voice_prompts
        media.start_music("A", prompt_path(lang, "hold_music"))


def relayed(call: Call, b_peer: Peer | None = None) -> bool:
    """Give ``call`` a relay if it has none; True when it had to (its parties' media
    went direct and must be re-INVITEd to it). CannotMove when no relay can open."""
    if call.media is not None:
        call.media.hold_only = None  # a relay opened for a hold stays: the call moves
        return False
    if not controller(call).open_relay(call, b_peer):
        raise CannotMove(503, "No media relay for the move")
    return True


def offer(call: Call, side: str, codecs: tuple[str, ...], event_pt: int | None) -> bytes:
    """minisip's offer for the party on ``side``: the relay's address, sendrecv."""
    media = call.media
    assert media is not None
    return make_offer(media.address[side], media.session.leg(side).rtp_port,
                      session_id=random.getrandbits(31), codecs=codecs,
                      dtmf_payload_type=event_pt)


def answer(call: Call, side: str, offer_in: bytes, codecs: tuple[str, ...]) -> bytes:
    """minisip's answer to ``offer_in`` from the party on ``side`` (its offer when
    ``offer_in`` is empty: the ACK brings the answer). Raises CannotMove (488)."""
    media = call.media
    assert media is not None
    if not offer_in:
        return offer(call, side, codecs, 101)
    try:
        body, _ = answer_offer_untrusted(offer_in, media.address[side],
                                         media.session.leg(side).rtp_port,
                                         session_id=random.getrandbits(31), codecs=codecs)
    except BadMessage as exc:
        raise CannotMove(488, str(exc) or "Not Acceptable Here") from None
    media.sdp_from(side, offer_in)  # where the party's media comes from
    return body


def reoffer(call: Call, leg: Leg, codecs: tuple[str, ...] | None = None,
            done: Callable[[bool], None] | None = None, attempt: int = 0) -> None:
    """re-INVITE ``leg``'s party with minisip's offer for its relay side (``codecs``:
    the ones it may pick; default its own G.711 codecs); ``done(ok)`` when answered."""
    if leg.dialog is None or leg.state is LegState.GONE or call.state is CallState.ENDED:
        if done is not None:
            done(False)
        return
    body = with_origin(offer(call, leg.side, codecs or _codecs(leg), _event_pt(leg.sdp_in)),
                       leg.sdp_out)
    leg.sdp_out = body
    dest = leg.destination()  # its route set's first hop, else its target (RFC 3261 12.2)
    via = controller(call).via_for(dest)
    req = leg.dialog.new_request("INVITE", via=via, body=body,
                                 headers=[("Content-Type", "application/sdp")])
    cseq = req.cseq[0]
    answered = False

    def on_response(_: Leg, resp: Response, key: object = None) -> None:
        nonlocal answered
        if resp.status < 200 or call.state is CallState.ENDED or leg.dialog is None:
            return
        if resp.status < 300:
            call._ack(leg, leg.dialog, cseq)  # again for a retransmitted 2xx
            if not answered:
                answered = True
                call.learn(leg, resp.body)
                _music_again(call, leg.side)
                if done is not None:
                    done(True)
        elif resp.status == 491 and attempt < GLARE_RETRIES:  # RFC 3261 14.1
            call._after(random.uniform(0.5, 2.0), reoffer, call, leg, codecs, done, attempt + 1)
        else:
            log.info("call %s: re-INVITE of %s answered %d", call.key, leg.user, resp.status)
            if done is not None:
                done(False)
    controller(call).send_request(req, dest, on_response, leg)


def _music_again(call: Call, side: str) -> None:
    """Music playing to ``side`` restarts in the codec the party just chose."""
    media = call.media
    if media is not None and media.music_playing(side):
        media.stop_music(side)
        lang = controller(call).snapshot().system.voice_prompts
        media.start_music(side, prompt_path(lang, "hold_music"))


def release(call: Call, leg: Leg) -> None:
    """``leg``'s party no longer counts in ``call`` (it left, or is leaving)."""
    if leg is call.a and call.caller_counted:
        controller(call).caller_left(call)
    else:
        call.talk(leg, False)


def detach(call: Call, leg: Leg) -> Leg:
    """Take ``leg``'s party out of ``call``, alive: the Leg its new call gets. The old
    Leg stays behind GONE and without its dialog, so ``call`` leaves it alone."""
    release(call, leg)
    moved = dataclasses.replace(leg, side="", talking=False, cancel_pending=False)
    leg.state, leg.dialog = LegState.GONE, None
    call._acks.pop(leg, None)
    return moved


def place(call: Call, leg: Leg, side: str, codec: str | None = None) -> None:
    """``leg`` (detached or new) becomes ``call``'s party on ``side`` (speaking
    ``codec``, default the one it speaks now)."""
    leg.side, leg.state, leg.placed = side, LegState.CONFIRMED, controller(call).now()
    call.holding = call.holding - {side} or NOBODY  # its party holds nobody yet
    if side == "A":
        call.a, call.caller = leg, leg.user
        if call.media is not None:  # whom the call rings next is offered its codec
            call.b_offer = offer(call, "B", (codec or codec_of(leg),), _event_pt(leg.sdp_in))
    else:
        call.winner = leg
        if leg not in call.b_legs:
            call.b_legs.append(leg)
    if leg.dialog is not None:
        controller(call).register_dialog(leg.dialog.id, call, leg)
    call.talk(leg, True)


def other_party(call: Call, leg: Leg) -> Leg | None:
    """The party facing ``leg`` in ``call``, when it is a live leg (not an app)."""
    other = call.winner if leg.side == "A" else call.a
    if other is None or other is leg or other.state is LegState.GONE or other.dialog is None:
        return None
    return other


def held(leg: Leg) -> bool:
    """Did the last SDP sent to ``leg`` hold it (sendonly, inactive, c=0.0.0.0)?"""
    try:
        return bool(leg.sdp_out) and parse_sdp_untrusted(leg.sdp_out).on_hold
    except BadMessage:
        return False


def split(call: Call, leg: Leg, number: str, transferor: str) -> Call:
    """A blind transfer: ``leg``'s party becomes the caller of a new call (answered, on
    its own relay) that is about to ring ``number``; the transferor stays in ``call``."""
    ctl = controller(call)
    moved = detach(call, leg)
    moved.side = "A"
    assert moved.dialog is not None
    z = Call(ctl, moved, moved.user, number, f"transfer:{number}", max_duration=0.0,
             key=new_call_id(), caller_counted=False, state=CallState.TALKING,
             answer_time=time.time(), final_status=200, transferred_by=transferor)
    z.a_tag = moved.dialog.local_tag
    z.history.append(f"transferred by {transferor}")
    ctl.adopt(z)
    controller(z).register_dialog(moved.dialog.id, z, moved)
    z.talk(moved, True)
    try:
        relayed(z)
    except CannotMove:
        z.hangup(released_by="pbx", cause="no media relay")
        raise
    codec = codec_of(moved)
    pt = _event_pt(moved.sdp_in)
    z.b_offer = offer(z, "B", (codec,), pt)
    reoffer(z, moved, (codec,), lambda ok: hold_music(z) if ok and z.planning else None)
    return z


def answer_joiner(call: Call, p: Call, side: str, codecs: tuple[str, ...],
                  callee: str, body: bytes | None = None) -> Leg:
    """The caller of ``p`` (its INVITE not answered yet) joins ``call`` on ``side``:
    minisip answers its INVITE from ``call``'s relay (``codecs``: the ones it may use;
    or with ``body``) and ``p`` ends without records of its own. Raises CannotMove."""
    offer_in = p.a.invite.body
    if body is None:
        body = answer(call, side, offer_in, codecs)
    p.callee = callee
    resp = p._respond_a(200, None, body=body)
    assert p.a.dialog is not None
    leg = dataclasses.replace(p.a, side=side, state=LegState.CONFIRMED, sdp_in=offer_in,
                              sdp_out=body, talking=False)
    p.a.dialog = None
    p.merged = True
    p.final_status = 200
    p._end()
    call._await_ack(resp, leg)
    return leg
