"""A fake PBX core for the events tests: requests and responses land in one log,
time is an attribute, timers fire when the test moves the clock."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minisip.config.schema import User
from minisip.pbx.call import Call, CallState, Leg
from minisip.pbx.identity import Identity
from minisip.pbx.timers import TimerHeap
from minisip.sip.message import Request, Response, make_response, new_branch
from minisip.sip.peer import Peer

PEER = Peer("udp", "192.0.2.10", 5062)
TRUSTED = ("192.0.2.0/24",)  # the test phones are trusted by address: no digest round trips


def users(**extra: dict[str, Any]) -> dict[str, User]:
    """Users 100..104 trusted from PEER; ``extra`` overrides fields per user."""
    return {name: User(password=name, allowed_ips=TRUSTED, **extra.get(name, {}))
            for name in ("100", "101", "102", "103", "104")}


@dataclass
class Sent:
    req: Request
    peer: Peer
    on_response: Any
    leg: Any
    key: object

    def answer(self, status: int) -> None:
        self.on_response(self.leg, make_response(self.req, status), self.key)


class FakeCore:
    def __init__(self, user_table: dict[str, User] | None = None) -> None:
        self.t = 1000.0
        self.timers = TimerHeap()
        self.log: list[Request | Response] = []  # everything sent, in order
        self.sent: list[Sent] = []
        self.methods: dict[str, Callable[..., Any]] = {}
        self.dialog_owners: dict[str, Callable[[Request], bool]] = {}
        self.allow_events = ""
        self.registrar: Any = None
        self.users = user_table if user_table is not None else users()
        self.identity = Identity(self.registrar, lambda: self.users)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.timers.handle_timer(self.t)

    def send_request(self, req: Request, peer: Peer, on_response: Any, leg: Any) -> object:
        key = object()
        self.log.append(req)
        self.sent.append(Sent(req, peer, on_response, leg, key))
        return key

    def send_response(self, resp: Response) -> None:
        self.log.append(resp)

    def via_for(self, peer: Peer) -> str:
        return f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}"

    def contact_for(self, peer: Peer, user: str) -> str:
        return f"<sip:{user}@192.0.2.1:5060>"

    def route_method(self, method: str, handler: Any, *,
                     owns: Callable[[Request], bool] | None = None) -> None:
        self.methods[method] = handler
        if owns is not None:
            self.dialog_owners[method] = owns

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.log if isinstance(m, Request) and m.method == method]


_n = itertools.count(1)


def request(method: str, user: str, target: str, *, headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", call_id: str | None = None, from_tag: str | None = None,
            to_tag: str | None = None, cseq: int = 1) -> Request:
    n = next(_n)
    to = f"<sip:{target}@minisip>" + (f";tag={to_tag}" if to_tag else "")
    return Request(method, f"sip:{target}@minisip", [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKt{n}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@minisip>;tag={from_tag or f'f{n}'}"),
        ("To", to), ("Call-ID", call_id or f"c{n}@test"), ("CSeq", f"{cseq} {method}"),
        *(headers or [])], body)


def subscribe(user: str, target: str, event: str, expires: int | None = 600,
              **kw: Any) -> Request:
    headers = [("Event", event), ("Contact", f"<sip:{user}@192.0.2.10:5062>")]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    headers += kw.pop("headers", [])
    return request("SUBSCRIBE", user, target, headers=headers, **kw)


def make_call(state: CallState, *, ringing: tuple[str, ...] | None = None,
              answered: str | None = None, held_by: str = "") -> Call:
    """100 calls 101 (Call-ID call-1, tags caller-tag/our-tag), in ``state``.

    ``ringing``: users whose devices ring (default 101 until an answer); ``answered``:
    the user who answered (default 101 once answered; "" = nobody); ``held_by``: the
    side ("A", "B") that put the call on hold."""
    if ringing is None:
        ringing = ("101",) if state in (CallState.ROUTING, CallState.RINGING) else ()
    if answered is None:
        answered = "101" if state in (CallState.ANSWERED, CallState.TALKING,
                                      CallState.ENDED) else ""
    invite = request("INVITE", "100", "101", from_tag="caller-tag", call_id="call-1")
    return Call(None, Leg("A", PEER, invite, None, "100"), "100", "101",  # type: ignore[arg-type]
                "local:101", 0.0, callee=answered or "101",
                a_tag="our-tag", state=state, holding={held_by} - {""}, ringing_users=set(ringing),
                answered_user=answered or None)
