"""What an app gets: the caller's leg, answered by minisip from the call's relay.

An app (voicemail, the attendant, a feature code's confirmation) is a trio
task that owns one answered leg. The session answers the caller's offer from
the relay's A side (PCMU/PCMA, telephone-event), plays prompts in the
language of ``voice_prompts`` to the caller through that side (on the
server's shared pacer), turns the caller's keys into digits whether they come
as RFC 4733 events on the relay or as SIP INFO, and records what the caller
says to a WAV file. ``hand_on`` connects the caller to a number and
``hangup`` ends the call; when the call ends otherwise (the caller hangs up,
shutdown) the task is cancelled with it, and a recording in progress is
closed and handed to its owner at once, before the BYE's 200 leaves.

An app may also start on a call that is answered already (the attendant
handed the caller to a user whose plan ends in voicemail): the session then
attaches to the caller's media instead of answering again.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ...media.dtmf import DtmfReceiver, parse_info_untrusted
from ...media.g711 import encoder_for
from ...media.player import load_audio, read_wav_pcm
from ...media.prompts import prompt_path
from ...media.recorder import Recorder
from ...media.rtp import parse_rtp_untrusted
from ...media.sdp_media import (
    answer_offer_untrusted, make_offer, negotiated_from_answer_untrusted,
)
from ...sip.errors import BadMessage
from ...sip.message import Request, Response, make_response
from .. import moves
from ..services.plan import End, Target

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger(__name__)

App = Callable[["AppSession"], Awaitable[None]]
Spawn = Callable[..., Any]


@dataclass(frozen=True)
class Recording:
    path: Path
    seconds: float
    voiced: bool  #: the caller said something (not only silence)
    ended_by: str  #: "key", "silence", "max" or "hangup"


class _Take:
    """A recording in progress: the caller's audio packets go to the recorder."""

    def __init__(self, path: Path, payload_types: dict[int, str], max_seconds: float,
                 on_end: Callable[[Recording], None]) -> None:
        self.recorder = Recorder(path, payload_types=payload_types, max_seconds=max_seconds)
        self.on_end = on_end
        self.started = trio.current_time()

    def feed(self, data: memoryview, now: float) -> None:
        try:
            packet = parse_rtp_untrusted(data)
        except BadMessage:
            return
        self.recorder.feed(packet, now)

    def finish(self, ended_by: str) -> Recording:
        rec = self.recorder
        rec.close()
        recording = Recording(rec.path, rec.seconds, rec.voiced > 0, ended_by)
        self.on_end(recording)
        return recording


