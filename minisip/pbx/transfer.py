"""Transfer with REFER (RFC 3515) and Replaces (RFC 3891), from either party of a call.

Theory of operation
-------------------
A REFER arrives in the dialog of one party of a call: the transferor (T). The
other party, the transferee (S), is the one that moves. minisip is a B2BUA: it
does not pass the REFER on, it carries the transfer out itself and reports to T
with the NOTIFYs of the implicit ``refer`` subscription: ``SIP/2.0 100 Trying``
at once, then the final status (``200 OK`` when the new party answered, or the
failure) with ``Subscription-State: terminated``. Every REFER that parses gets
202; what goes wrong afterwards is said in the final NOTIFY.

Blind (Refer-To names a number): the number is planned as if T dialled it
(``plan_for``: T's rights, the dial plan, the target's services: a transfer to a
forwarded user forwards, one to ``*70*nn`` parks). S becomes the caller of a new
call (``moves.split``: its own relay, S re-INVITEd to it, music while it rings)
that rings the plan. T stays in the old call, handled here, until its BYE, or
minisip's ``TRANSFEROR_GRACE`` seconds after the final NOTIFY. When nobody
answers and T is still there, S goes back to T (recall); else S is released.
When S hangs up while the target rings, T hears 487 and is released.

Attended (Refer-To carries ``?Replaces=`` naming T's other dialog with minisip):
S replaces T in that other call: S is re-INVITEd to its relay with the codec of
the party there, T's leg there gets BYE, and the REFER's call ends after the final
NOTIFY. A Replaces naming a dialog that still rings (T's consultation call not yet
answered) makes the transfer blind, to the number that dialog called.

One transfer's states are the table ``_TRANSITIONS``: TRYING -> DONE | FAILED.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ..sip.errors import BadMessage
from ..sip.message import Request, Response, make_response
from ..sip.uri import parse_address_untrusted, parse_params_untrusted
from . import moves
from .call import CallState, LegState
from .services.plan import End

if TYPE_CHECKING:
    from .call import Call, Leg

log = logging.getLogger(__name__)

#: seconds the transferor has to hang up after the final NOTIFY before minisip does
TRANSFEROR_GRACE = 2.0
SIPFRAG = "message/sipfrag;version=2.0"


# -- the wire (pure) ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Replaces:
    """A Replaces header (RFC 3891 6.1): the dialog to replace, as its recipient sees
    it (``to_tag`` is the recipient's own tag)."""
    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False


@dataclass(frozen=True, slots=True)
class ReferTo:
    number: str  #: the user part of the Refer-To URI: what T dialled for S
    replaces: Replaces | None = None  #: attended transfer: the dialog S replaces


def parse_replaces_untrusted(value: str) -> Replaces:
    """``call-id;to-tag=a;from-tag=b[;early-only]``; BadMessage if it is not one."""
    call_id, sep, rest = value.strip().partition(";")
    call_id = call_id.strip()
    if not call_id or not sep or any(c in call_id for c in " \t<>\"") or len(value) > 1000:
        raise BadMessage("Bad Replaces header")
    params = parse_params_untrusted(rest, "Replaces")
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    if not to_tag or not from_tag:
        raise BadMessage("Replaces needs to-tag and from-tag")
    return Replaces(call_id, to_tag, from_tag, "early-only" in params)


def parse_refer_to_untrusted(value: str) -> ReferTo:
    """The number and the embedded Replaces (``?Replaces=...``, escaped) of a Refer-To."""
    uri = parse_address_untrusted(value).uri
    number = uri.user or ""
    if not number or uri.scheme not in ("sip", "sips", "tel"):
        raise BadMessage("Refer-To names no number")
    embedded = {k.lower(): v for k, v in uri.headers.items()}.get("replaces")
    replaces = parse_replaces_untrusted(unquote(embedded)) if embedded is not None else None
    return ReferTo(number, replaces)


def sipfrag(status: int, reason: str) -> bytes:
    """The body of a refer NOTIFY: the status line of the referred request."""
    return f"SIP/2.0 {status} {reason}\r\n".encode()


def notify_headers(event_id: int | None, final: bool) -> list[tuple[str, str]]:
    """Event (with ``id`` for the second and later REFER of a dialog, RFC 3515 2.4.6),
    Subscription-State and Content-Type of a refer NOTIFY."""
    return [("Event", "refer" if event_id is None else f"refer;id={event_id}"),
            ("Subscription-State", "terminated;reason=noresource" if final
             else "active;expires=60"),
            ("Content-Type", SIPFRAG)]


class TransferState(enum.Enum):
    TRYING = "trying"  #: 202 sent, NOTIFY 100 Trying; the new party is being reached
    DONE = "done"  #: the new party answered (or S replaced T): NOTIFY 200
    FAILED = "failed"  #: nobody answered, refused...: NOTIFY with that status


_TRANSITIONS: dict[TransferState, frozenset[TransferState]] = {
    TransferState.TRYING: frozenset({TransferState.DONE, TransferState.FAILED}),
    TransferState.DONE: frozenset(),
    TransferState.FAILED: frozenset(),
}


# -- one transfer ---------------------------------------------------------------------------

class Transfer:
    """A REFER being carried out; also the handler of the transferor's leg while it
    waits in the REFER's call (``Call.managed``)."""

    def __init__(self, call: Call, transferor: Leg, refer: Request, kind: str) -> None:
        self.call, self.leg, self.kind = call, transferor, kind
        self.event_id = refer.cseq[0] if transferor.refers > 1 else None
        self.state = TransferState.TRYING
        self.new: Call | None = None  #: a blind transfer's new call (S and whom it rings)

    def _set_state(self, new: TransferState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"transfer: {self.state.name} -> {new.name}")
        log.debug("call %s: transfer %s -> %s", self.call.key, self.state.name, new.name)
        self.state = new

    def notify(self, status: int, reason: str) -> None:
        leg, call = self.leg, self.call
        if leg.dialog is None or leg.state is LegState.GONE or call.state is CallState.ENDED:
            return
        final = status >= 200
        dest = leg.destination()
        via = moves.controller(call).via_for(dest)
        req = leg.dialog.new_request("NOTIFY", via=via, body=sipfrag(status, reason),
                                     headers=notify_headers(self.event_id, final))
        moves.controller(call).send_request(req, dest, None, leg)
        moves.controller(call).flush()  # from a timer or a response: no batch end sends it

    def done(self) -> None:
        """The new party answered (or S replaced T): T hears 200 and leaves."""
        if self.state is not TransferState.TRYING:
            return
        self._set_state(TransferState.DONE)
        self.notify(200, "OK")
        self.call._after(TRANSFEROR_GRACE, self._release_transferor)

    def _release_transferor(self) -> None:
        self.call.hangup(released_by="pbx", cause="transferred")
        moves.controller(self.call).flush()

    def failed(self, status: int, reason: str) -> None:
        if self.state is not TransferState.TRYING:
            return
        self._set_state(TransferState.FAILED)
        log.info("call %s: %s transfer by %s failed: %d %s", self.call.key, self.kind,
                 self.leg.user, status, reason)
        self.notify(status, reason)

    def unanswered(self, end: End) -> None:
        """The blind transfer's plan ended unanswered: T hears why; S goes back to T
        while T is still in the REFER's call, else S is released."""
        self.failed(end.status or 480, end.reason or "Temporarily Unavailable")
        z, call, t = self.new, self.call, self.leg
        assert z is not None
        if z.state is CallState.ENDED:  # the transferee hung up: the transferor goes too
            call.hangup(released_by="pbx", cause="transfer failed")
            moves.controller(call).flush()
            return
        if call.state is CallState.ENDED or t.dialog is None:
            z.hangup(released_by="pbx", cause="transfer failed")
            return
        codec = moves.codec_of(z.a)
        call.managed.pop(t, None)
        back = moves.detach(call, t)
        call.hangup(released_by="pbx", cause="transfer failed")
        moves.place(z, back, "B")
        z._answered_by(back.user, back)
        if z.media is not None:
            z.media.stop_music("A")
        z.history.append(f"transfer failed: back to {back.user}")
        moves.reoffer(z, back, (codec,))
        moves.controller(z).flush()

    # -- the transferor's leg while it waits (Call.managed) -----------------------------
    def on_request(self, leg: Leg, req: Request) -> Response:
        if req.method == "BYE":
            self.call.hangup(released_by="caller" if leg.side == "A" else "callee",
                             cause="transferred" if self.state is TransferState.DONE
                             else "normal", skip=leg)
            return make_response(req, 200)
        if req.method in ("INVITE", "UPDATE", "REFER"):
            return make_response(req, 491)  # its party is moving: nothing to negotiate
        return make_response(req, 200)

    def on_ack(self, leg: Leg, req: Request) -> None:
        pass

    def close(self, leg: Leg) -> None:
        pass


# -- a REFER in a call --------------------------------------------------------------------

def on_refer(call: Call, leg: Leg, req: Request) -> Response | None:
    """A REFER in ``leg``'s dialog of ``call``: 202 and the transfer, or a refusal."""
    leg.refers += 1
    try:
        target = parse_refer_to_untrusted(req.headers.get("Refer-To") or "")
    except BadMessage as exc:
        return make_response(req, 400, str(exc) or "Bad Refer-To")
    transferee = moves.other_party(call, leg)
    if call.state is not CallState.TALKING or transferee is None or call.app is not None \
            or leg in call.managed:
        return make_response(req, 403, "Nothing to transfer")
    kind = "attended" if target.replaces is not None else "blind"
    transfer = Transfer(call, leg, req, kind)
    moves.controller(call).send_response(make_response(req, 202))
    call.managed[leg] = transfer
    transfer.notify(100, "Trying")
    try:
        if target.replaces is not None:
            _attended(transfer, transferee, target.replaces)
        else:
            _blind(transfer, transferee, target.number)
    except moves.CannotMove as exc:
        transfer.failed(exc.status, exc.reason)
    if transfer.state is TransferState.FAILED and leg in call.managed:
        del call.managed[leg]  # T and S stay together as they were
    return None


def _blind(transfer: Transfer, transferee: Leg, number: str) -> None:
    call, t = transfer.call, transfer.leg
    plan = moves.controller(call).plan_for(t.user, number)
    if isinstance(plan, End):
        transfer.failed(plan.status or 404, plan.reason or "Not Found")
        return
    call.transferred_by, call.transferred_to = t.user, number
    z = moves.split(call, transferee, number, t.user)
    transfer.new = z
    z.hand_on(plan, on_end=transfer.unanswered, on_answer=transfer.done)


def _attended(transfer: Transfer, transferee: Leg, replaces: Replaces) -> None:
    call, t = transfer.call, transfer.leg
    found = moves.controller(call).find_dialog(replaces.call_id, replaces.to_tag,
                                               replaces.from_tag)
    if found is None:
        transfer.failed(481, "Call/Transaction Does Not Exist")
        return
    other, replaced = found
    if other is call or replaced.user != t.user:
        transfer.failed(403, "Replaces names another user's dialog")
        return
    if other.state in (CallState.ROUTING, CallState.RINGING):
        if replaced is not other.a:
            transfer.failed(403, "Replaces names a ringing call of another")
            return
        number = other.dialed  # T's consultation call rings still: a blind transfer
        other.on_cancel()
        transfer.kind = "blind"
        _blind(transfer, transferee, number)
        return
    if replaced is not other.a and replaced is not other.winner:
        transfer.failed(403, "Replaces names no party of a call")
        return
    stayer = moves.other_party(other, replaced)
    opened = moves.relayed(other, transferee.peer)
    codec = moves.codec_of(stayer) if stayer is not None else moves.codec_of(transferee)
    moved = moves.detach(call, transferee)
    moves.release(other, replaced)
    other._bye(replaced)
    moves.place(other, moved, replaced.side, codec)
    moves.reoffer(other, moved, (codec,))
    if stayer is not None and (opened or moves.held(stayer)):
        moves.reoffer(other, stayer, (codec,))
    other.transferred_by = t.user
    other.history.append(f"attended transfer by {t.user}: {moved.user} replaced {t.user}")
    call.transferred_by = t.user
    call.transferred_to = stayer.user if stayer is not None else other.dialed
    transfer.done()

