"""The PBX itself under fuzz: hypothesis plays a caller and a callee's two devices
against the in-process PBX (tests/pbx/harness.py), in any order: authenticated
INVITEs, provisional and final responses (reliable ones too), ACK, CANCEL, BYE from
either side, re-INVITEs, INFO/UPDATE/PRACK/MESSAGE, a TCP device losing its
connection, time passing; bodies and headers replaced by bad ones (issue 8's crash
inputs among them) and whole messages mutated byte-wise.

The properties: no exception anywhere (the error boundaries record none), and once
the phones answer what they are asked and the clock runs past every timer (Timer
B/F/H/J, no answer, max duration), nothing is left: no call, no dialog, no
transaction, no timer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.pbx.harness import Harness, Mutate, Phone, UacCall, UasCall, sdp

#: bodies a party may send instead of its proper SDP (issue 8's crash inputs first)
BAD_BODIES = [
    sdp("198.51.100.99").replace(b"a=sendrecv", b"a=ptime:\xc2\xb2"),
    sdp("198.51.100.99").replace(b"m=audio 4000", b"m=audio \xc2\xb20000"),
    sdp("198.51.100.99").replace(b"a=rtpmap:101 telephone-event/8000",
                                 b"a=rtpmap:\xc2\xb2 x/\xc2\xb2"),
    sdp("198.51.100.99").replace(b"o=phone 1 1", b"o=phone 1 \xc2\xb2"),
    sdp("10.0.0.10", direction="sendonly"),  # looks NATed: relays when relay is on
    sdp("0.0.0.0"),
    sdp("2001:db8::5"),
    b"v=0\r\nm=audio\r\n",
    b"not sdp at all",
    b"",
]
BAD_HEADERS = [
    [("RSeq", "\xb2"), ("Require", "100rel")],
    [("RSeq", "99999999999999999999"), ("Require", "100rel")],
    [("Require", "timer")],
    [("Record-Route", "<sip:203.0.113.7;lr>")],
    [("Record-Route", "<sip:proxy.example.com;lr>, <sip:[2001:db8::1]:5070;transport=tcp;lr>")],
    [("Contact", "<sip:x@\xb2>")],
    [("Contact", "*")],
    [("Max-Forwards", "0")],
    [("Content-Type", "application/dtmf-relay")],
    [("Expires", "\xb2")],
]
INSERTS = [b"\r\n", b" ", b":", b";", b",", b"<", b">", b"\x00", b"\xc2\xb2", b"\r\n\r\n",
           b";rport=abc", b";tag=", b"99999999999", b"SIP/2.0"]


@st.composite
def mutations(draw: st.DrawFn) -> Mutate | None:
    """None (send as built), or a byte-level mutation applied to the serialized message."""
    kind = draw(st.sampled_from(["none", "none", "none", "flip", "insert", "delete",
                                 "truncate", "rport"]))
    if kind == "none":
        return None
    frac = draw(st.floats(0, 1))
    byte = draw(st.integers(0, 255))
    insert = draw(st.sampled_from(INSERTS))
    span = draw(st.integers(1, 12))

    def mutate(data: bytes) -> bytes:
        pos = int(frac * max(0, len(data) - 1))
        b = bytearray(data)
        if kind == "flip" and b:
            b[pos] = byte
        elif kind == "insert":
            b[pos:pos] = insert
        elif kind == "delete":
            del b[pos:pos + span]
        elif kind == "truncate":
            del b[pos:]
        else:  # issue 8: rport that is no number
            return data.replace(b";rport", b";rport=abc", 1)
        return bytes(b)
    return mutate


body = st.one_of(st.none(), st.sampled_from(BAD_BODIES))
headers = st.one_of(st.just([]), st.sampled_from(BAD_HEADERS))
#: who is called: 101 (two devices, forwarding busy and no-answer calls to 102), 102
#: itself, a feature code (an app: minisip answers), a number nobody has
NUMBERS = st.sampled_from(["101", "101", "101", "102", "*78", "555"])
ACTIONS = st.one_of(
    st.tuples(st.just("invite"), body, headers, mutations(), NUMBERS),
    st.tuples(st.just("respond"), st.integers(0, 2),
              st.sampled_from([100, 180, 183, 200, 200, 486, 603, 404, 500]),
              st.booleans(), body, headers, mutations()),
    st.tuples(st.just("ack"), mutations()),
    st.tuples(st.just("cancel"), mutations()),
    st.tuples(st.just("caller_request"),
              st.sampled_from(["BYE", "INVITE", "INFO", "UPDATE", "PRACK", "MESSAGE",
                               "OPTIONS", "NOTIFY"]), body, headers, mutations()),
    st.tuples(st.just("callee_request"), st.integers(0, 2),
              st.sampled_from(["BYE", "INVITE", "INFO", "UPDATE"]), body, headers, mutations()),
    st.tuples(st.just("answer_pbx"), st.integers(0, 3), st.sampled_from([200, 481, 500]),
              mutations()),
    st.tuples(st.just("advance"), st.sampled_from([0.1, 0.6, 4.0, 33.0])),
    st.tuples(st.just("disconnect")),
)


#: call flows a phone really goes through; each example perturbs one of them (steps
#: skipped, bodies/headers/bytes replaced, random actions inserted) and appends more
FLOWS: list[list[tuple[Any, ...]]] = [
    [("invite", None, [], None), ("respond", 0, 180, False, None, [], None),
     ("respond", 0, 200, False, None, [], None), ("ack", None),
     ("callee_request", 0, "BYE", None, [], None)],
    [("invite", None, [], None), ("respond", 0, 180, False, None, [], None),
     ("respond", 1, 183, True, None, [], None), ("respond", 1, 200, False, None, [], None),
     ("ack", None), ("respond", 0, 200, False, None, [], None),
     ("caller_request", "BYE", None, [], None)],
    [("invite", None, [], None), ("respond", 0, 180, False, None, [], None),
     ("advance", 0.6), ("cancel", None), ("respond", 0, 487, False, None, [], None),
     ("respond", 1, 200, False, None, [], None)],
    [("invite", None, [], None), ("respond", 0, 200, False, None, [], None), ("ack", None),
     ("caller_request", "INVITE", sdp("198.51.100.10", direction="sendonly"), [], None),
     ("answer_pbx", 1, 200, None), ("ack", None),
     ("callee_request", 0, "INVITE", None, [], None), ("answer_pbx", 0, 200, None),
     ("caller_request", "INFO", None, [("Content-Type", "application/dtmf-relay")], None),
     ("answer_pbx", 1, 200, None), ("callee_request", 0, "UPDATE", None, [], None),
     ("answer_pbx", 0, 200, None), ("caller_request", "BYE", None, [], None)],
    [("invite", None, [], None), ("respond", 0, 486, False, None, [], None),
     ("respond", 1, 603, False, None, [], None), ("ack", None)],
    [("invite", b"", [], None), ("respond", 1, 200, False, None, [], None),
     ("ack", sdp("198.51.100.10")), ("disconnect",), ("advance", 33.0)],
]


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for step in draw(st.sampled_from(FLOWS)):
        how = draw(st.sampled_from(["keep"] * 5 + ["skip", "perturb", "extra", "twice"]))
        if how == "skip":
            continue
        if how == "extra":
            out.append(draw(ACTIONS))
        if how == "perturb":
            step = _perturb(draw, step)
        out.append(step)
        if how == "twice":  # a retransmission, or a party repeating itself
            out.append(step)
    return out + draw(st.lists(ACTIONS, max_size=4))


def _perturb(draw: st.DrawFn, step: tuple[Any, ...]) -> tuple[Any, ...]:
    """The same step with a bad body, bad headers or mangled bytes where it has them."""
    name, *args = step
    if name == "ack":
        return (name, draw(mutations()))
    if name in ("invite", "caller_request", "callee_request", "respond"):
        args[-3], args[-2], args[-1] = draw(body), draw(headers), draw(mutations())
    elif name == "answer_pbx":
        args[-1] = draw(mutations())
    return (name, *args)


class Play:
    """The parties of one example and what each does for an action."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.alice = h.phone("100")
        self.bob = h.phone("101")
        self.bob_tcp = h.phone("101", transport="tcp")
        self.carol = h.phone("102")
        for p in (self.alice, self.bob, self.bob_tcp, self.carol):
            assert p.register().status == 200
        self.calls: list[UacCall] = []

    def devices(self) -> list[Phone]:
        return [self.bob, self.bob_tcp, self.carol]

    def leg(self, device: int) -> UasCall | None:
        return self.devices()[device].incoming()

    def run(self, action: tuple[Any, ...]) -> None:
        name, *args = action
        getattr(self, name)(*args)

    def invite(self, body: bytes | None, hdrs: list[tuple[str, str]], mutate: Mutate | None,
               number: str = "101") -> None:
        self.calls.append(self.alice.call(number, body=body, headers=hdrs, mutate=mutate))

    def respond(self, device: int, status: int, reliable: bool, body: bytes | None,
                hdrs: list[tuple[str, str]], mutate: Mutate | None) -> None:
        leg = self.leg(device)
        if leg is not None:
            b = body if body is not None else (leg.phone.sdp() if status == 200 else b"")
            leg.respond(status, b, headers=hdrs, reliable=reliable, mutate=mutate)

    def ack(self, body_or_mutate: Any) -> None:
        """ACK the last call's final response (with an SDP answer, given bytes)."""
        if self.calls:
            if isinstance(body_or_mutate, bytes):
                self.calls[-1].ack(body_or_mutate)
            else:
                self.calls[-1].ack(mutate=body_or_mutate)

    def cancel(self, mutate: Mutate | None) -> None:
        if self.calls:
            self.calls[-1].cancel(mutate=mutate)

    def caller_request(self, method: str, body: bytes | None, hdrs: list[tuple[str, str]],
                       mutate: Mutate | None) -> None:
        if self.calls:
            self.calls[-1].request(method, body or b"", hdrs, mutate=mutate)

    def callee_request(self, device: int, method: str, body: bytes | None,
                       hdrs: list[tuple[str, str]], mutate: Mutate | None) -> None:
        leg = self.leg(device)
        if leg is not None:
            leg.request(method, body or b"", hdrs, mutate=mutate)

    def answer_pbx(self, who: int, status: int, mutate: Mutate | None) -> None:
        """A party answers the last request the PBX sent it (a relayed BYE, re-INVITE...)."""
        phone = [self.alice, self.bob, self.bob_tcp, self.carol][who]
        reqs = [r for r in phone.requests() if r.method != "ACK"]
        if reqs:
            req = reqs[-1]
            body = phone.sdp() if req.method == "INVITE" and status == 200 else b""
            phone.answer(req, status, body=body, mutate=mutate)

    def advance(self, seconds: float) -> None:
        self.h.advance(seconds)

    def disconnect(self) -> None:
        if self.bob_tcp.peer in self.h.connected:
            self.h.disconnect(self.bob_tcp)


FUZZ = settings(max_examples=300, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(scripts(), st.booleans())
def test_no_exception_escapes_and_every_call_ends(tmp_path_factory: pytest.TempPathFactory,
                                                 actions: list[tuple[Any, ...]],
                                                 relay: bool) -> None:
    play_and_settle(tmp_path_factory.mktemp("fuzz"), actions, relay)


def play_and_settle(tmp_path: Path, actions: list[tuple[Any, ...]], relay: bool = False
                    ) -> None:
    forward = '{enabled: true, number: "102"}'
    h = Harness(tmp_path, users={"100": {"max_duration": 60},
                                 "101": {"forward_busy": forward, "forward_no_answer": forward}},
                system={"relay_media": "always" if relay else "auto"}, relay=relay)

    def play() -> None:
        p = Play(h)
        for action in actions:
            p.run(action)
            assert h.faults.count == 0, (action, h.faults.last)
            for call in h.calls.calls.values():
                event(f"call {call.state.value}")
        h.settle(400)
        assert h.leftovers() == {}, h.leftovers()

    async def in_trio() -> None:  # relays read trio's clock
        play()

    try:
        if relay:
            trio.run(in_trio)
        else:
            play()
    finally:
        h.close()
