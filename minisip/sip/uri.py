"""SIP/SIPS/tel URIs, name-addr / addr-spec addresses and Via values (RFC 3261 19.1, 20, 25).

Parsing is split/partition on the separators the grammar guarantees (``@`` cannot
appear unescaped in userinfo, params or headers, so the first one ends the
userinfo); regexes only check a finished piece. Parameter values are kept as on
the wire (quotes included) so ``str()`` of an untouched object gives back the
same text; only the user part is unescaped, because that is what gets compared.
URIs of other schemes (``isbn:``, ``http:``) parse generically into ``opaque``:
headers may carry them; a Request-URI with one is answered 416 by the caller.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote

from ._text import split_commas, split_outside_quotes
from .digits import digits_untrusted
from .errors import BadMessage

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOST = re.compile(r"[A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\]")  # hostname, IPv4, [IPv6]
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Unreserved + user-unreserved (RFC 3261 25.1): everything else is %-escaped in a user.
_USER_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()&=+$,;?/]")
_PASSWORD_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()&=+$,]")
# Never raw in a SIP URI: blanks, controls, and what ends a name-addr or a quoted string.
_URI_BAD = re.compile(r'[\x00-\x20\x7f<>"]')
# Parameter names seen every day skip the token regex (they are tokens).
_KNOWN_PARAMS = frozenset({"branch", "rport", "received", "tag", "expires", "q", "transport",
                           "lr", "maddr", "ttl", "user", "method", "ob", "reg-id",
                           "+sip.instance", "gr", "phone-context", "alias", "comp"})
_URI_CACHE_MAX = 4096  # bound of the parse caches below (inputs come from strangers)
_KEY_MAX = 256  # and of their keys: 4096 keys of 60 KB from one flood would be 250 MB
_T = TypeVar("_T")
_TEL = re.compile(r"\+?[0-9A-Fa-f*#.()\-pPwW]+")  # digits, visual separators, pause/wait


def _unescape(s: str) -> str:
    # Escapes are UTF-8 octets; a '%' that is not an escape is kept as is (RFC 4475 esc02).
    return unquote(s, "utf-8", "surrogateescape") if "%" in s else s


def _escape(s: str, unsafe: re.Pattern[str]) -> str:
    if not unsafe.search(s):
        return s
    return unsafe.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogateescape")), s)


def parse_params_untrusted(text: str, what: str) -> dict[str, str | None]:
    """``a=b;c`` (the text after a leading ';') into a dict with lower-cased names."""
    params: dict[str, str | None] = {}
    pieces = _split_quoted(text, ";", what) if '"' in text else text.split(";")
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = name.strip()
        if name not in _KNOWN_PARAMS and not _TOKEN.fullmatch(name):
            raise BadMessage(f"Bad {what}")
        if eq:
            value = value.strip()
            if not value:
                raise BadMessage(f"Bad {what}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _split_quoted(text: str, sep: str, what: str) -> list[str]:
    parts = split_outside_quotes(text, sep)
    if parts is None:
        raise BadMessage(f"Bad {what}: unterminated quote")
    return parts


def _params_text(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


_HOSTPORT_CACHE: dict[str, tuple[str, int | None]] = {}


def parse_hostport_untrusted(text: str, what: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` -> (lower-case host without brackets, port)."""
    hit = _HOSTPORT_CACHE.get(text)
    if hit is None:
        hit = _parse_hostport_untrusted(text, what)
        _remember(_HOSTPORT_CACHE, text, hit)
    return hit


def _remember(cache: dict[str, _T], key: str, value: _T) -> None:
    """Keep a parse under its text, if short; a full cache starts over."""
    if len(key) <= _KEY_MAX:
        if len(cache) >= _URI_CACHE_MAX:
            cache.clear()
        cache[key] = value


