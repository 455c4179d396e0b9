"""A SIP dialog (RFC 3261 section 12), sans-IO.

A dialog is the state two UAs share after an INVITE is answered: the Call-ID
and both tags identify it, the route set and the remote target say where
in-dialog requests go, and CSeq numbers order them. The B2BUA holds one per
leg: a UAS dialog towards the caller, a UAC dialog towards each callee device.
Nothing here sends anything: ``new_request`` builds a Request and
``destination`` says where it goes (RFC 3261 12.2.1.1: the first Route of the
route set, else the remote target); the caller hands both to the transaction
layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from sys import intern

import ipaddress

from ..sip.errors import BadMessage
from ..sip.message import Request, Response
from ..sip.peer import Peer
from ..sip.uri import parse_address_untrusted

_DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}

DialogId = tuple[str, str, str]  #: (Call-ID, local tag, remote tag)


@dataclass(slots=True)
class Dialog:
    """One dialog's state. The URIs and Contacts a dialog is made with are interned:
    a user's and a device's repeat in every call they make, and each call keeps two
    dialogs for its whole length (interned strings are freed with their last user)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  #: our From (UAC) / To (UAS) value, without the tag
    remote_uri: str
    remote_target: str  #: the peer's Contact URI: Request-URI of in-dialog requests
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    peer: Peer | None = None  #: where in-dialog requests go (the source the phone used)
    contact: str = ""  #: our Contact for this dialog
    via_host: str = ""  #: sent-by for our Via
    transport: str = "UDP"

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation (RFC 3261 12.1) -------------------------------------------------
    @classmethod
    def as_uas(cls, req: Request, resp: Response, peer: Peer, contact: str) -> Dialog:
        """The dialog a 1xx/2xx we send to ``req`` creates."""
        to_tag = resp.to_tag
        if to_tag is None or req.from_tag is None:
            raise BadMessage("Dialog needs both tags")
        return cls(req.call_id, to_tag, req.from_tag, intern(_untagged(req.headers.get("To"))),
                   intern(_untagged(req.headers.get("From"))), intern(_target(req)),
                   list(req.headers.values("Record-Route")), 0, req.cseq[0], peer,
                   intern(contact))

    @classmethod
    def as_uac(cls, req: Request | Response, resp: Response, peer: Peer) -> Dialog:
        """The dialog a 1xx/2xx with a To tag creates for a request we sent (``req``: or
        the response itself, which echoes its From, Call-ID and CSeq)."""
        if resp.to_tag is None or req.from_tag is None:
            raise BadMessage("Dialog needs both tags")
        return cls(req.call_id, req.from_tag, resp.to_tag,
                   intern(_untagged(req.headers.get("From"))),
                   intern(_untagged(resp.headers.get("To"))), intern(_target(resp)),
                   list(reversed(resp.headers.values("Record-Route"))), req.cseq[0], None,
                   peer, intern(req.headers.get("Contact") or ""))

    @classmethod
    def of_answer(cls, resp: Response, peer: Peer) -> Dialog:
        """Our (UAC) side of the dialog a 2xx creates, from the 2xx alone: it echoes our
        From, Call-ID and CSeq (RFC 3261 8.2.6.2) and names the route set and target.
        For an ACK or a BYE only: it has no Contact of ours."""
        dialog = cls.as_uac(resp, resp, peer)
        dialog.contact = ""  # (the 2xx's Contact is the device's)
        return dialog

    # -- requests in the dialog (RFC 3261 12.2) -------------------------------------
    def new_request(self, method: str, *, via: str, body: bytes = b"",
                    headers: list[tuple[str, str]] | tuple[()] = (),
                    cseq: int | None = None) -> Request:
        """Build an in-dialog request. ACK and CANCEL reuse a CSeq: pass ``cseq``."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri, routes = self.remote_target, self.route_set
        if routes and ";lr" not in routes[0]:  # strict router: RFC 3261 12.2.1.1
            uri, routes = routes[0].strip("<>"), [*routes[1:], f"<{self.remote_target}>"]
        hdrs: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", "70")]
        hdrs += [("Route", r) for r in routes]
        hdrs += [("From", f"{self.local_uri};tag={self.local_tag}"),
                 ("To", f"{self.remote_uri};tag={self.remote_tag}"),
                 ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}")]
        if self.contact and method not in ("BYE", "CANCEL", "ACK"):
            hdrs.append(("Contact", self.contact))
        hdrs += list(headers)
        return Request(method, uri, hdrs, body)

    def destination(self, observed: Peer) -> Peer:
        """Where an in-dialog request goes (RFC 3261 12.2.1.1), as an address.

        The next hop is the first Route of the route set (a proxy that
        record-routed; strict or loose, it is first either way), else the remote
        target. ``observed`` is where the peer's own messages come from; it is
        the answer when the next hop names no IP address (resolving a name is
        RFC 3263's DNS, not this sans-IO layer's), and in two cases that keep
        phones reachable: over TCP/TLS a next hop on the observed host is that
        connection (RFC 5626: we cannot open one to a phone), and without a
        route set a remote target on another host than the observed one is a
        private address behind NAT (symmetric signalling, RFC 3581's spirit).
        """
        peer = address_of(self.route_set[0] if self.route_set else f"<{self.remote_target}>")
        if peer is None:
            return observed
        if observed.reliable and peer.host == observed.host:
            return observed
        if not self.route_set and peer.host != observed.host:
            return observed
        return peer

    def accept_request(self, req: Request) -> bool:
        """RFC 3261 12.2.2: False (answer 500) if its CSeq is lower than the last."""
        num = req.cseq[0]
        if req.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and num <= self.remote_cseq:
            return False
        self.remote_cseq = num
        contact = req.contacts
        if req.method in ("INVITE", "UPDATE") and contact:  # target refresh
            self.remote_target = str(contact[0].uri)
        return True


# name-addr -> its transport address: every in-dialog request (and a call's end) asks
# again for the same few targets. Bounded, as the texts come from the peers.
_ADDRESSES: dict[str, Peer | None] = {}
_ADDRESSES_MAX = 4096


def address_of(name_addr: str) -> Peer | None:
    """The transport address of a SIP URI (in a name-addr) whose host is an IP literal
    (RFC 3263 4 without DNS: transport from the ``transport`` parameter or the scheme)."""
    if name_addr in _ADDRESSES:
        return _ADDRESSES[name_addr]
    peer = _parse_address(name_addr)
    if len(_ADDRESSES) >= _ADDRESSES_MAX:
        _ADDRESSES.clear()
    _ADDRESSES[name_addr] = peer
    return peer


def _parse_address(name_addr: str) -> Peer | None:
    try:
        uri = parse_address_untrusted(name_addr).uri
        ipaddress.ip_address(uri.host)
    except (BadMessage, ValueError):
        return None
    transport = uri.params.get("transport")
    transport = (transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    if transport not in _DEFAULT_PORT:
        return None
    return Peer(transport, uri.host, uri.port or _DEFAULT_PORT[transport])


def _untagged(value: str | None) -> str:
    if value is None:
        raise BadMessage("Missing From/To")
    # Drop a tag parameter but keep every other byte the peer sent.
    parts = value.split(";")
    return ";".join(p for p in parts if not p.strip().lower().startswith("tag="))


def _target(msg: Request | Response) -> str:
    contacts = msg.contacts
    if not contacts:
        raise BadMessage("Missing Contact")
    return str(contacts[0].uri)
