"""Lines and trunks without sockets: registration loop, legs, identification, limits, DNS."""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import pytest
import trio

from minisip.config.schema import Incoming, Line, OutboundProxy, Trunk
from minisip.pbx.dialplan import RouteKind
from minisip.pbx.lines import dns
from minisip.pbx.lines.incoming import Origin, build_index, identify, incoming_route, \
    untrusted_trunk_port
from minisip.pbx.lines.outgoing import auth_username, line_leg, trunk_leg, without_100rel
from minisip.pbx.lines.registration import (LineRegistration, RegState, granted_expires,
                                            refresh_delay, retry_delay)
from minisip.pbx.lines.usage import Usage
from minisip.pbx.timers import TimerHeap
from minisip.sip.digest import AuthResult, DigestAuthenticator
from minisip.sip.message import Request, Response, make_response, new_branch, new_tag
from minisip.sip.peer import Peer

PROVIDER = Peer("udp", "192.0.2.10", 5060)


def line(**kw: Any) -> Line:
    return Line(**{"account": "2001", "server": "sip.example.com", **kw})


class FakePbx:
    """What a LineRegistration needs of the PBX: a clock, a timer heap, a wire."""

    server_header = "minisip"

    def __init__(self) -> None:
        self.t = 100.0
        self.timers = TimerHeap()
        self.sent: list[tuple[Request, Peer, Any, object]] = []
        self.published: list[tuple[str, str, dict[str, Any]]] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.timers.handle_timer(self.t)

    def via_for(self, peer: Peer) -> str:
        return f"SIP/2.0/UDP 198.51.100.1:5060;branch={new_branch()};rport"

    def contact_for(self, peer: Peer, user: str) -> str:
        return f"<sip:{user}@198.51.100.1:5060>"

    def send_request(self, req: Request, peer: Peer, on_response: Any, leg: Any) -> object:
        key = object()
        self.sent.append((req, peer, on_response, key))
        return key

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        self.published.append((topic, event, data))

    def answer(self, status: int, headers: list[tuple[str, str]] | None = None,
               which: int = -1) -> Request:
        req, _, on_response, key = self.sent[which]
        on_response(None, make_response(req, status, to_tag=new_tag(), headers=headers or []),
                    key)
        return req


def registration(pbx: FakePbx, **kw: Any) -> tuple[LineRegistration, list[RegState]]:
    states: list[RegState] = []
    reg = LineRegistration("prov", line(**kw), pbx=pbx, peers=lambda h, p, t: (PROVIDER,),
                           on_state=lambda r: states.append(r.state), rand=lambda: 1.0)
    return reg, states


# -- registration -----------------------------------------------------------------------

def test_registration_answers_the_challenge_and_refreshes_before_expiry() -> None:
    pbx = FakePbx()
    auth = DigestAuthenticator("provider", algorithms=("MD5",))
    reg, states = registration(pbx, password="s3cret", register_expires=600)
    reg.start()
    first = pbx.sent[0][0]
    assert first.uri == "sip:sip.example.com" and first.headers.get("Expires") == "600"
    assert first.headers.get("To") == "<sip:2001@sip.example.com>"
    assert first.headers.get("Contact") == "<sip:2001@198.51.100.1:5060>"
    pbx.answer(401, auth.challenge(pbx.t))
    second = pbx.sent[1][0]
    assert (second.call_id, second.cseq[0]) == (first.call_id, 2)
    creds = auth.parse_credentials_untrusted(second.headers.get("Authorization") or "")
    assert creds.username == "2001"
    assert auth.verify(creds, "REGISTER", "s3cret", pbx.t) is AuthResult.OK
    pbx.answer(200, [("Contact", "<sip:2001@198.51.100.1:5060>;expires=300")])
    assert (reg.state, reg.reason, reg.expires) == (RegState.ONLINE, "registered for 300 s", 300)
    pbx.advance(239)
    assert len(pbx.sent) == 2
    pbx.advance(1)  # a minute before the 300 s run out
    refresh = pbx.sent[2][0]
    assert refresh.call_id == first.call_id and refresh.cseq[0] == 3
    assert reg.state is RegState.ONLINE  # a refresh in flight is still online
    assert states == [RegState.REGISTERING, RegState.ONLINE]


