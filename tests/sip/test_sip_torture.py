"""RFC 4475 torture messages against the parser, with the policy of cases.json.

The messages live in the shared directory beside the checkout (never copied here).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from minisip.sip.errors import BadMessage
from minisip.sip.message import Request
from minisip.sip.parser import PING, StreamFramer, parse_message_untrusted

TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "rfc4475"
PLACEHOLDERS = {b"{HOST}": b"127.0.0.1", b"{PORT}": b"5060", b"{LHOST}": b"127.0.0.1",
                b"{LPORT}": b"5070"}


def load_cases() -> dict[str, dict[str, object]]:
    path = TORTURE / "cases.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def torture_bytes(name: str) -> bytes:
    data = (TORTURE / f"{name}.sip").read_bytes()
    for k, v in PLACEHOLDERS.items():
        data = data.replace(k, v)
    return data


CASES = load_cases()
needs_torture = pytest.mark.skipif(not CASES, reason=f"RFC 4475 messages not found at {TORTURE}")


def _read_everything(m: object) -> None:
    """Every lazy view: each either works or raises BadMessage."""
    for attr in ("call_id", "cseq", "vias", "top_via", "branch", "from_addr", "to_addr",
                 "from_tag", "to_tag", "max_forwards", "contacts", "contact_star", "expires",
                 "content_type", "mime_type", "request_uri"):
        try:
            getattr(m, attr, None)
        except BadMessage:
            pass


@needs_torture
@pytest.mark.parametrize("name", sorted(CASES) or ["none"])
def test_torture_message_follows_policy(name: str) -> None:
    policy = CASES[name]["policy"]
    data = torture_bytes(name)
    if policy in ("valid-request", "valid-reject"):
        m = parse_message_untrusted(data)
        assert isinstance(m, Request)
        _read_everything(m)
    elif policy == "invalid-strict":
        with pytest.raises(BadMessage) as info:
            parse_message_untrusted(data)
        expect = str(CASES[name].get("rfc_expect", "400"))
        allowed = {int(c) for c in expect.replace(" ", "").split("/") if c.isdigit()} | {
            int(c) for c in CASES[name].get("also_allow", [])} | {400}  # type: ignore[attr-defined]
        assert info.value.status in allowed
    else:  # invalid-liberal, no-response: either way, but only BadMessage
        try:
            m = parse_message_untrusted(data)
        except BadMessage as exc:
            if policy == "no-response":
                assert exc.status is None  # a bad response is dropped, never answered
        else:
            _read_everything(m)


@needs_torture
def test_torture_responses_that_must_be_dropped_never_ask_for_an_answer() -> None:
    for name, case in CASES.items():
        if case["policy"] == "no-response" and torture_bytes(name).startswith(b"SIP/"):
            try:
                parse_message_untrusted(torture_bytes(name))
            except BadMessage as exc:
                assert exc.status is None, name


@needs_torture
def test_torture_specifics() -> None:
    """What the RFC says a parser should see in a few of them."""
    wsinv = parse_message_untrusted(torture_bytes("valid/wsinv"))
    assert wsinv.cseq == (9, "INVITE") and wsinv.max_forwards == 68
    assert [v.branch for v in wsinv.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert wsinv.from_addr.display_name == 'J Rosenberg \\"'
    assert wsinv.from_tag == "98asjd8" and wsinv.to_tag == "1918181833n"
    assert wsinv.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    esc01 = parse_message_untrusted(torture_bytes("valid/esc01"))
    assert isinstance(esc01, Request)
    assert esc01.request_uri.user == "sips:user@example.com"
    assert esc01.to_addr.uri.user == "user"
    assert esc01.from_addr.uri.user == "I have spaces"
    escnull = parse_message_untrusted(torture_bytes("valid/escnull"))
    assert escnull.to_addr.uri.user == "null-\x00-null"
    assert [c.uri.user for c in escnull.contacts] == ["\x00", "\x00\x00"]
    semi = parse_message_untrusted(torture_bytes("valid/semiuri"))
    assert isinstance(semi, Request)
    assert semi.request_uri.user == "user;par=u@example.net" and semi.request_uri.params == {}
    dbl = parse_message_untrusted(torture_bytes("valid/dblreq"))
    assert dbl.method == "REGISTER" and dbl.body == b""  # type: ignore[union-attr]
    longreq = parse_message_untrusted(torture_bytes("valid/longreq"))
    assert len(longreq.vias) == 34
    unksm2 = parse_message_untrusted(torture_bytes("valid/unksm2"))
    assert unksm2.to_addr.uri.scheme == "isbn" and str(unksm2.to_addr.uri) == "isbn:2983792873"
    for name in ("valid/unkscm", "valid/novelsc"):
        m = parse_message_untrusted(torture_bytes(name))
        with pytest.raises(BadMessage) as info:
            m.request_uri  # type: ignore[union-attr] # noqa: B018
        assert info.value.status == 416
    transports = parse_message_untrusted(torture_bytes("valid/transports"))
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    mpart = parse_message_untrusted(torture_bytes("valid/mpart01"))
    assert len(mpart.body) == 553


@needs_torture
def test_torture_valid_messages_frame_on_a_stream_byte_by_byte() -> None:
    for name, case in CASES.items():
        data = torture_bytes(name)
        if case["policy"] not in ("valid-request", "valid-reject") or b"Content-Length" not in \
                data and b"\nl:" not in data.lower():
            continue
        framer = StreamFramer()
        got: list[bytes] = []
        for i in range(len(data)):  # until the first message: what follows is datagram junk
            framer.feed(data[i:i + 1])
            m = framer.next_message()
            if m is not None:
                assert m is not PING
                got.append(m)
                break
        assert got, name
        assert data.startswith(got[0])
        parse_message_untrusted(got[0])
