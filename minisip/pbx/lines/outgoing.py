"""The outside leg of a call: the INVITE's addresses for one line or trunk (pure).

Given the exit a call is about to try and the numbers the dial plan left
(refined for that exit's outgoing group), :func:`line_leg` and :func:`trunk_leg`
say what the Call sends, as a :class:`LegSpec`:

=====================  =========================================  ==========================
                       type 0 line (a provider)                   trunk / type 1 line
=====================  =========================================  ==========================
Request-URI            ``sip:number@server[:port]``               ``sip:number@address[:port]``
                                                                  (the gateway's Contact;
                                                                  ``tel:number`` if tel_uri)
From                   ``account@server`` (the provider knows     the caller number
                       us by it); the caller number as display    (``unified_caller_number``
                       name with original_caller_as_display_name  wins on a trunk)
first hop              outbound proxy (with a Route) or server    the trunk / the gateway
credentials            authorization id, or account, or           the line's account if it
                       account@server (auth_user_with_domain)     has a password; trunks none
=====================  =========================================  ==========================

``request_uri_parameter`` is appended to the Request-URI; ``disable_100rel``
takes 100rel out of our Supported header on that leg.
"""
from __future__ import annotations

from ...config.schema import Line, Trunk
from ...sip.errors import BadMessage
from ...sip.peer import Peer
from ...sip.uri import parse_uri_untrusted
from ..legspec import LegSpec
from .dns import DEFAULT_PORTS

Refusal = tuple[int, str]  #: (SIP status, reason) of an exit that cannot take the call


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def hostport(host: str, port: int, transport: str) -> str:
    """``host[:port]`` with the port left out when it is the transport's default."""
    return _host(host) if port == DEFAULT_PORTS[transport] else f"{_host(host)}:{port}"


def _params(transport: str, extra: str) -> str:
    out = "" if transport == "udp" else f";transport={transport}"
    return out + (f";{extra}" if extra else "")


def auth_username(line: Line) -> str:
    """The digest user name: authorization id or account, ``@server`` if asked."""
    user = line.authorization_id or line.account
    return f"{user}@{line.server}" if line.auth_user_with_domain else user


def outbound_proxy_route(line: Line) -> tuple[tuple[str, str], ...]:
    proxy = line.outbound_proxy
    if not proxy.enabled:
        return ()
    return (("Route", f"<sip:{hostport(proxy.address, proxy.port, line.transport)}"
                      f"{_params(line.transport, '')};lr>"),)


def first_hop(line: Line) -> tuple[str, int]:
    """Where a type 0 line's requests go: its outbound proxy, else its server."""
    proxy = line.outbound_proxy
    return (proxy.address, proxy.port) if proxy.enabled else (line.server, line.port)


def line_leg(name: str, line: Line, number: str, caller_number: str, peer: Peer, *,
             gateway_contact: str = "", gateway_route: tuple[tuple[str, str], ...] = (),
             domain: str = "") -> LegSpec:
    """The leg to ``number`` through line ``name`` (``peer``: its resolved first hop;
    ``gateway_contact``, ``gateway_route``: a type 1 line's registered Contact and the
    Route of its Path)."""
    common = dict(peer=peer, callee=number, caller_number=caller_number, exit=name,
                  display=caller_number if line.original_caller_as_display_name else "",
                  credentials=(auth_username(line), line.password) if line.password else None,
                  strip_100rel=line.disable_100rel, no_answer_time=float(line.no_answer_time),
                  max_duration=float(line.max_duration))
    extra = f";{line.request_uri_parameter}" if line.request_uri_parameter else ""
    if line.type == 1:
        return LegSpec(uri=_with_user(gateway_contact, number) + extra,
                       to=f"<{_with_user(gateway_contact, number, params=False)}>",
                       from_uri=f"sip:{caller_number}@{domain}", contact_user=caller_number,
                       headers=gateway_route, **common)  # type: ignore[arg-type]
    where = hostport(line.server, line.port, line.transport)
    params = _params(line.transport, line.request_uri_parameter)
    return LegSpec(uri=f"sip:{number}@{where}{params}", to=f"<sip:{number}@{where}>",
                   from_uri=f"sip:{line.account}@{_host(line.server)}",
                   contact_user=line.account, headers=outbound_proxy_route(line),
                   **common)  # type: ignore[arg-type]


def trunk_leg(name: str, trunk: Trunk, number: str, caller_number: str, peer: Peer, *,
              local_host: str) -> LegSpec:
    """The leg to ``number`` through trunk ``name``; ``local_host`` is our address as the
    trunk sees it (the host of From)."""
    caller = trunk.unified_caller_number or caller_number
    common = dict(peer=peer, callee=number, caller_number=caller, exit=name,
                  contact_user=caller, strip_100rel=trunk.disable_100rel,
                  no_answer_time=float(trunk.no_answer_time),
                  max_duration=float(trunk.max_duration))
    if trunk.tel_uri:
        extra = f";{trunk.request_uri_parameter}" if trunk.request_uri_parameter else ""
        return LegSpec(uri=f"tel:{number}{extra}", to=f"<tel:{number}>",
                       from_uri=f"tel:{caller}", **common)  # type: ignore[arg-type]
    where = hostport(trunk.address, trunk.port, trunk.transport)
    params = _params(trunk.transport, trunk.request_uri_parameter)
    return LegSpec(uri=f"sip:{number}@{where}{params}", to=f"<sip:{number}@{where}>",
                   from_uri=f"sip:{caller}@{_host(local_host)}",
                   **common)  # type: ignore[arg-type]


def _with_user(contact: str, user: str, params: bool = True) -> str:
    """A gateway's Contact URI with ``user`` as its user part."""
    try:
        uri = parse_uri_untrusted(contact.strip("<>"))
    except BadMessage:
        uri = parse_uri_untrusted("sip:invalid")
    uri.user, uri.password = user, None
    if not params:
        uri.params, uri.headers = {}, {}
    return str(uri)


def without_100rel(value: str) -> str:
    """A Supported value with the 100rel option taken out."""
    return ", ".join(t for t in (s.strip() for s in value.split(","))
                     if t and t.lower() != "100rel")