@pytest.mark.parametrize("kw, user", [
    ({}, "2001"),
    ({"authorization_id": "auth77"}, "auth77"),
    ({"auth_user_with_domain": True}, "2001@sip.example.com"),
    ({"authorization_id": "auth77", "auth_user_with_domain": True}, "auth77@sip.example.com"),
])
def test_authorization_name(kw: dict[str, Any], user: str) -> None:
    assert auth_username(line(password="x", **kw)) == user


def test_wrong_password_goes_offline_with_the_reason_and_backs_off() -> None:
    pbx = FakePbx()
    auth = DigestAuthenticator("provider", algorithms=("MD5",))
    reg, _ = registration(pbx, password="wrong")
    reg.start()
    pbx.answer(401, auth.challenge(pbx.t))
    pbx.answer(401, auth.challenge(pbx.t))  # the credentials were refused
    assert reg.state is RegState.OFFLINE
    assert reg.reason == "401 Unauthorized: wrong credentials"
    assert len(pbx.sent) == 2
    pbx.advance(9.9)
    assert len(pbx.sent) == 2
    pbx.advance(0.2)  # the first retry after RETRY_BASE
    assert len(pbx.sent) == 3 and reg.state is RegState.REGISTERING


@pytest.mark.parametrize("failures, status, retry_after, delay", [
    (1, 408, None, 10), (2, 503, None, 20), (3, 0, None, 40), (20, 500, None, 1800),
    (1, 403, None, 60), (2, 404, None, 120), (1, 503, 7, 7),
])
def test_retry_delay_backs_off(failures: int, status: int, retry_after: int | None,
                               delay: float) -> None:
    assert retry_delay(failures, status, retry_after) == delay


def test_stale_nonce_is_answered_again_423_asks_for_more_and_403_waits_longer() -> None:
    pbx = FakePbx()
    reg, _ = registration(pbx, password="pw", register_expires=60)
    reg.start()
    stale = [("WWW-Authenticate", 'Digest realm="p", nonce="n1", qop="auth"')]
    pbx.answer(401, stale)
    pbx.answer(401, [("WWW-Authenticate", 'Digest realm="p", nonce="n2", qop="auth", '
                                          'stale=true')])
    assert len(pbx.sent) == 3  # a stale nonce is no wrong password
    pbx.answer(423, [("Min-Expires", "120")])
    assert pbx.sent[3][0].headers.get("Expires") == "120"
    pbx.answer(403)
    assert (reg.state, reg.reason) == (RegState.OFFLINE, "403 Forbidden")
    pbx.advance(59)
    assert len(pbx.sent) == 4
    pbx.advance(1.1)
    assert len(pbx.sent) == 5


def test_a_timeout_goes_offline_and_stop_unregisters_an_online_line() -> None:
    pbx = FakePbx()
    reg, states = registration(pbx)
    reg.start()
    req, _, on_response, key = pbx.sent[0]
    on_response(reg, Response(408, "Request Timeout"), key)
    assert (reg.state, reg.reason) == (RegState.OFFLINE, "408 Request Timeout")
    pbx.advance(10.1)
    pbx.answer(200)
    assert reg.state is RegState.ONLINE and reg.expires == 3600  # what we asked
    reg.stop()
    assert pbx.sent[-1][0].headers.get("Expires") == "0"
    assert reg.state is RegState.UNREGISTERING
    pbx.answer(200)
    assert reg.state is RegState.STOPPED
    assert states[-2:] == [RegState.UNREGISTERING, RegState.STOPPED]


def test_registration_waits_for_dns_and_goes_through_the_outbound_proxy() -> None:
    pbx = FakePbx()
    resolved: dict[tuple[str, int], tuple[Peer, ...] | None] = {("proxy.example.com", 5070): None}
    reg = LineRegistration("prov", line(outbound_proxy=OutboundProxy(
        enabled=True, address="proxy.example.com", port=5070)), pbx=pbx,
        peers=lambda h, p, t: resolved[(h, p)], on_state=lambda r: None)
    reg.start()
    assert (reg.state, reg.reason, pbx.sent) == (RegState.OFFLINE, "resolving proxy.example.com", [])
    resolved[("proxy.example.com", 5070)] = (Peer("udp", "192.0.2.99", 5070),)
    reg.dns_changed()
    req, peer, _, _ = pbx.sent[0]
    assert peer == Peer("udp", "192.0.2.99", 5070)
    assert req.headers.get("Route") == "<sip:proxy.example.com:5070;lr>"
    assert req.uri == "sip:sip.example.com"


