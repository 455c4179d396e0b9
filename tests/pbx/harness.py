"""An in-process PBX for tests: minisip's own wiring, no sockets, a fake clock.

``Harness`` builds ``minisip.server.Server`` (the same registrar, transaction layer,
PBX core and call controller that ``minisip serve`` wires) on a copy of configs/,
swaps its listeners for ``FakeListener``s that capture what it sends, and gives it a
``FakeClock``. Messages go in through the driver (``SipDriver.on_message``, the real
entry point with its error boundary) and come out to ``Phone``s, small UAs that each
have their own address and inbox. Time moves only by ``advance``, which fires every
timer due on the way. The services work reuses it: register a user's device, place a
call from user X to number N, play the callee's responses::

    h = Harness(tmp_path, users={"101": {"no_answer_time": 20}})
    alice, bob = h.phone("100"), h.phone("101")
    alice.register(); bob.register()
    call = alice.call("101")               # INVITE, 407, authenticated INVITE
    leg = bob.incoming()                   # the B-leg INVITE the PBX sent bob's device
    leg.respond(180); leg.answer()
    assert call.final().status == 200
    call.ack(); call.bye()
    h.settle()                             # run the clock past every timer
    assert h.leftovers() == {}
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from minisip.dialog.dialog import Dialog
from minisip.server import ServeOptions, Server
from minisip.sip.digest import authorization_for
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response, make_response, new_branch, new_call_id, new_tag
from minisip.sip.parser import parse_message_untrusted
from minisip.sip.peer import Peer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PBX_HOST = "192.0.2.1"  #: the PBX's address as phones see it (no socket behind it)
PBX_HOST6 = "2001:db8::1"  #: ... and over IPv6
PBX_PORT = 5060

Message = Request | Response
Mutate = Callable[[bytes], bytes]


def sdp(host: str, port: int = 4000, *, direction: str = "sendrecv", dtmf: bool = True,
        version: int = 1) -> bytes:
    """A phone's audio offer or answer: PCMU (and telephone-event 101)."""
    fmts = "0 101" if dtmf else "0"
    at = "IP6" if ":" in host else "IP4"
    lines = ["v=0", f"o=phone 1 {version} IN {at} {host}", "s=-", f"c=IN {at} {host}", "t=0 0",
             f"m=audio {port} RTP/AVP {fmts}", "a=rtpmap:0 PCMU/8000"]
    if dtmf:
        lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"]
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


