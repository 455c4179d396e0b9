"""Reliable provisional responses toward a caller that Requires them (RFC 3262, as UAS).

minisip PRACKs the reliable 18x of the phones it calls (call.py); a caller whose
INVITE says ``Require: 100rel`` must get its own 18x reliably too: each carries
``Require: 100rel`` and an ``RSeq`` one higher than the last, is resent (T1, doubling)
until the caller's PRACK names it in ``RAck``, and the next one waits until then
(RFC 3262 3: one unacknowledged at a time; only the latest waiting one is kept). A
PRACK that names nothing unacknowledged gets 481. No PRACK within 64*T1: the INVITE is
refused with 504 (the caller is not there to hear the call ring).
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from ..sip.digits import is_digits
from ..sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from .call import Call
    from .timers import Timer


def requires_100rel(invite: Request) -> bool:
    return any(t.strip().lower() == "100rel" for t in invite.headers.values("Require"))


class ReliableProvisionals:
    """The caller's side of one call: the 18x it still has to PRACK."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.rseq = random.randint(1, 2**31 - 1)  #: RFC 3262 3: the first is random
        self.unacked: Response | None = None
        self.waiting: Response | None = None  #: the next 18x, until ``unacked`` is PRACKed
        self._timer: Timer | None = None
        self._given_up: Timer | None = None

    def send(self, resp: Response) -> None:
        """Send a 18x to the caller reliably (or keep it until the last one is PRACKed)."""
        if self.unacked is not None:
            self.waiting = resp
            return
        self.rseq += 1
        resp.headers.add("Require", "100rel")
        resp.headers.add("RSeq", str(self.rseq))
        self.unacked = resp
        self.call.pbx.send_response(resp)
        t1 = self.call.snap.system.timers.t1
        self._timer = self.call._after(t1, self._resend, resp, t1)
        self._given_up = self.call._after(64 * t1, self._no_prack, resp)

    def _resend(self, resp: Response, interval: float) -> None:
        if self.unacked is resp:
            self.call.pbx.send_response(resp)
            self._timer = self.call._after(2 * interval, self._resend, resp, 2 * interval)

    def _no_prack(self, resp: Response) -> None:
        if self.unacked is resp:
            self.stop()
            self.call.release("no PRACK", 504, "No PRACK")

    def on_prack(self, req: Request) -> Response:
        """The caller's PRACK: 200 when its RAck names the 18x awaiting it, else 481."""
        rack = (req.headers.get("RAck") or "").split()
        pending = self.unacked
        if pending is None or len(rack) != 3 or not (is_digits(rack[0]) and is_digits(rack[1])) \
                or (int(rack[0]), int(rack[1]), rack[2]) != (
                    self.rseq, pending.cseq[0], pending.cseq[1]):
            return make_response(req, 481, "No such reliable response")
        waiting = self.waiting
        self.stop()
        if waiting is not None:
            self.send(waiting)
        return make_response(req, 200)

    def stop(self) -> None:
        """Nothing is resent any more (PRACKed, or the INVITE got its final response)."""
        self.unacked = self.waiting = None
        for t in (self._timer, self._given_up):
            if t is not None:
                t.cancel()
        self._timer = self._given_up = None