def test_refresh_and_granted_expiry() -> None:
    assert refresh_delay(3600) == 3540 and refresh_delay(60) == 30 and refresh_delay(4) == 2
    req = Request("REGISTER", "sip:x", [("Via", "SIP/2.0/UDP h;branch=z9hG4bKa"),
                                        ("From", "<sip:a@x>;tag=1"), ("To", "<sip:a@x>"),
                                        ("Call-ID", "c"), ("CSeq", "1 REGISTER")])
    resp = make_response(req, 200, headers=[("Contact", "<sip:other@h>;expires=50"),
                                            ("Contact", "<sip:a@h>;expires=40")])
    assert granted_expires(resp, "sip:a@h", 3600) == 40
    assert granted_expires(make_response(req, 200, headers=[("Expires", "70")]),
                           "sip:a@h", 3600) == 70


# -- outgoing legs: every key of a line and a trunk that shows on the wire ------------------

CALLER = "0211234100"


@pytest.mark.parametrize("kw, field, value", [
    ({}, "uri", "sip:5551234@sip.example.com"),
    ({}, "to", "<sip:5551234@sip.example.com>"),
    ({}, "from_uri", "sip:2001@sip.example.com"),
    ({}, "peer", PROVIDER),
    ({}, "display", ""),
    ({}, "credentials", None),  # password "" = no authentication
    ({"port": 5080}, "uri", "sip:5551234@sip.example.com:5080"),
    ({"transport": "tcp"}, "uri", "sip:5551234@sip.example.com;transport=tcp"),
    ({"request_uri_parameter": "user=phone"}, "uri", "sip:5551234@sip.example.com;user=phone"),
    ({"original_caller_as_display_name": True}, "display", CALLER),
    ({"password": "pw"}, "credentials", ("2001", "pw")),
    ({"password": "pw", "authorization_id": "a9"}, "credentials", ("a9", "pw")),
    ({"password": "pw", "auth_user_with_domain": True}, "credentials",
     ("2001@sip.example.com", "pw")),
    ({"disable_100rel": True}, "strip_100rel", True),
    ({"no_answer_time": 25}, "no_answer_time", 25.0),
    ({"max_duration": 600}, "max_duration", 600.0),
    ({"outbound_proxy": OutboundProxy(enabled=True, address="10.0.0.1", port=5070)},
     "headers", (("Route", "<sip:10.0.0.1:5070;lr>"),)),
])
def test_line_leg(kw: dict[str, Any], field: str, value: Any) -> None:
    spec = line_leg("prov", line(**kw), "5551234", CALLER, PROVIDER)
    assert getattr(spec, field) == value
    assert (spec.exit, spec.callee, spec.caller_number) == ("prov", "5551234", CALLER)


def test_type1_line_leg_goes_to_the_gateway_contact() -> None:
    gw = Peer("udp", "192.0.2.7", 5062)
    spec = line_leg("fxo", line(type=1, request_uri_parameter="user=phone"), "5551234", CALLER,
                    gw, gateway_contact="sip:gw1@192.0.2.7:5062;transport=udp", domain="pbx")
    assert spec.uri == "sip:5551234@192.0.2.7:5062;transport=udp;user=phone"
    assert spec.to == "<sip:5551234@192.0.2.7:5062>"
    assert spec.from_uri == f"sip:{CALLER}@pbx" and spec.peer == gw


def trunk(**kw: Any) -> Trunk:
    return Trunk(**{"address": "192.0.2.50", **kw})


@pytest.mark.parametrize("kw, field, value", [
    ({}, "uri", "sip:5551234@192.0.2.50"),
    ({}, "from_uri", f"sip:{CALLER}@198.51.100.1"),
    ({"port": 5070}, "uri", "sip:5551234@192.0.2.50:5070"),
    ({"unified_caller_number": "8008"}, "from_uri", "sip:8008@198.51.100.1"),
    ({"request_uri_parameter": "user=phone"}, "uri", "sip:5551234@192.0.2.50;user=phone"),
    ({"tel_uri": True}, "uri", "tel:5551234"),
    ({"tel_uri": True}, "to", "<tel:5551234>"),
    ({"tel_uri": True, "unified_caller_number": "+4930"}, "from_uri", "tel:+4930"),
    ({"tel_uri": True, "request_uri_parameter": "npdi"}, "uri", "tel:5551234;npdi"),
    ({"disable_100rel": True}, "strip_100rel", True),
    ({"no_answer_time": 9}, "no_answer_time", 9.0),
    ({"max_duration": 60}, "max_duration", 60.0),
    ({"transport": "tls", "port": 5061}, "uri", "sip:5551234@192.0.2.50;transport=tls"),
])
def test_trunk_leg(kw: dict[str, Any], field: str, value: Any) -> None:
    spec = trunk_leg("carrier", trunk(**kw), "5551234", CALLER, PROVIDER,
                     local_host="198.51.100.1")
    assert getattr(spec, field) == value


