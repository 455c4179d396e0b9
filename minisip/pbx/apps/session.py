"""What an app gets: the caller's leg, answered by minisip from the call's relay.

An app (voicemail, the attendant, a feature code's confirmation) is a trio
task that owns one answered leg. The session answers the caller's offer from
the relay's A side (PCMU/PCMA, telephone-event), plays prompts in the
language of ``voice_prompts`` to the caller through that side, and turns the
caller's keys into digits whether they come as RFC 4733 events on the relay
or as SIP INFO. ``hangup`` ends the call; when the call ends otherwise (the
caller hangs up, shutdown) the task is cancelled with it.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ...media.dtmf import DtmfReceiver, parse_info_untrusted
from ...media.prompts import prompt_path
from ...media.sdp_media import answer_offer_untrusted, make_offer
from ...sip.errors import BadMessage
from ...sip.message import Request, Response, make_response
from ..services.plan import End, Target

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger(__name__)

App = Callable[["AppSession"], Awaitable[None]]


class AppSession:
    def __init__(self, call: Call, target: Target, language: str) -> None:
        assert call.media is not None
        self.call = call
        self.media = call.media
        self.target = target
        self.name = target.name
        self.argument = target.argument
        self.language = language
        self.scope = trio.CancelScope()
        self._digits_in, self._digits = trio.open_memory_channel[str](32)
        self._confirmed = trio.Event()
        self._session_id = random.getrandbits(31)
        self._version = 1
        self._receiver: DtmfReceiver | None = None

    # -- the call's side ------------------------------------------------------------
    def answer(self) -> None:
        """Answer the caller (200 with our SDP) and listen for keys on the relay."""
        body = self._sdp(self.call.a.invite.body)
        leg = self.media.session.leg("A")
        leg.set_tap(self._tap)
        self.call.answer_by_app(self, body)

    def _sdp(self, offer: bytes) -> bytes:
        leg = self.media.session.leg("A")
        address = self.media.address["A"]
        if not offer:  # an offerless INVITE: we offer, the ACK answers
            return make_offer(address, leg.rtp_port, session_id=self._session_id,
                              version=self._version)
        self.media.sdp_from("A", offer)  # learn the caller's address and codecs
        body, neg = answer_offer_untrusted(offer, address, leg.rtp_port,
                                           session_id=self._session_id, version=self._version)
        pt = neg.dtmf_payload_type
        self._receiver = DtmfReceiver(payload_type=pt) if pt is not None else None
        return body

    def _tap(self, data: memoryview, now: float) -> bool:
        """Events from the caller become digits; its voice goes on to the relay's B side."""
        digits = self._receiver.tap_untrusted(data, now) if self._receiver else None
        for d in digits or ():
            self._push(d.digit)
        return digits is not None

    def _push(self, digit: str) -> None:
        try:
            self._digits_in.send_nowait(digit)
        except trio.WouldBlock:
            pass  # 32 keys nobody read: the app is not listening

    def on_ack(self, req: Request) -> None:
        if req.body:  # the answer to the offer our 200 made
            self.media.sdp_from("A", req.body)
        self._confirmed.set()

    def on_request(self, req: Request) -> Response:
        """A request from the caller inside the app's dialog (BYE is the call's)."""
        if req.method == "INFO":
            try:
                d = parse_info_untrusted(req.headers.get("Content-Type") or "", req.body)
            except BadMessage:
                return make_response(req, 200)
            self._push(d.digit)
            return make_response(req, 200)
        if req.method in ("INVITE", "UPDATE") and req.body:
            self._version += 1
            try:
                body = self._sdp(req.body)
            except BadMessage:
                return make_response(req, 488)
            resp = make_response(req, 200, headers=[("Content-Type", "application/sdp")])
            resp.body = body
            return resp
        return make_response(req, 200)

    def cancel(self) -> None:
        self.scope.cancel()

    # -- what apps call ---------------------------------------------------------------
    async def confirmed(self, timeout: float = 5.0) -> None:
        """Wait for the caller's ACK (media may flow before; prompts should not)."""
        with trio.move_on_after(timeout):
            await self._confirmed.wait()

    async def play(self, *names: str) -> None:
        """Play prompts (``"busy"``, ``"digits/7"``) to the caller, one after another."""
        paths: list[Path] = []
        for name in names:
            try:
                paths.append(prompt_path(self.language, name))
            except FileNotFoundError:
                log.warning("prompt %s missing", name)
        player = self.media._player("A")
        if player is not None and paths:
            await player.play_files(paths)

    async def digit(self, timeout: float) -> str | None:
        """The next key the caller presses, or None after ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            return await self._digits.receive()
        return None

    def hand_on(self, number: str, on_end: Callable[[End], None] | None = None) -> None:
        """Connect the caller to ``number`` as if the caller had dialled it (the dial
        plan and the services of whoever it reaches apply). The app's task ends here;
        ``on_end`` hears of a plan that ended unanswered (None: the call is released)."""
        call = self.call
        call.hand_on(call.pbx.plan_for(call.caller, number), on_end)
        call.pbx.flush()

    def hangup(self, cause: str = "normal") -> None:
        self.call.hangup(released_by="pbx", cause=cause)
        self.call.pbx.flush()  # a task, not a receive batch: nothing else sends it soon


async def run(session: AppSession, app: App) -> None:
    """An app's task: cancelled with the call; an app's error ends only its call."""
    with session.scope:
        try:
            await app(session)
        except Exception:
            log.exception("app %s failed on call %s", session.name, session.call.a.invite.call_id)
            session.hangup("app failure")


def starter(app: App, spawn: Callable[..., Any], language: Callable[[], str]
            ) -> Callable[[Call, Target], bool]:
    """What the call controller calls to let ``app`` answer a call."""
    def start(call: Call, target: Target) -> bool:
        session = AppSession(call, target, language())
        try:
            session.answer()
        except BadMessage as exc:  # nothing in the caller's offer we can answer
            log.info("call %s: %s cannot answer: %s", call.a.invite.call_id, target.name, exc)
            return False
        spawn(run, session, app)
        return True
    return start