class FakeClock:
    """trio.current_time's stand-in: moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeListener:
    """A listener of the driver: captures what is sent. A TCP/TLS one reaches only the
    peers in ``connected`` (minisip never opens a connection itself)."""

    def __init__(self, h: Harness, transport: str, host: str = PBX_HOST,
                 port: int = PBX_PORT) -> None:
        self.h, self.transport, self.host, self.port = h, transport, host, port

    def overloaded(self) -> bool:
        return False  # no socket queue here to fall behind on

    def send(self, data: bytes, peer: Peer) -> bool:
        if self.transport != "udp" and peer not in self.h.connected:
            return False
        if peer in self.h.unreachable:
            return False
        self.h.sent.append((data, peer))
        return True

    def local_for(self, peer: Peer) -> tuple[str, int] | None:
        return (self.host, self.port) if peer in self.h.connected else None


def _edit_yaml(path: Path, edits: dict[str, Any], *, user: str | None = None) -> None:
    """Set top-level keys of system.yaml, or keys of one user in users.yaml (text edits
    that keep the files as an admin would leave them)."""
    text = path.read_text()
    if user is not None:
        marker = f'"{user}":\n'
        assert marker in text, f"user {user} not in {path}"
        extra = "".join(f"    {k}: {v}\n" for k, v in edits.items())
        path.write_text(text.replace(marker, marker + extra, 1))
        return
    for key, value in edits.items():
        text, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        assert n == 1, f"{key} not in {path}"
    path.write_text(text)


class Harness:
    def __init__(self, tmp_path: Path, *, system: dict[str, Any] | None = None,
                 users: dict[str, dict[str, Any]] | None = None, relay: bool = False,
                 files: dict[str, str] | None = None) -> None:
        """``system``/``users``: keys to set; ``files``: whole config files to write
        (``{"lines.yaml": "lines: ..."}``); ``relay``: real media relays (inside trio)."""
        config_dir = tmp_path / "configs"
        shutil.copytree(CONFIGS, config_dir)
        for name, text in (files or {}).items():
            (config_dir / name).write_text(text)
        _edit_yaml(config_dir / "system.yaml", system or {})
        for user, items in (users or {}).items():
            _edit_yaml(config_dir / "users.yaml", items, user=user)
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        self.clock = FakeClock()
        self.server = Server(ServeOptions(config_dir=config_dir, data_dir=data_dir),
                             clock=self.clock)
        self.driver = self.server.driver
        self.sent: list[tuple[bytes, Peer]] = []
        self.connected: set[Peer] = set()
        self.unreachable: set[Peer] = set()  #: sends to these fail (a send error)
        self.phones: dict[Peer, Phone] = {}
        self.stray: list[tuple[Message, Peer]] = []  #: sent where no phone is
        self.unparsed: list[tuple[bytes, Peer]] = []  #: sent, but not a whole SIP message
        for transport in ("udp", "tcp", "tls"):
            self.driver.add_sender(transport, FakeListener(self, transport))
        self.driver.add_sender("udp", FakeListener(self, "udp", PBX_HOST6))
        self.server.calls.flush = self.driver.flush  # as Server.run wires it
        self.server.lines.flush = self.driver.flush
        if not relay:  # media relays bind real sockets (and read trio's clock): only where
            self.server.calls.media_io = None  # a test asks, inside trio.run
        self.t1 = self.server.holder.current.system.timers.t1
        self._hosts = iter(range(10, 250))

    # -- the parts ---------------------------------------------------------------------
    @property
    def pbx(self) -> Any:
        return self.server.pbx

    @property
    def calls(self) -> Any:
        return self.server.calls

    @property
    def layer(self) -> Any:
        return self.server.layer

    @property
    def faults(self) -> Any:
        return self.server.faults

    def close(self) -> None:
        self.server.location.close()
        self.server.cdr.close()
        ep = getattr(self.server.media_io, "_ep", None)
        if ep is not None:
            ep.close()

    def start_lines(self) -> None:
        """What Server.run does once serving: lines and trunks follow the configuration
        (registrations start). Their hosts must be IP literals: no DNS here."""
        self.server.lines.configure(self.server.holder.current)
        self.driver.flush()
        self.pump()

    # -- phones ------------------------------------------------------------------------
    def phone(self, user: str, password: str | None = None, *, transport: str = "udp",
              host: str | None = None, port: int = 5062) -> Phone:
        """A new device of ``user`` (password: the user's own, as in configs/)."""
        host = host or f"198.51.100.{next(self._hosts)}"
        peer = Peer(transport, host, port)
        if transport != "udp":
            self.connected.add(peer)
        phone = Phone(self, user, user if password is None else password, peer)
        self.phones[peer] = phone
        return phone

    def disconnect(self, phone: Phone) -> None:
        """The phone's TCP/TLS connection closes, as the listener would report it."""
        self.connected.discard(phone.peer)
        self.driver.connection_lost(phone.peer)
        self.pump()

    # -- the wire ------------------------------------------------------------------------
    def deliver(self, data: bytes, peer: Peer) -> None:
        """Bytes from ``peer`` through the driver, then the batch end (commit, send)."""
        self.driver.on_message(data, peer)
        self.driver.flush()
        self.pump()

    def pump(self) -> None:
        """Hand what the PBX sent to the phones it was sent to."""
        while self.sent:
            batch, self.sent = self.sent, []
            for data, peer in batch:
                try:
                    msg = parse_message_untrusted(data)
                except BadMessage:  # a 400 to a mangled request echoes what it could read
                    self.unparsed.append((data, peer))
                    continue
                phone = self.phones.get(peer)
                if phone is None:
                    self.stray.append((msg, peer))
                else:
                    phone.receive(msg)

    # -- time ----------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds``, firing every timer due on the way, in order."""
        end = self.clock.now + seconds
        while True:
            due = self.driver.next_deadline()
            if due > end:
                break
            self.clock.now = max(self.clock.now, due)
            self.driver.fire_timers(self.clock.now)
            self.pump()
        self.clock.now = end

    def settle(self, seconds: float | None = None, *, answer: bool = True) -> None:
        """Run the clock past every timer that can still run (Timer B/F/H/J, no answer,
        max duration...), the phones answering what the PBX asks them (``answer``)."""
        for phone in self.phones.values():
            phone.auto = answer
            phone.answer_pending()
        self.pump()
        self.advance(seconds if seconds is not None else 200 * self.t1)

    def leftovers(self) -> dict[str, Any]:
        """Everything a finished PBX should no longer hold: {} when idle."""
        c = self.layer.counters
        calls = self.calls
        out = {
            "calls": list(calls.calls), "dialogs": list(calls._dialogs),
            "branches": list(calls._by_branch), "active": dict(calls.active),
            "outgoing": dict(calls.outgoing), "ringing": dict(calls.ringing),
            "talking": dict(calls.talking), "client_callbacks": len(self.pbx._client),
            "transactions": {k: getattr(c, k) for k in ("ict", "nict", "ist", "nist")
                             if getattr(c, k)},
            "pbx_timers": len(self.pbx.timers), "layer_timer": self.layer.get_timer(),
            "faults": self.faults.count,
        }
        return {k: v for k, v in out.items() if v}


class Phone:
    """One device of a user: an address, a digest client, what the PBX sent it."""

    def __init__(self, h: Harness, user: str, password: str, peer: Peer) -> None:
        self.h, self.user, self.password, self.peer = h, user, password, peer
        host = f"[{peer.host}]" if ":" in peer.host else peer.host
        tp = "" if peer.transport == "udp" else f";transport={peer.transport}"
        self.contact = f"<sip:{user}@{host}:{peer.port}{tp}>"
        self.domain = h.server.holder.current.system.domain or "minisip"
        self.inbox: list[Message] = []
        self.auto = False  #: answer requests from the PBX by itself (see ``answer_pending``)
        self.calls: list[UasCall] = []  #: new INVITEs the PBX sent this device
        self._answered: set[tuple[str, int, str]] = set()  #: by answer_pending

    # -- wire ----------------------------------------------------------------------------
    def via(self, branch: str | None = None) -> str:
        host = f"[{self.peer.host}]" if ":" in self.peer.host else self.peer.host
        return (f"SIP/2.0/{self.peer.transport.upper()} {host}:{self.peer.port};"
                f"branch={branch or new_branch()};rport")

    def send(self, msg: Message, mutate: Mutate | None = None) -> None:
        data = msg.to_bytes()
        self.h.deliver(mutate(data) if mutate is not None else data, self.peer)

    def receive(self, msg: Message) -> None:
        self.inbox.append(msg)
        if isinstance(msg, Request) and msg.method == "INVITE" and msg.to_tag is None:
            if not any(c.invite.call_id == msg.call_id and c.invite.cseq == msg.cseq
                       for c in self.calls):
                self.calls.append(UasCall(self, msg))
        if self.auto:
            self.answer_pending()

    def responses(self, call_id: str | None = None, method: str | None = None) -> list[Response]:
        return [m for m in self.inbox if isinstance(m, Response)
                and (call_id is None or m.call_id == call_id)
                and (method is None or m.cseq[1] == method)]

    def requests(self, method: str | None = None) -> list[Request]:
        return [m for m in self.inbox if isinstance(m, Request)
                and (method is None or m.method == method)]

    def answer(self, req: Request, status: int = 200, *, body: bytes = b"",
               headers: Iterable[tuple[str, str]] = (), mutate: Mutate | None = None) -> None:
        """Respond to a request the PBX sent this device (in-dialog or not)."""
        hdrs = list(headers)
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        if req.method in ("INVITE", "UPDATE") and status < 300:
            hdrs.append(("Contact", self.contact))
        resp = make_response(req, status, to_tag=None if req.to_tag else new_tag(),
                             headers=hdrs)
        resp.body = body
        self.send(resp, mutate)

    def answer_pending(self) -> None:
        """Answer every request not answered yet: 200 (with SDP to a re-INVITE), ACK
        the PBX's 2xx; a new INVITE is rejected 486 (nobody picks up in ``settle``)."""
        answered = self._answered
        for msg in list(self.inbox):
            if not isinstance(msg, Request) or msg.method == "ACK":
                continue
            try:
                key = (msg.call_id, msg.cseq[0], msg.method)
            except BadMessage:
                continue
            if key in answered:
                continue
            answered.add(key)
            if msg.method == "INVITE" and msg.to_tag is None:
                self.answer(msg, 486)
            elif msg.method == "INVITE":
                self.answer(msg, 200, body=sdp(self.peer.host))
            else:
                self.answer(msg, 200)

    # -- out of dialog -------------------------------------------------------------------
    def register(self, expires: int = 300, *, password: str | None = None) -> Response:
        """REGISTER this device's Contact, answering the 401."""
        return self.out_of_dialog("REGISTER", f"sip:{self.domain}",
                                  [("Contact", self.contact), ("Expires", str(expires))],
                                  to=f"<sip:{self.user}@{self.domain}>", password=password)

    def out_of_dialog(self, method: str, uri: str, headers: list[tuple[str, str]], *,
                      to: str | None = None, password: str | None = None) -> Response:
        """A request outside any dialog, answering a 401 or 407 once; its final response."""
        call_id, tag, auth = new_call_id(), new_tag(), None
        resp: Response | None = None
        for cseq in (1, 2):
            head = [("Via", self.via()), ("Max-Forwards", "70"),
                    ("From", f"<sip:{self.user}@{self.domain}>;tag={tag}"),
                    ("To", to or f"<{uri}>"), ("Call-ID", call_id),
                    ("CSeq", f"{cseq} {method}"), *headers]
            if auth:
                head.append(auth)
            self.send(Request(method, uri, head))
            resp = self.responses(call_id)[-1]
            if resp.status not in (401, 407):
                break
            proxy = resp.status == 407
            auth = ("Proxy-Authorization" if proxy else "Authorization", authorization_for(
                resp.headers.get("Proxy-Authenticate" if proxy else "WWW-Authenticate") or "",
                method, uri, self.user, password or self.password))
        assert resp is not None
        return resp

    # -- calls ---------------------------------------------------------------------------
    def call(self, number: str, *, body: bytes | None = None, auth: bool = True,
             headers: Iterable[tuple[str, str]] = (), mutate: Mutate | None = None) -> UacCall:
        """INVITE ``number``: the 407 is answered (``auth``), and the call handed back
        with whatever came so far (``final()`` is None while it rings)."""
        call = UacCall(self, number, self.sdp() if body is None else body, list(headers))
        call.invite_(mutate=mutate)
        if auth:
            first = call.final()
            if first is not None and first.status == 407:
                call.authenticate(first, mutate=mutate)
        return call

    def sdp(self, **kw: Any) -> bytes:
        return sdp(self.peer.host, **kw)

    def incoming(self) -> UasCall | None:
        """The latest new INVITE the PBX sent this device, or None."""
        return self.calls[-1] if self.calls else None


class UacCall:
    """The caller's side of one call (the A-leg, seen from the phone)."""

    def __init__(self, phone: Phone, number: str, body: bytes,
                 headers: list[tuple[str, str]]) -> None:
        self.phone = phone
        self.uri = f"sip:{number}@{phone.domain}"
        self.call_id, self.tag = new_call_id(), new_tag()
        self.local = f"<sip:{phone.user}@{phone.domain}>"
        self.body, self.headers = body, headers
        self.cseq = 0
        self.invite: Request | None = None
        self.auth: str | None = None
        self.dialog: Dialog | None = None

    def responses(self, method: str = "INVITE") -> list[Response]:
        return self.phone.responses(self.call_id, method)

    def final(self, method: str = "INVITE") -> Response | None:
        """The last final response to the current INVITE (or ``method``)."""
        finals = [r for r in self.responses(method) if r.status >= 200
                  and r.cseq[0] == (self.cseq if method == "INVITE" else r.cseq[0])]
        return finals[-1] if finals else None

    def invite_(self, mutate: Mutate | None = None) -> Request:
        self.cseq += 1
        headers = [("Via", self.phone.via()), ("Max-Forwards", "70"),
                   ("From", f"{self.local};tag={self.tag}"), ("To", f"<{self.uri}>"),
                   ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} INVITE"),
                   ("Contact", self.phone.contact), *self.headers]
        if self.auth:
            headers.append(("Proxy-Authorization", self.auth))
        if self.body:
            headers.append(("Content-Type", "application/sdp"))
        self.invite = Request("INVITE", self.uri, headers, self.body)
        self.phone.send(self.invite, mutate)
        return self.invite

    def authenticate(self, challenge: Response, mutate: Mutate | None = None) -> None:
        self.ack_failure(challenge)
        self.auth = authorization_for(challenge.headers.get("Proxy-Authenticate") or "",
                                      "INVITE", self.uri, self.phone.user, self.phone.password)
        self.invite_(mutate=mutate)

    def ack_failure(self, resp: Response) -> None:
        """RFC 3261 17.1.1.3: the ACK of a non-2xx final response, on the INVITE's branch."""
        assert self.invite is not None
        ack = Request("ACK", self.uri, [
            ("Via", self.invite.headers.get_all("Via")[0]), ("Max-Forwards", "70"),
            ("From", f"{self.local};tag={self.tag}"), ("To", resp.headers.get("To") or ""),
            ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} ACK")])
        self.phone.send(ack)

    def _dialog(self) -> Dialog | None:
        if self.dialog is None and self.invite is not None:
            for r in self.responses():
                try:  # (a 400 to a mangled request echoes mangled headers)
                    if not (r.to_tag and r.contacts and r.status < 300
                            and r.cseq[0] == self.cseq):
                        continue
                    self.dialog = Dialog.as_uac(self.invite, r, self.phone.peer)
                except BadMessage:
                    continue
                    self.dialog.contact = self.phone.contact
                    self.dialog.local_cseq = self.cseq
                    break
        return self.dialog

    def ack(self, body: bytes = b"", mutate: Mutate | None = None) -> None:
        """ACK the 2xx (or the failure) to the current INVITE."""
        final = self.final()
        if final is None:
            return
        if final.status >= 300:
            self.ack_failure(final)
            return
        dialog = self._dialog()
        if dialog is not None:
            headers = [("Content-Type", "application/sdp")] if body else []
            self.phone.send(dialog.new_request("ACK", via=self.phone.via(),
                                               cseq=final.cseq[0], body=body, headers=headers),
                            mutate)

    def cancel(self, mutate: Mutate | None = None) -> None:
        assert self.invite is not None
        inv = self.invite
        self.phone.send(Request("CANCEL", self.uri, [
            ("Via", inv.headers.get_all("Via")[0]), ("Max-Forwards", "70"),
            ("From", f"{self.local};tag={self.tag}"), ("To", f"<{self.uri}>"),
            ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} CANCEL")]), mutate)

    def request(self, method: str, body: bytes = b"", headers: Iterable[tuple[str, str]] = (),
                mutate: Mutate | None = None) -> Request | None:
        """An in-dialog request (BYE, re-INVITE, INFO, UPDATE...), None without a dialog."""
        dialog = self._dialog()
        if dialog is None:
            return None
        hdrs = list(headers)
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        req = dialog.new_request(method, via=self.phone.via(), body=body, headers=hdrs)
        if method == "INVITE":
            self.cseq = req.cseq[0]
            self.invite = req
        self.phone.send(req, mutate)
        return req

    def bye(self, mutate: Mutate | None = None) -> Request | None:
        return self.request("BYE", mutate=mutate)


class UasCall:
    """A callee device's side of one B-leg: the INVITE the PBX sent, our answers to it."""

    def __init__(self, phone: Phone, invite: Request) -> None:
        self.phone, self.invite = phone, invite
        self.tag = new_tag()
        self.dialog: Dialog | None = None
        self.rseq = 0

    def respond(self, status: int, body: bytes = b"", *, headers: Iterable[tuple[str, str]] = (),
                reliable: bool = False, mutate: Mutate | None = None) -> Response:
        hdrs = list(headers)
        if 100 < status < 300:
            hdrs.append(("Contact", self.phone.contact))
        if reliable and 100 < status < 200:
            self.rseq += 1
            hdrs += [("Require", "100rel"), ("RSeq", str(self.rseq))]
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        resp = make_response(self.invite, status, to_tag=self.tag if status > 100 else None,
                             headers=hdrs)
        resp.body = body
        if self.dialog is None and 100 < status < 300:
            self.dialog = Dialog.as_uas(self.invite, resp, self.phone.peer, self.phone.contact)
        self.phone.send(resp, mutate)
        return resp

    def ring(self) -> Response:
        return self.respond(180)

    def answer(self, body: bytes | None = None) -> Response:
        return self.respond(200, self.phone.sdp() if body is None else body)

    def request(self, method: str, body: bytes = b"", headers: Iterable[tuple[str, str]] = (),
                mutate: Mutate | None = None) -> Request | None:
        if self.dialog is None:
            return None
        hdrs = list(headers)
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        req = self.dialog.new_request(method, via=self.phone.via(), body=body, headers=hdrs)
        self.phone.send(req, mutate)
        return req

    def bye(self, mutate: Mutate | None = None) -> Request | None:
        return self.request("BYE", mutate=mutate)