def test_without_100rel() -> None:
    assert without_100rel("100rel, path, timer") == "path, timer"
    assert without_100rel("path") == "path"


# -- usage and limits -------------------------------------------------------------------------

def test_limits_refuse_with_the_key_that_refused() -> None:
    u = Usage()
    ln = line(max_concurrent_calls=2, max_outgoing_calls=1)
    assert u.refusal("prov", ln, outgoing=True) is None
    u.take("prov", outgoing=True)
    assert u.refusal("prov", ln, outgoing=True) == (
        403, "Line prov: 1 outgoing calls (max_outgoing_calls)")
    assert u.refusal("prov", ln, outgoing=False) is None  # incoming calls count only once
    u.take("prov", outgoing=False)
    assert u.refusal("prov", ln, outgoing=False) == (
        486, "Line prov busy: 2 calls (max_concurrent_calls)")
    assert u.refusal("c", trunk(max_concurrent_calls=1), outgoing=True) is None
    u.give_back("prov", outgoing=True)
    u.give_back("prov", outgoing=False)
    assert (u.calls, u.outgoing) == ({}, {})


# -- incoming: who is calling ---------------------------------------------------------------

def snapshot(lines: dict[str, Line] | None = None, trunks: dict[str, Trunk] | None = None
             ) -> Any:
    from minisip.config.loader import load_snapshot
    from tests.helpers import CONFIGS
    snap = load_snapshot(CONFIGS)
    return dataclasses.replace(snap, lines=MappingProxyType(lines or {}),
                               trunks=MappingProxyType(trunks or {}))


def test_identify_lines_and_trunks_by_source_address() -> None:
    snap = snapshot(
        {"a": line(account="1"), "b": line(account="2"),
         "gw": line(type=1, account="gw", server="")},
        {"t1": trunk(address="192.0.2.50", port=5060),
         "t2": trunk(address="192.0.2.60", match_port=False)})
    sources = {"a": [PROVIDER], "b": [PROVIDER], "gw": [Peer("udp", "192.0.2.7", 5062)],
               "t1": [Peer("udp", "192.0.2.50", 5060)], "t2": [Peer("udp", "192.0.2.60", 5060)]}
    index = build_index(snap, lambda n: sources[n])

    def who(peer: Peer, *users: str) -> str | None:
        o = identify(index, snap, peer, users)
        return o.name if o else None

    assert who(PROVIDER) == "a"
    assert who(PROVIDER, "2") == "b"  # the account called picks the line
    assert who(Peer("udp", "192.0.2.10", 5099)) is None  # another port: not the provider
    assert who(Peer("udp", "192.0.2.7", 5062)) == "gw"
    assert who(Peer("udp", "192.0.2.50", 5060)) == "t1"
    assert who(Peer("udp", "192.0.2.50", 5070)) is None
    assert untrusted_trunk_port(index, Peer("udp", "192.0.2.50", 5070)) == "t1"
    assert who(Peer("udp", "192.0.2.60", 40000)) == "t2"  # match_port: false
    assert untrusted_trunk_port(index, Peer("udp", "203.0.113.9", 5060)) is None


def test_incoming_route_destination_number_attendant_and_no_user_rights() -> None:
    snap = snapshot({"a": line()})
    origin = Origin("a", line())
    r = incoming_route(snap, origin, "100", "101")
    assert (r.kind, r.target) == (RouteKind.LOCAL_USER, "101")
    to_op = Origin("a", line(incoming=Incoming(destination_number="102")))
    assert incoming_route(snap, to_op, "0301", "5550000").target == "102"
    aa = Origin("a", line(incoming=Incoming(transfer_to="auto_attendant")))
    r = incoming_route(snap, aa, "0301", "5550000")
    assert (r.kind, r.target) == (RouteKind.SERVICE, "auto_attendant")
    # An outside caller "100" is not user 100: no outgroup prefix calls out for it.
    r = incoming_route(snap, origin, "100", "9555")
    assert (r.kind, r.status) == (RouteKind.REJECT, 404)


