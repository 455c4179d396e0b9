"""Headers API, URIs and addresses, building messages, responses, the stream framer."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from minisip.sip.errors import BadMessage
from minisip.sip.headers import Headers, canonical
from minisip.sip.message import (
    Request, Response, echoed, make_response, new_branch, new_call_id, new_tag,
)
from minisip.sip.parser import PING, StreamFramer, parse_message_untrusted
from minisip.sip.status import SIPStatus, reason_phrase
from minisip.sip.uri import (
    URI,
    Address,
    Via,
    parse_address_untrusted,
    parse_addresses_untrusted,
    parse_uri_untrusted,
    parse_via_untrusted,
)

REGISTER = (b"REGISTER sip:pbx SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1;rport\r\n"
            b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\n"
            b"From: \"A\" <sip:100@pbx>;tag=ft\r\nTo: <sip:100@pbx>\r\n"
            b"Call-ID: cid@h\r\nCSeq: 7 REGISTER\r\nContact: <sip:100@192.0.2.10:5062>\r\n"
            b"Content-Length: 0\r\n\r\n")


# -- headers -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "canon"), [
    ("i", "call-id"), ("m", "contact"), ("e", "content-encoding"), ("l", "content-length"),
    ("c", "content-type"), ("f", "from"), ("s", "subject"), ("k", "supported"), ("t", "to"),
    ("v", "via"), ("o", "event"), ("r", "refer-to"), ("b", "referred-by"), ("u", "allow-events"),
    ("x", "session-expires"), ("y", "identity"), ("a", "accept-contact"), ("j", "reject-contact"),
    ("d", "request-disposition"), ("Call-ID", "call-id"), ("V", "via"), ("X-Custom", "x-custom")])
def test_canonical_expands_compact_forms_and_lowers(name: str, canon: str) -> None:
    assert canonical(name) == canon


def test_headers_keep_order_and_repeats() -> None:
    h = Headers([("Via", "a"), ("From", "f"), ("v", "b"), ("Route", "<sip:r1>, <sip:r2>")])
    assert h.get("VIA") == "a" and h.get("v") == "a"
    assert h.get_all("via") == ["a", "b"]
    assert h.values("route") == ["<sip:r1>", "<sip:r2>"]
    assert list(h) == [("Via", "a"), ("From", "f"), ("v", "b"), ("Route", "<sip:r1>, <sip:r2>")]
    assert len(h) == 4 and "from" in h and "f" in h and "to" not in h
    assert h.get("to") is None and h.get_all("to") == [] and h.values("to") == []


def test_headers_mutations() -> None:
    h = Headers([("Via", "a"), ("To", "t"), ("Via", "b")])
    h.prepend("Via", "top")
    assert h.get_all("via") == ["top", "a", "b"] and list(h)[0] == ("Via", "top")
    h.set("via", "only")
    assert h.get_all("via") == ["only"] and list(h) == [("Via", "only"), ("To", "t")]
    h.set("Expires", "60")
    assert list(h)[-1] == ("Expires", "60")
    assert h.remove("v") == 1 and "via" not in h and h.remove("via") == 0
    h.add("Contact", "<sip:a@b>")
    c = h.copy()
    c.add("Contact", "<sip:c@d>")
    assert h.get_all("contact") == ["<sip:a@b>"] and len(c.get_all("contact")) == 2


def test_values_respect_quotes_and_angle_brackets() -> None:
    h = Headers([("Contact", '"Doe, John" <sip:j@h;x=a,b>;q=0.1, <sip:k@h>'),
                 ("Allow", "INVITE,ACK, ,BYE")])
    assert h.values("contact") == ['"Doe, John" <sip:j@h;x=a,b>;q=0.1', "<sip:k@h>"]
    assert h.values("allow") == ["INVITE", "ACK", "BYE"]


def test_changing_headers_drops_parsed_views() -> None:
    m = parse_message_untrusted(REGISTER)
    assert m.branch == "z9hG4bK1" and m.cseq == (7, "REGISTER") and m.to_tag is None
    m.headers.prepend("Via", "SIP/2.0/TCP 192.0.2.99;branch=z9hG4bKnew")
    assert m.branch == "z9hG4bKnew" and len(m.vias) == 3
    m.headers.set("CSeq", "8 REGISTER")
    assert m.cseq == (8, "REGISTER")
    m.headers.set("To", "<sip:100@pbx>;tag=tt")
    assert m.to_tag == "tt"
    m.headers.remove("Contact")
    assert m.contacts == []
    m.headers = Headers([("Call-ID", "other")])
    assert m.call_id == "other"


def test_driver_style_via_stamping_round_trips() -> None:
    """What transport/driver.stamp_via does: edit the cached top Via, write the values back."""
    m = parse_message_untrusted(REGISTER)
    via = m.top_via
    via.params["received"] = "203.0.113.7"
    via.params["rport"] = "6000"
    values = m.headers.values("Via")
    values[0] = str(via)
    m.headers.remove("Via")
    for v in reversed(values):
        m.headers.prepend("Via", v)
    again = parse_message_untrusted(m.to_bytes())
    assert again.top_via.received == "203.0.113.7" and again.top_via.rport == "6000"
    assert again.vias[1].branch == "z9hG4bK0"


# -- URIs, addresses, Via --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "fields", "back"), [
    ("sip:alice@Atlanta.COM", dict(user="alice", host="atlanta.com", port=None), None),
    ("sip:alice:secretword@atlanta.com;transport=tcp",
     dict(password="secretword", params={"transport": "tcp"}), None),
    ("sips:alice@atlanta.com?subject=project%20x&priority=urgent",
     dict(scheme="sips", headers={"subject": "project%20x", "priority": "urgent"}), None),
    ("sip:+1-212-555-1212:1234@gateway.com;user=phone",
     dict(user="+1-212-555-1212", password="1234", params={"user": "phone"}), None),
    ("sip:alice@192.0.2.4:5070", dict(host="192.0.2.4", port=5070), None),
    ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
     dict(user=None, params={"method": "REGISTER"}), None),
    ("sip:alice;day=tuesday@atlanta.com", dict(user="alice;day=tuesday"), None),
    ("sip:[2001:db8::10]:5070;lr", dict(host="2001:db8::10", port=5070, params={"lr": None}),
     None),
    ("sip:%61lice@h", dict(user="alice"), "sip:alice@h"),
    ("SIP:Bob@H", dict(scheme="sip", user="Bob", host="h"), "sip:Bob@h"),
    ("tel:+358-555-1234567;postd=pp22", dict(scheme="tel", user="+358-555-1234567", host="",
                                             params={"postd": "pp22"}), None),
    ("urn:service:sos", dict(scheme="urn", opaque="service:sos", host=""), None),
])
def test_uri_parse_and_serialize(text: str, fields: dict[str, object], back: str | None) -> None:
    uri = parse_uri_untrusted(text)
    for k, v in fields.items():
        assert getattr(uri, k) == v, k
    assert str(uri) == (back or text.replace("Atlanta.COM", "atlanta.com"))


@pytest.mark.parametrize("text", ["sip:", "sip:@h", "sip:a@", "sip:a@h:port", "sip:a@h:70000",
                                  "sip:a@[::1", "sip:a@h;;", "sip:a b@h", "tel:abc!",
                                  "noscheme", "1x:abc", "http:<x>", "sip:a@h?x"])
def test_bad_uris_raise_bad_message(text: str) -> None:
    with pytest.raises(BadMessage):
        parse_uri_untrusted(text)


def test_uri_user_is_escaped_on_output() -> None:
    u = URI("sip", "a b@c", None, "h", None, {}, {})
    assert str(u) == "sip:a%20b%40c@h"
    assert parse_uri_untrusted(str(u)).user == "a b@c"


def test_address_forms() -> None:
    a = parse_address_untrusted('"Bob" <sips:bob@biloxi.com> ;tag=a48s')
    assert a.display_name == "Bob" and a.uri.scheme == "sips" and a.tag == "a48s"
    assert str(a) == '"Bob" <sips:bob@biloxi.com>;tag=a48s'
    b = parse_address_untrusted("sip:+12125551212@phone2net.com;tag=887s")
    assert b.display_name is None and b.tag == "887s" and b.uri.params == {}
    assert str(b) == "<sip:+12125551212@phone2net.com>;tag=887s"
    c = parse_address_untrusted('<sip:a@h;transport=tcp>;+sip.instance="<urn:uuid:1>";reg-id=1')
    assert c.params == {"+sip.instance": '"<urn:uuid:1>"', "reg-id": "1"}
    assert c.uri.params == {"transport": "tcp"}
    assert Address(None, URI("sip", "x", None, "h"), {"expires": "5"}).__str__() == \
        "<sip:x@h>;expires=5"
    lst = parse_addresses_untrusted('<sip:a@h>;q=0.7, "Z, Y" <sip:b@h>, sip:c@h;expires=0')
    assert [str(x.uri) for x in lst] == ["sip:a@h", "sip:b@h", "sip:c@h"]
    assert lst[2].params == {"expires": "0"}


@pytest.mark.parametrize("text", ["", '"open <sip:a@h>', "<sip:a@h", "<sip:a@h> junk",
                                  '"x" sip:a@h', "sip:a@h;=x", "<sip:a@h>;tag="])
def test_bad_addresses_raise_bad_message(text: str) -> None:
    with pytest.raises(BadMessage):
        parse_address_untrusted(text)


def test_via_parse_and_serialize() -> None:
    vias = parse_via_untrusted("SIP/2.0/udp [2001:DB8::9]:5060;branch=z9hG4bKa;rport;"
                               "received=192.0.2.1,SIP/2.0/TLS h.example.com;branch=z9hG4bKb")
    assert vias[0] == Via("UDP", "2001:db8::9", 5060,
                          {"branch": "z9hG4bKa", "rport": None, "received": "192.0.2.1"})
    assert vias[0].rport == "" and vias[1].rport is None and vias[1].port is None
    assert str(vias[0]) == "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKa;rport;received=192.0.2.1"
    assert vias[1].sent_by == "h.example.com"


# -- building messages --------------------------------------------------------------------------

def test_request_and_response_build_and_serialize() -> None:
    req = Request("OPTIONS", "sip:pbx", [("Via", f"SIP/2.0/UDP h;branch={new_branch()}"),
                                          ("Content-Length", "99"), ("To", "<sip:pbx>")],
                  body=b"x")
    out = req.to_bytes()
    assert out.startswith(b"OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK")
    assert b"\r\nContent-Length: 1\r\nTo: <sip:pbx>\r\n\r\nx" in out
    assert Response(486).reason == "Busy Here" and Response(299).reason == "OK"
    assert Response(404, "Nobody").to_bytes() == b"SIP/2.0 404 Nobody\r\nContent-Length: 0\r\n\r\n"


def test_make_response_echoes_header_text_and_adds_a_to_tag() -> None:
    data = REGISTER.replace(b"To: <sip:100@pbx>", b"To:   <sip:100@pbx>")
    req = parse_message_untrusted(data)
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="xyz", headers=[("Expires", "60")])
    out = resp.to_bytes()
    assert out.startswith(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1;"
                          b"rport\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\n"
                          b"From: \"A\" <sip:100@pbx>;tag=ft\r\n")
    assert b"\r\nTo: <sip:100@pbx>;tag=xyz\r\nCall-ID: cid@h\r\nCSeq: 7 REGISTER\r\n" in out
    assert out.endswith(b"Expires: 60\r\nContent-Length: 0\r\n\r\n")
    assert b"Contact" not in out
    again = parse_message_untrusted(out)
    assert again.to_tag == "xyz" and again.cseq == (7, "REGISTER")
    # A To that has a tag already is kept byte for byte.
    tagged = parse_message_untrusted(data.replace(b"<sip:100@pbx>\r\n", b"<sip:100@pbx>;tag=old\r\n"))
    assert isinstance(tagged, Request)
    assert make_response(tagged, 486, to_tag="new").to_tag == "old"
    assert make_response(tagged, 486).reason == "Busy Here"


def test_identifiers_are_fresh_tokens() -> None:
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()
    assert len({new_tag() for _ in range(100)}) == 100
    cid = new_call_id()
    assert len(cid) >= 20 and cid.isalnum()


def test_status_enum_has_phrases() -> None:
    assert SIPStatus.UNSUPPORTED_URI_SCHEME == 416
    assert SIPStatus(423).phrase == "Interval Too Brief"
    assert SIPStatus(489).phrase == "Bad Event" and SIPStatus(430).phrase == "Flow Failed"
    assert reason_phrase(599) == "Server Error"


# -- stream framing -------------------------------------------------------------------------------

def test_framer_cuts_messages_and_reports_pings() -> None:
    f = StreamFramer()
    body = b"hello"
    two = REGISTER + REGISTER.replace(b"Content-Length: 0", b"Content-Length: 5") + body
    f.feed(b"\r\n\r\n" + two[:50])
    assert f.next_message() is PING and f.pings == 1
    assert f.next_message() is None and f.pending
    f.feed(two[50:] + b"\r\n")  # a trailing pong
    assert f.next_message() == REGISTER
    second = f.next_message()
    assert second is not None and second.endswith(b"\r\n\r\nhello")
    assert f.next_message() is None and not f.pending
    f.feed(b"\r\n")  # the held-back CRLF and this one make a CRLFCRLF ping
    assert f.next_message() is PING


def test_framer_rejects_what_loses_the_framing() -> None:
    no_length = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    for data, reason in [(no_length, "Missing Content-Length"),
                         (REGISTER.replace(b"Length: 0", b"Length: x"), "Content-Length"),
                         (REGISTER.replace(b"Length: 0", b"Length: 99999999"), "too large")]:
        f = StreamFramer()
        f.feed(data)
        with pytest.raises(BadMessage, match=reason):
            f.next_message()
    f = StreamFramer(max_header=1000)
    f.feed(b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 300)
    with pytest.raises(BadMessage, match="too large"):
        f.next_message()


def test_framer_byte_by_byte() -> None:
    f = StreamFramer()
    stream = (REGISTER + b"\r\n\r\n") * 3
    out: list[bytes] = []
    for i in range(len(stream)):
        f.feed(stream[i:i + 1])
        while (m := f.next_message()) is not None:
            out.append(m)
    assert out == [REGISTER, PING] * 3


# -- layering -----------------------------------------------------------------------------------

def test_sip_package_never_imports_trio() -> None:
    pkg = Path(__file__).resolve().parents[2] / "minisip" / "sip"
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "trio" for n in names), path


def test_line_breaks_in_values_set_by_code_cannot_inject_headers() -> None:
    h = Headers([("Subject", "hi\r\nVia: evil")])
    h.add("X-A", "a\nb")
    h.set("X-B", "c\rd")
    h.prepend("X-C", "e\r\n")
    out = Request("MESSAGE", "sip:a@b", h).to_bytes()
    assert out.count(b"\r\n") == 7 and b"\r\nVia" not in out  # 6 lines + the blank one


def test_a_compacted_message_keeps_its_bytes_and_parses_its_views_again() -> None:
    from minisip.sip.parser import parse_message_untrusted
    data = (b"INVITE sip:101@example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKx1;rport\r\n"
            b"From:   <sip:100@example.com>;tag=a1\r\n"  # odd spacing: its raw line stays
            b"To: <sip:101@example.com>\r\nCall-ID: c1@x\r\nCSeq: 2 INVITE\r\n"
            b"Contact: <sip:100@192.0.2.7>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    req = parse_message_untrusted(data)
    assert isinstance(req, Request)
    before = req.to_bytes()
    req.compact()
    assert req.headers._index is None and req.headers.cache == {} and req._ruri is None
    raws = [e[3] for e in req.headers._items]
    assert raws.count(None) == len(raws) - 1  # only the oddly spaced line is kept as is
    assert req.to_bytes() == before
    assert (req.call_id, req.from_tag, req.cseq, req.request_uri.user) == (
        "c1@x", "a1", (2, "INVITE"), "101")


def test_a_response_kept_unechoed_is_whole_again_from_the_request_retransmitted() -> None:
    text = ("REGISTER sip:pbx SIP/2.0\r\n"
            "v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-p;received=192.0.2.1\r\n"
            "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-a;rport=5062\r\n"
            "Max-Forwards: 69\r\nf: <sip:100@pbx>;tag=ft\r\nTo: <sip:100@pbx>\r\n"
            "i: reg-1@10.0.0.5\r\nCSeq: 7 REGISTER\r\nl: 0\r\n\r\n")
    req = parse_message_untrusted(text.encode())
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="tt", headers=[
        ("Contact", "<sip:100@10.0.0.5:5062>;expires=3600"), ("Content-Type", "text/plain")])
    resp.body = b"hello"
    kept = resp.unechoed()
    again = parse_message_untrusted(text.encode())  # the retransmission, parsed anew
    assert isinstance(again, Request)
    assert echoed(kept, again) == resp.to_bytes()
    assert b"Via" not in kept and b"i: " not in kept and len(kept) < len(resp.to_bytes()) / 2
