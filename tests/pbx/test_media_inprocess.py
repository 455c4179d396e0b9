"""A call's media decisions in process: when to relay, what SDP each party reads, DTMF
converted between RFC 4733 and SIP INFO. Relays bind real loopback-free sockets and
read trio's clock, so these tests run inside trio (pytest-trio)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisip.media.dtmf import event_packets
from minisip.media.rtp import make_rtp
from minisip.pbx.media import looks_nated, needs_relay, sdp_address, sdp_on_hold
from minisip.sip.peer import Peer
from minisip.sip.sdp import parse_sdp_untrusted
from tests.pbx.harness import PBX_HOST, PBX_HOST6, Harness, Phone, UacCall, UasCall, sdp

A = Peer("udp", "10.0.0.1", 5060)


@pytest.mark.parametrize("policy, flagged, body, contacts, relay", [
    ("never", True, sdp("192.168.1.2"), [], False),
    ("always", False, b"", [], True),
    ("auto", True, b"", [], True),
    ("auto", False, sdp("192.168.1.2"), [], True),  # the caller's SDP names another host
    ("auto", False, sdp("10.0.0.1"), [("sip:101@10.0.0.10:5060", Peer("udp", "10.0.0.10", 5060))],
     False),
    # 10.0.0.1 is not 10.0.0.10: the callee's Contact is not where its REGISTER came from
    ("auto", False, sdp("10.0.0.1"), [("sip:101@10.0.0.10:5060", Peer("udp", "10.0.0.1", 5060))],
     True),
    ("auto", False, sdp("10.0.0.1"), [("sip:101@phone.lan", Peer("udp", "10.0.0.9", 5060))], True),
    # an IPv4 caller and an IPv6 callee cannot send each other RTP
    ("auto", False, sdp("10.0.0.1"), [("sip:101@[2001:db8::9]", Peer("udp", "2001:db8::9", 5060))],
     True),
])
def test_when_media_is_relayed(policy: str, flagged: bool, body: bytes,
                               contacts: list[tuple[str, Peer]], relay: bool) -> None:
    assert needs_relay(policy, flagged, body, A, contacts) is relay


_C_ADDRESS = st.sampled_from(["10.0.0.1", "10.0.0.10", "0.0.0.0", "::", "0:0:0:0:0:0:0:0",
                               "2001:db8::1", "phone.lan", "10.0.0.1/127", "10.0.0.1/127/3"])
_C_LINE = st.one_of(_C_ADDRESS.map(lambda a: f"c=IN IP4 {a}"),
                    st.sampled_from(["c=IN IP4", "c=IN IP4 10.0.0.1 x", "c=", "c=IN IP4\t10.0.0.1",
                                     "c=IN IP4 \u00a010.0.0.1"]))
_MEDIA = st.tuples(st.sampled_from(["audio", "video"]), st.sampled_from([0, 4000]),
                   st.lists(_C_LINE, max_size=2))


@given(st.lists(_C_LINE, max_size=2), st.lists(_MEDIA, max_size=3))
def test_a_nated_caller_is_told_by_the_sdp_audio_address(session: list[str],
                                                         media: list[Any]) -> None:
    """The shortcut on the c= lines answers as reading the parsed SDP does."""
    lines = ["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", *session, "t=0 0"]
    for kind, port, cs in media:
        lines += [f"m={kind} {port} RTP/AVP 0", *cs]
    body = "\r\n".join(lines + [""]).encode()
    where = sdp_address(body)
    assert looks_nated(body, A) is (where is not None and where[0] not in ("10.0.0.1", "0.0.0.0",
                                                                           "::"))


def test_hold_is_read_leniently() -> None:
    assert sdp_on_hold(sdp("10.0.0.1", direction="sendonly"))
    assert not sdp_on_hold(b"") and not sdp_on_hold(b"garbage")


@pytest.fixture
def relayed(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, system={"relay_media": "always"}, relay=True)
    yield h
    h.close()


def call_between(h: Harness, alice: Phone, bob: Phone, *, bob_dtmf: bool = True,
                 alice_dtmf: bool = True) -> tuple[UacCall, UasCall]:
    for p in (alice, bob):
        assert p.register().status == 200
    call = alice.call("101", body=alice.sdp(dtmf=alice_dtmf))
    leg = bob.incoming()
    assert leg is not None
    leg.answer(bob.sdp(dtmf=bob_dtmf))
    call.ack()
    return call, leg


def audio_of(body: bytes) -> Any:
    audio = parse_sdp_untrusted(body).audio()
    assert audio is not None
    return audio


async def test_relayed_call_points_each_party_at_the_relay(relayed: Harness) -> None:
    h = relayed
    alice, bob = h.phone("100"), h.phone("101")
    call, leg = call_between(h, alice, bob)
    to_bob, to_alice = audio_of(leg.invite.body), audio_of(call.final().body)  # type: ignore[union-attr]
    for m, body in ((to_bob, leg.invite.body), (to_alice, call.final().body)):  # type: ignore[union-attr]
        assert m.connection_address == PBX_HOST and 10000 <= m.port <= 20000
        assert parse_sdp_untrusted(body).origin.endswith(f"IN IP4 {PBX_HOST}")  # type: ignore[union-attr]
    media = next(iter(h.calls.calls.values())).media
    assert media is not None and media.session.leg("A").remote == (alice.peer.host, 4000)
    assert h.calls.live()[0]["media"] is not None
    call.bye()
    h.settle()
    assert h.leftovers() == {}
    assert h.server.cdr.query()[0]["a_packets"] == 0


async def test_an_ipv4_caller_reaches_an_ipv6_callee_through_the_relay(tmp_path: Path) -> None:
    h = Harness(tmp_path, relay=True)  # relay_media: auto
    alice, bob = h.phone("100"), h.phone("101", host="2001:db8::20")
    call, leg = call_between(h, alice, bob)
    to_bob = leg.invite.body
    assert audio_of(to_bob).connection_address == PBX_HOST6
    assert parse_sdp_untrusted(to_bob).origin.endswith(f"IN IP6 {PBX_HOST6}")  # type: ignore[union-attr]
    to_alice = call.final().body  # type: ignore[union-attr]
    assert b"IN IP6" not in to_alice and audio_of(to_alice).connection_address == PBX_HOST
    media = next(iter(h.calls.calls.values())).media
    assert media is not None  # one dual-stack socket pair per leg: v4 peers as mapped
    assert media.session.leg("A").remote == (f"::ffff:{alice.peer.host}", 4000)
    call.bye()
    h.settle()
    assert h.leftovers() == {}
    h.close()


async def test_rfc4733_keys_from_the_caller_reach_an_info_only_callee(relayed: Harness) -> None:
    h = relayed
    alice, bob = h.phone("100"), h.phone("101")
    call, leg = call_between(h, alice, bob, bob_dtmf=False)
    answer = audio_of(call.final().body)  # type: ignore[union-attr]
    # the callee cannot read events, but the caller is told it may send them: minisip reads
    assert answer.event_payload_type() == 101 and answer.fmtp[101] == "0-16"
    media = next(iter(h.calls.calls.values())).media
    assert media is not None
    rtp = media.session.leg("A").rtp
    for n, p in enumerate(event_packets("5", 1000, 120)):
        rtp.on_datagram(memoryview(make_rtp(101, n, p.timestamp, 7, p.payload, p.marker)),
                        (alice.peer.host, 4000), 1.0 + p.offset)
    h.pump()
    infos = bob.requests("INFO")
    assert len(infos) == 1 and b"Signal=5" in infos[0].body
    bob.answer(infos[0], 200)
    call.bye()
    h.settle()
    assert h.leftovers() == {}


async def test_info_from_the_callee_is_answered_for_an_rfc4733_caller(relayed: Harness) -> None:
    h = relayed
    alice, bob = h.phone("100"), h.phone("101")
    call, leg = call_between(h, alice, bob, bob_dtmf=False)
    leg.request("INFO", b"Signal=7\r\nDuration=100\r\n",
                [("Content-Type", "application/dtmf-relay")])
    assert [r.status for r in bob.responses(method="INFO")] == [200]
    assert not alice.requests("INFO")  # played to the caller as events instead
    leg.request("INFO", b"not dtmf", [("Content-Type", "application/dtmf-relay")])
    assert alice.requests("INFO")  # not DTMF: relayed as it is
    call.bye()
    h.settle()


async def test_hold_and_resume_through_the_relay(relayed: Harness) -> None:
    h = relayed
    alice, bob = h.phone("100"), h.phone("101")
    call, leg = call_between(h, alice, bob)
    for direction in ("sendonly", "sendrecv"):
        call.request("INVITE", alice.sdp(direction=direction, version=2))
        relayed_invite = [r for r in bob.requests("INVITE") if r.to_tag][-1]
        assert audio_of(relayed_invite.body).direction == direction
        bob.answer(relayed_invite, 200, body=bob.sdp())
        call.ack()
    call.bye()
    h.settle()
    assert h.leftovers() == {}


async def test_the_media_check_spares_a_call_whose_relay_saw_media_lately(
        tmp_path: Path) -> None:
    """The check fires on the PBX clock; idleness is the relay's own (trio's) reading,
    which here has barely moved: the call stays, and the check is armed again."""
    h = Harness(tmp_path, system={"relay_media": "always", "media_timeout": 20}, relay=True)
    alice, bob = h.phone("100"), h.phone("101")
    call, leg = call_between(h, alice, bob)
    h.advance(25)
    assert [c.state.value for c in h.calls.calls.values()] == ["talking"]
    assert not alice.requests("BYE") and len(h.pbx.timers) >= 1
    call.bye()
    h.settle()
    assert h.leftovers() == {}
    h.close()


async def test_sdp_the_relay_cannot_read_passes_unchanged(relayed: Harness) -> None:
    h = relayed
    alice, bob = h.phone("100"), h.phone("101")
    for p in (alice, bob):
        p.register()
    call = alice.call("101", body=b"v=0\r\nm=audio x\r\n")
    leg = bob.incoming()
    assert leg is not None and leg.invite.body == b"v=0\r\nm=audio x\r\n"
    leg.respond(486)
    call.ack()
    h.settle()
    assert h.leftovers() == {}