# -- DNS --------------------------------------------------------------------------------------

def test_srv_order_is_priority_then_weight() -> None:
    recs = [dns.Srv(20, 0, 5060, "c."), dns.Srv(10, 10, 5060, "a."),
            dns.Srv(10, 90, 5060, "b.")]
    assert [r.target for r in dns.order_srv(recs, rand=lambda total: total)] == ["b.", "a.", "c."]
    assert [r.target for r in dns.order_srv(recs, rand=lambda total: 0.0)] == ["a.", "b.", "c."]
    assert [r.target for r in dns.order_srv(recs, rand=lambda total: total / 2)] == [
        "b.", "a.", "c."]
    assert [r.target for r in dns.order_srv(recs, rand=lambda total: 1e9)] == ["b.", "a.", "c."]


async def test_resolver_srv_then_a_with_ttl_and_hosts_fallback() -> None:
    asked: list[tuple[str, str]] = []
    records = {("_sip._udp.example.com", "SRV"): dns.Answer(
        (dns.Srv(10, 0, 5070, "sip1.example.com."),), 60.0),
        ("sip1.example.com", "A"): dns.Answer(("192.0.2.1",), 30.0),
        ("proxy.example.com", "A"): dns.Answer(("192.0.2.2",), 300.0)}

    async def query(name: str, rtype: str) -> dns.Answer | None:
        asked.append((name, rtype))
        return records.get((name, rtype))

    async def hosts(name: str, port: Any, **kw: Any) -> list[tuple]:
        if name == "pbx-peer":
            return [(2, 2, 17, "", ("127.0.0.5", 0))]
        raise OSError("unknown")

    clock = [0.0]
    r = dns.Resolver(query, hosts, now=lambda: clock[0])
    changed: list[dns.Key] = []
    r.on_change = changed.append
    assert r.peers("127.0.0.1", 5060, "udp") == (Peer("udp", "127.0.0.1", 5060),)
    assert r.peers("example.com", 5060, "udp") is None  # not yet: queued
    assert await r.resolve(("example.com", 5060, "udp")) == (Peer("udp", "192.0.2.1", 5070),)
    assert r.peers("example.com", 5060, "udp") == (Peer("udp", "192.0.2.1", 5070),)
    # A port that is not the default: no SRV, the name's A record.
    assert await r.resolve(("proxy.example.com", 5080, "udp")) == (
        Peer("udp", "192.0.2.2", 5080),)
    assert ("_sip._udp.proxy.example.com", "SRV") not in asked
    assert await r.resolve(("pbx-peer", 5080, "udp")) == (Peer("udp", "127.0.0.5", 5080),)
    assert await r.resolve(("nowhere", 5080, "udp")) == ()
    assert changed == [("example.com", 5060, "udp"), ("proxy.example.com", 5080, "udp"),
                       ("pbx-peer", 5080, "udp"), ("nowhere", 5080, "udp")]
    # TTLs: the SRV answer's 60 s and the A record's 30 s: due again after 30 s.
    r.want([("example.com", 5060, "udp")])
    clock[0] = 29.0
    assert ("example.com", 5060, "udp") not in r._due()[0]
    clock[0] = 31.0
    assert ("example.com", 5060, "udp") in r._due()[0]
    # A failed refresh keeps the last good answer.
    records.clear()
    assert await r.resolve(("example.com", 5060, "udp")) == (Peer("udp", "192.0.2.1", 5070),)


async def test_resolver_task_resolves_what_is_wanted() -> None:
    async def query(name: str, rtype: str) -> dns.Answer | None:
        return dns.Answer(("192.0.2.3",), 60.0) if rtype == "A" else None

    r = dns.Resolver(query)
    got = trio.Event()
    r.on_change = lambda key: got.set()
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        assert r.peers("host.example", 5090, "udp") is None
        with trio.fail_after(5):
            await got.wait()
        assert r.peers("host.example", 5090, "udp") == (Peer("udp", "192.0.2.3", 5090),)
        nursery.cancel_scope.cancel()