def _parse_hostport_untrusted(text: str, what: str) -> tuple[str, int | None]:
    if text[:1] == "[":
        end = text.find("]")
        if end < 0:
            raise BadMessage(f"Bad {what}")
        host = text[1:end]
        rest = text[end + 1:]
        if not host or not _IPV6.fullmatch(host) or ":" not in host:
            raise BadMessage(f"Bad {what}")
        if not rest:
            return host.lower(), None
        if rest[0] != ":":
            raise BadMessage(f"Bad {what}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if not host or not _HOST.fullmatch(host):
            raise BadMessage(f"Bad {what}")
        if not colon:
            return host.lower(), None
    port = digits_untrusted(port_text, f"{what}: port", max_len=5)
    if port > 65535:
        raise BadMessage(f"Bad {what}: port")
    return host.lower(), port


@dataclass(slots=True)
class URI:
    scheme: str  #: 'sip', 'sips', 'tel' (or another scheme, see ``opaque``)
    user: str | None = None  #: unescaped; for tel: the number
    password: str | None = None  #: unescaped
    host: str = ""  #: lower case, IPv6 without brackets; '' for tel
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)  #: lower-cased names
    headers: dict[str, str] = field(default_factory=dict)  #: values as on the wire (escaped)
    opaque: str | None = None  #: everything after 'scheme:' for schemes we do not know

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{_params_text(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_UNSAFE))
            if self.password is not None:
                out += (":", _escape(self.password, _PASSWORD_UNSAFE))
            out.append("@")
        out.append(f"[{self.host}]" if ":" in self.host else self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(_params_text(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def hostport(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port is None else f"{h}:{self.port}"

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None


# Text -> a parsed URI to copy from. The same few URIs (our domain, the phones' AORs
# and contacts) come back in every message; a copy with fresh dicts is half the cost
# of a parse, and callers may still mutate what they get. Cleared when full.
_URI_CACHE: dict[str, URI] = {}


def parse_uri_untrusted(text: str) -> URI:
    """A URI from a header or the Request-URI. Unknown schemes parse into ``opaque``."""
    u = _URI_CACHE.get(text)
    if u is None:
        u = _parse_uri_untrusted(text)
        _remember(_URI_CACHE, text, u)
    return URI(u.scheme, u.user, u.password, u.host, u.port,
               dict(u.params) if u.params else {}, dict(u.headers) if u.headers else {},
               u.opaque)


def _parse_uri_untrusted(text: str) -> URI:
    scheme, colon, rest = text.partition(":")
    s = scheme.lower()
    if s == "sip" or s == "sips":
        return _parse_sip(s, rest)
    if not colon or not rest or not _SCHEME.fullmatch(scheme):
        raise BadMessage("Bad URI")
    if s == "tel":
        number, _, ptext = rest.partition(";")
        if not _TEL.fullmatch(number):
            raise BadMessage("Bad tel URI")
        return URI("tel", number, None, "", None,
                   parse_params_untrusted(ptext, "URI parameter") if ptext else {}, {})
    if any(c in rest for c in " \t<>\"") or not rest.isprintable():
        raise BadMessage("Bad URI")
    return URI(s, None, None, "", None, {}, {}, rest)


def _parse_sip(scheme: str, rest: str) -> URI:
    if _URI_BAD.search(rest):
        raise BadMessage("Bad SIP URI")
    at = rest.find("@")
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1:]
        u, colon, pw = userinfo.partition(":")
        if not u:
            raise BadMessage("Bad SIP URI: user")
        user = _unescape(u)
        if colon:
            password = _unescape(pw)
    rest, q, htext = rest.partition("?")
    hostport, semi, ptext = rest.partition(";")
    host, port = parse_hostport_untrusted(hostport, "SIP URI")
    params = parse_params_untrusted(ptext, "URI parameter") if semi else {}
    headers: dict[str, str] = {}
    if q:
        for h in htext.split("&"):
            k, eq, v = h.partition("=")
            if not k or not eq:
                raise BadMessage("Bad SIP URI: header")
            headers[k] = v
    return URI(scheme, user, password, host, port, params, headers)


# -- name-addr / addr-spec ----------------------------------------------------------

def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class Address:
    display_name: str | None
    uri: URI
    params: dict[str, str | None] = field(default_factory=dict)  #: header params: tag, q, ...

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        dn = f"{_quote(self.display_name)} " if self.display_name else ""
        return f"{dn}<{self.uri}>{_params_text(self.params)}"


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The unescaped content of the quoted string at text[start] == '"', and the end index."""
    i = start + 1
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise BadMessage("Bad address: unterminated quoted string")


# "display <uri>" (a name-addr up to its '>') -> (display name, URI text). A user's
# From, To and Contact recur in every message with only the params (the tag) new.
# Holding text and immutable str only, a hit cannot leak a mutated object; a key
# was a whole valid name-addr, so any text it begins parses to the same two parts.
_NAME_ADDR_CACHE: dict[str, tuple[str | None, str]] = {}


def parse_address_untrusted(text: str) -> Address:
    """``"Name" <sip:..>;tag=x``, ``Name <sip:..>`` or ``sip:a@b;tag=x`` (header params)."""
    v = text.strip()
    gt = v.find(">")
    hit = _NAME_ADDR_CACHE.get(v[:gt + 1]) if gt > 0 else None
    if hit is not None:
        display, utext = hit
    else:
        display, utext, gt = _name_addr_untrusted(v)
    if gt >= 0:
        uri = parse_uri_untrusted(utext)
        ptext = v[gt + 1:].strip()
        if ptext:
            if ptext[0] != ";":
                raise BadMessage("Bad address: text after >")
            ptext = ptext[1:]
    else:
        # addr-spec: RFC 3261 20.10, params after a bare URI belong to the header
        utext, _, ptext = v.partition(";")
        utext = utext.rstrip()
        if not utext or " " in utext or "," in utext:
            raise BadMessage("Bad address")
        uri = parse_uri_untrusted(utext)
    params = parse_params_untrusted(ptext, "address parameter") if ptext else {}
    if hit is None and gt >= 0:
        _remember(_NAME_ADDR_CACHE, v[:gt + 1], (display, utext))
    return Address(display, uri, params)


def _name_addr_untrusted(v: str) -> tuple[str | None, str, int]:
    """(display name, URI text, index of '>') of a name-addr; gt -1 for an addr-spec."""
    if not v:
        raise BadMessage("Bad address: empty")
    display: str | None = None
    if v[0] == '"':
        display, end = _read_quoted(v, 0)
        lt = v.find("<", end)
        if lt < 0 or v[end:lt].strip():
            raise BadMessage("Bad address: no <URI> after display name")
    else:
        lt = v.find("<")
        if lt > 0:
            display = v[:lt].strip() or None
            if display is not None and '"' in display:
                raise BadMessage("Bad address: display name")
    if lt < 0:
        return None, "", -1
    gt = v.find(">", lt)
    if gt < 0:
        raise BadMessage("Bad address: missing >")
    return display, v[lt + 1:gt].strip(), gt


def parse_addresses_untrusted(text: str) -> list[Address]:
    """A comma-separated list (Contact, Route...)."""
    return [parse_address_untrusted(p) for p in split_commas(text)]


# -- Via ----------------------------------------------------------------------------

_SENT_PROTOCOL = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*(.*)",
                            re.DOTALL | re.IGNORECASE)


@dataclass(slots=True)
class Via:
    transport: str  #: upper case: 'UDP', 'TCP', 'TLS', ...
    host: str  #: lower case, IPv6 without brackets
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """None when absent, '' when present without a value, else the value."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    @property
    def sent_by(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port is None else f"{h}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_params_text(self.params)}"


# "SIP/2.0/UDP host:port" (a Via value up to its first ';') -> (transport, host, port):
# one per peer, recurring in all its messages; str and int only, bounded.
_SENT_BY_CACHE: dict[str, tuple[str, str, int | None]] = {}


def _parse_one_via(text: str) -> Via:
    semi = text.find(";")
    head = text if semi < 0 else text[:semi]
    hit = _SENT_BY_CACHE.get(head)
    if hit is None:
        hit = _sent_by_untrusted(head)
        _remember(_SENT_BY_CACHE, head, hit)
    params: dict[str, str | None] = {}
    if semi >= 0:
        rest = text[semi + 1:]
        for piece in _split_quoted(rest, ";", "Via header") if '"' in rest else rest.split(";"):
            name, eq, value = piece.partition("=")
            name = name.strip()
            if name not in _KNOWN_PARAMS and not _TOKEN.fullmatch(name):
                raise BadMessage("Bad Via header")
            if eq:
                value = value.strip()
                if not value:
                    raise BadMessage("Bad Via header")
                params[name.lower()] = value
            else:
                params[name.lower()] = None
    return Via(hit[0], hit[1], hit[2], params)


def _sent_by_untrusted(head: str) -> tuple[str, str, int | None]:
    """(transport, host, port) of ``SIP/2.0/transport host[:port]``."""
    proto, _, rest = head.partition(" ")
    if len(proto) > 8 and proto[:8].upper() == "SIP/2.0/" and _TOKEN.fullmatch(proto[8:]):
        transport = proto[8:].upper()
    else:  # LWS around the slashes (RFC 4475 wsinv)
        m = _SENT_PROTOCOL.fullmatch(head)
        if m is None:
            raise BadMessage("Bad Via header")
        transport = m.group(1).upper()
        rest = m.group(2)
    hostport = rest.strip()
    if not hostport:
        raise BadMessage("Bad Via header")
    host, port = parse_hostport_untrusted(hostport, "Via header")
    return transport, host, port


def parse_via_untrusted(text: str) -> list[Via]:
    """Every Via value on one header line."""
    if "," in text:
        parts = _split_quoted(text, ",", "Via header") if '"' in text else text.split(",")
        if any(not p.strip() for p in parts):
            raise BadMessage("Bad Via header")
        return [_parse_one_via(p.strip()) for p in parts]
    return [_parse_one_via(text.strip())]