class AppSession:
    def __init__(self, call: Call, target: Target, language: str, spawn: Spawn) -> None:
        assert call.media is not None
        self.call = call
        self.media = call.media
        self.target = target
        self.name = target.name
        self.argument = target.argument
        self.language = language
        self.spawn = spawn
        self.scope = trio.CancelScope()
        self._digits_in, self._digits = trio.open_memory_channel[str](32)
        self._confirmed = trio.Event()
        self._session_id = random.getrandbits(31)
        self._version = 1
        self._receiver: DtmfReceiver | None = None
        self._dtmf_pt: int | None = None  #: the caller's telephone-event payload type
        self._codec: tuple[int, str] = (0, "PCMU")  #: (payload type, codec) the caller sends
        self._take: _Take | None = None
        #: why the number handed on was not reached (set when the caller comes back)
        self.returned: End | None = None

    # -- the call's side ------------------------------------------------------------
    def answer(self) -> None:
        """Answer the caller (200 with our SDP) and listen for keys on the relay; on a
        call answered already (handed on to this app), take over the caller's media."""
        attached = self.call.answer_time is not None
        a = self.call.a  # a party moved here (transferred) speaks what its last SDP said
        body = self._sdp((a.sdp_in if attached else b"") or a.invite.body, learn=not attached)
        self._listen()
        if attached:
            self._confirmed.set()
        self.call.answer_by_app(self, body)

    def _listen(self) -> None:
        self.media.session.leg("A").set_tap(self._tap)

    def _sdp(self, offer: bytes, learn: bool = True) -> bytes:
        leg = self.media.session.leg("A")
        address = self.media.address["A"]
        if not offer:  # an offerless INVITE: we offer, the ACK answers
            return make_offer(address, leg.rtp_port, session_id=self._session_id,
                              version=self._version)
        if learn:
            self.media.sdp_from("A", offer)  # learn the caller's address and codecs
        body, neg = answer_offer_untrusted(offer, address, leg.rtp_port,
                                           session_id=self._session_id, version=self._version)
        self._negotiated(neg.payload_type, neg.codec, neg.dtmf_payload_type)
        return body

    def _negotiated(self, pt: int, codec: str, dtmf_pt: int | None) -> None:
        self._codec = (pt, codec)
        self._dtmf_pt = dtmf_pt
        self._receiver = DtmfReceiver(payload_type=dtmf_pt) if dtmf_pt is not None else None

    def _tap(self, data: memoryview, now: float) -> bool:
        """Everything the caller sends is the app's: keys become digits, the voice goes
        to a recording when one runs."""
        digits = self._receiver.tap_untrusted(data, now) if self._receiver else None
        if digits is None:
            if self._take is not None:
                self._take.feed(data, now)
        else:
            for d in digits:
                self._push(d.digit)
        return True

    def _push(self, digit: str) -> None:
        try:
            self._digits_in.send_nowait(digit)
        except trio.WouldBlock:
            pass  # 32 keys nobody read: the app is not listening

    def on_ack(self, req: Request) -> None:
        if req.body:  # the answer to the offer our 200 made
            self.media.sdp_from("A", req.body)
            try:
                neg = negotiated_from_answer_untrusted(req.body)
                self._negotiated(neg.payload_type, neg.codec, neg.dtmf_payload_type)
            except BadMessage:
                pass
            self._listen()
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
            self._listen()  # the relay reset its taps on the new SDP
            resp = make_response(req, 200, headers=[("Content-Type", "application/sdp")])
            resp.body = body
            return resp
        return make_response(req, 200)

    def cancel(self) -> None:
        """The call ended or moved on: a recording is closed and handed over now (its
        message is stored before the BYE's 200 leaves), then the task is cancelled."""
        self._finish_take("hangup")
        self.scope.cancel()

    # -- what apps call ---------------------------------------------------------------
    async def confirmed(self, timeout: float = 5.0) -> None:
        """Wait for the caller's ACK (media may flow before; prompts should not)."""
        with trio.move_on_after(timeout):
            await self._confirmed.wait()

    def _audio(self, item: str | Path, codec: str) -> bytes:
        try:
            if isinstance(item, Path):  # a recording: read each time, not cached
                return encoder_for(codec)(read_wav_pcm(item))
            return load_audio(prompt_path(self.language, item), codec)
        except (OSError, ValueError) as exc:  # a missing or damaged file: skip it
            log.warning("call %s: cannot play %s: %s", self.call.a.invite.call_id, item, exc)
            return b""

    async def play(self, *items: str | Path) -> None:
        """Play prompts (``"busy"``, ``"digits/7"``) or WAV files (a ``Path``) to the
        caller, back to back."""
        player = self.media._player("A")
        if player is None:
            return
        audio = b"".join(self._audio(item, player.codec) for item in items)
        if audio:
            await player.play(audio)

    async def prompt(self, *items: str | Path, timeout: float = 0.0) -> str | None:
        """Play ``items`` until the caller presses a key: that key, or the first one
        within ``timeout`` seconds after the end, or None."""
        async with trio.open_nursery() as nursery:
            async def play_then_wait() -> None:
                await self.play(*items)
                await trio.sleep(timeout)
                nursery.cancel_scope.cancel()
            nursery.start_soon(play_then_wait)
            key = await self._digits.receive()
            nursery.cancel_scope.cancel()
            return key
        return None

    async def collect(self, *items: str | Path, timeout: float, max_digits: int = 32,
                      end: str = "#") -> str:
        """A number keyed by the caller while ``items`` play or after: it ends with
        ``end``, after ``timeout`` seconds without a key, or at ``max_digits``."""
        digits = ""
        key = await self.prompt(*items, timeout=timeout)
        while key is not None and key not in end:
            digits += key
            if len(digits) >= max_digits:
                break
            key = await self.digit(timeout)
        return digits

    async def digit(self, timeout: float) -> str | None:
        """The next key the caller presses, or None after ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            return await self._digits.receive()
        return None

    def clear_digits(self) -> None:
        """Forget keys pressed so far (type-ahead meant for an earlier question)."""
        while True:
            try:
                self._digits.receive_nowait()
            except trio.WouldBlock:
                return

    async def record(self, path: Path, *, max_seconds: float, silence_seconds: float,
                     stop_keys: str, on_end: Callable[[Recording], None]) -> Recording:
        """Record the caller to ``path`` (8 kHz WAV) until a key of ``stop_keys``,
        ``silence_seconds`` without voice (0: never), ``max_seconds`` or hang-up.
        ``on_end`` gets the recording once, whatever ended it; on hang-up it is
        called from ``cancel``, synchronously, and this coroutine is cancelled."""
        pt, codec = self._codec
        take = self._take = _Take(path, {pt: codec}, max_seconds, on_end)
        self.clear_digits()
        start = take.started
        ended = "hangup"
        try:
            while True:
                last = take.recorder.voice_at or start
                deadline = start + max_seconds
                if silence_seconds > 0:
                    deadline = min(deadline, last + silence_seconds)
                with trio.move_on_at(deadline):
                    if await self._digits.receive() in stop_keys:
                        ended = "key"
                        break
                    continue
                now = trio.current_time()
                if now >= start + max_seconds or take.recorder.full:
                    ended = "max"
                    break
                if silence_seconds > 0 and now >= (take.recorder.voice_at or start) \
                        + silence_seconds:
                    ended = "silence"
                    break
        finally:
            result = self._finish_take(ended)
        assert result is not None
        return result

    def _finish_take(self, ended_by: str) -> Recording | None:
        take, self._take = self._take, None
        return take.finish(ended_by) if take is not None else None

    def hand_on(self, number: str, then: App | None = None) -> None:
        """Connect the caller to ``number`` as if the caller had dialled it (the dial
        plan and the services of whoever it reaches apply). The app's task ends here;
        when the plan ends unanswered, ``then`` runs as the app (``returned`` says
        why), or the call is released when there is no ``then``."""
        call = self.call
        self.media.session.leg("A").set_tap(None)  # keys and voice go to who answers
        # Whoever answers is offered the one codec the caller speaks to us: the relay
        # passes packets as they are, so both sides must speak the same.
        call.b_offer = moves.offer(call, "B", (self._codec[1],), self._dtmf_pt)
        # The caller was answered (by us): ringing reaches it as a tone, not a 180.
        self.media.start_music("A", prompt_path(self.language, "ringback"))
        on_end = None if then is None else (lambda end: self._come_back(then, end))
        call.hand_on(call.pbx.plan_for(call.caller, number), on_end)
        call.pbx.flush()

    def _come_back(self, app: App, end: End) -> None:
        """Nobody took the call handed on: the caller is this app's again (unless the
        caller hung up meanwhile)."""
        if self.call.media is None or self.call.media.session.closed:
            return
        self.returned = end
        self.media.stop_music("A")  # the ring-back tone
        self.call.b_offer = None
        self.scope = trio.CancelScope()
        self.call.app = self
        self._listen()
        self.clear_digits()
        self.spawn(run, self, app)

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


def starter(app: App, language: Callable[[], str]) -> Callable[[Call, Target], bool]:
    """What the call controller calls to let ``app`` answer a call: the app's task runs
    in the call's own nursery (``Call.start_task``), so it ends with the call."""
    def start(call: Call, target: Target) -> bool:
        session = AppSession(call, target, language(), call.start_task)
        try:
            session.answer()
        except BadMessage as exc:  # nothing in the caller's offer we can answer
            log.info("call %s: %s cannot answer: %s", call.a.invite.call_id, target.name, exc)
            return False
        call.start_task(run, session, app)
        return True
    return start
