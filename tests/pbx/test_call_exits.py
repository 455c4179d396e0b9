"""A Call trying its ways out in turn, without sockets: a fake controller records the wire."""
from __future__ import annotations

from typing import Any

import pytest

from types import SimpleNamespace

from minisip.pbx.call import Call, CallState, Leg, Refused
from minisip.pbx.dialplan import Route, RouteKind
from minisip.pbx.legspec import LegSpec
from minisip.pbx.services import relay_failure
from minisip.pbx.services.plan import Kind, Step, Target
from minisip.pbx.timers import TimerHeap
from minisip.sip.digest import DigestAuthenticator
from minisip.sip.message import Request, Response, make_response, new_tag
from minisip.sip.peer import Peer

CALLER = Peer("udp", "192.0.2.1", 5062)


class FakeController:
    """The parts of CallController a Call uses, recording what would be sent."""

    t1, t2, domain = 0.5, 4.0, "pbx"

    def __init__(self, exits: dict[str, LegSpec | tuple[int, str]]) -> None:
        self.exits = exits
        self.timers = TimerHeap()
        self.sent: list[tuple[Request, Any, Any, object]] = []
        self.responses: list[Response] = []
        self.released: list[str] = []
        self.ended: list[Call] = []

    def now(self) -> float:
        return 0.0

    def via_for(self, peer: Peer) -> str:
        return "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKx"

    def contact_for(self, peer: Peer, user: str) -> str:
        return f"<sip:{user}@198.51.100.1>"

    def common_headers(self) -> list[tuple[str, str]]:
        return [("Supported", "100rel, timer")]

    def send_request(self, req: Request, peer: Peer, on_response: Any, leg: Any) -> object:
        key = object()
        self.sent.append((req, on_response, leg, key))
        return key

    def send_response(self, resp: Response) -> None:
        self.responses.append(resp)

    def send_stateless(self, msg: Any, peer: Peer) -> None:
        pass

    def register_dialog(self, *args: Any) -> None:
        pass

    def call_state_changed(self, *args: Any) -> None:
        pass

    def call_ended(self, call: Call) -> None:
        self.ended.append(call)

    def exit_leg(self, call: Call, route: Route, name: str) -> LegSpec | tuple[int, str]:
        return self.exits[name]

    def snapshot(self) -> Any:
        return SimpleNamespace(system=SimpleNamespace(no_answer_time=30))

    def prepare_media(self, call: Call, step: Step) -> None:
        pass

    def exit_released(self, name: str) -> None:
        self.released.append(name)

    def reply(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        req, on_response, leg, key = self.sent[-1]
        on_response(leg, make_response(req, status, to_tag=new_tag(), headers=headers or []),
                    key)


def spec(name: str, **kw: Any) -> LegSpec:
    return LegSpec(uri=f"sip:555@{name}.example", peer=Peer("udp", "192.0.2.9", 5060),
                   to=f"<sip:555@{name}.example>", from_uri=f"sip:acc@{name}.example",
                   callee="555", exit=name, **kw)


def call(exits: dict[str, LegSpec | tuple[int, str]]) -> tuple[Call, FakeController]:
    ctl = FakeController(exits)
    invite = Request("INVITE", "sip:9555@pbx", [
        ("Via", "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa1"), ("From", "<sip:100@pbx>;tag=a"),
        ("To", "<sip:9555@pbx>"), ("Call-ID", "c1"), ("CSeq", "2 INVITE"),
        ("Contact", "<sip:100@192.0.2.1:5062>")])
    c = Call(ctl, Leg("A", CALLER, invite, None, "100"), "100", "9555",  # type: ignore[arg-type]
             "outgoing_group:", max_duration=0, snap=ctl.snapshot())
    route = Route(RouteKind.OUTGOING_GROUP, number="555", candidates=tuple(exits))
    c.start(Step((Target(Kind.NUMBER, "555", route=route),), 0.0, "out", relay_failure))
    return c, ctl


@pytest.mark.parametrize("status, tries_next", [
    (503, True), (404, True), (408, True), (603, True), (500, True),
    (486, False), (600, False)])
def test_a_failure_other_than_busy_tries_the_next_exit(status: int, tries_next: bool) -> None:
    c, ctl = call({"a": spec("a"), "b": spec("b")})
    ctl.reply(status)
    assert len(ctl.sent) == (2 if tries_next else 1)
    assert ctl.released == ["a"]  # the failed line's slot is back at once
    if tries_next:
        assert ctl.sent[-1][0].uri == "sip:555@b.example"
        ctl.reply(503)
    assert c.state is CallState.ENDED
    assert ctl.responses[-1].status == (503 if tries_next else status)


def test_refusals_are_skipped_and_the_last_reason_reaches_the_caller() -> None:
    c, ctl = call({"a": (486, "Line a busy: 4 calls (max_concurrent_calls)"),
                   "b": (503, "Line b offline: 403 Forbidden")})
    assert ctl.sent == []
    resp = ctl.responses[-1]
    assert (resp.status, resp.reason) == (503, "Line b offline: 403 Forbidden")
    assert c.tried == [Refused("a", "555", "", 486, "Line a busy: 4 calls "
                                                  "(max_concurrent_calls)"),
                       Refused("b", "555", "", 503, "Line b offline: 403 Forbidden")]
    t = [(r.kind, r.line_out, r.status) for r in ctl.ended[0].cdrs()]
    assert t == [("O", "b", 503), ("T", "a", 486), ("T", "b", 503)]


def test_the_providers_challenge_is_answered_once_with_the_lines_credentials() -> None:
    auth = DigestAuthenticator("provider", algorithms=("MD5",))
    c, ctl = call({"a": spec("a", credentials=("acc", "pw"), strip_100rel=True)})
    first = ctl.sent[0][0]
    assert first.headers.get("Supported") == "timer"  # disable_100rel
    ctl.reply(407, auth.challenge(0.0, proxy=True))
    again = ctl.sent[1][0]
    assert again.call_id == first.call_id and again.cseq == (2, "INVITE")
    assert again.headers.get("From") == first.headers.get("From")
    creds = auth.parse_credentials_untrusted(again.headers.get("Proxy-Authorization") or "")
    assert (creds.username, creds.uri) == ("acc", "sip:555@a.example")
    ctl.reply(407, auth.challenge(0.0, proxy=True))  # refused again: the failure stands
    assert len(ctl.sent) == 2
    resp = ctl.responses[-1]  # not a challenge the caller could answer: a 403 with the reason
    assert (resp.status, resp.reason) == (403, "a: credentials refused (Proxy Authentication "
                                               "Required)")
    assert "proxy-authenticate" not in resp.headers
    assert c.state is CallState.ENDED
