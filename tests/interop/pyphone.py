"""A small scripted SIP + RTP user agent for minisip's end-to-end tests.

One UDP SIP socket and one RTP socket on 127.0.0.1, each read by a daemon
thread. Everything goes to (and comes from) the minisip server, so the phone
needs no routing: requests go to the server's port, responses to the source
of the request. The SIP thread answers what a test does not script: every
in-dialog request gets a 200 (a re-INVITE with our SDP, the direction
mirrored), INFOs are kept for ``received_infos``, retransmitted requests get
the response already sent, retransmitted 2xx to our INVITEs get the ACK again.
The RTP thread logs every packet with its arrival time and source.

Every wait is bounded; a missing response raises ``TimeoutError``.
"""
from __future__ import annotations

import itertools
import math
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from minisip.media import g711
from minisip.media.dtmf import event_packets
from minisip.media.rtp import RtpPacket, make_rtp, parse_rtp_untrusted
from minisip.sip.sdp import Media, parse_sdp_untrusted
from minisip.sip.digest import authorization_for
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response, make_response, new_branch, new_call_id, new_tag
from minisip.sip.parser import parse_message_untrusted

HOST = "127.0.0.1"
EVENT_PT = 101
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                     "recvonly": "sendonly", "inactive": "inactive"}


@dataclass
class Received:
    """One RTP packet as it arrived."""
    at: float  #: time.monotonic()
    source: tuple[str, int]
    packet: RtpPacket


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  #: without tag
    remote_uri: str
    target: str  #: the remote Contact URI
    routes: list[str] = field(default_factory=list)
    cseq: int = 1


_G711 = {0: "PCMU", 8: "PCMA"}


def _untagged(value: str) -> str:
    return ";".join(p for p in value.split(";") if not p.strip().lower().startswith("tag="))


class PyPhone:
    def __init__(self, server_port: int, user: str, password: str, *,
                 domain: str = "minisip") -> None:
        self.server = (HOST, server_port)
        self.user, self.password, self.domain = user, password, domain
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((HOST, 0))
        self.sip_port, self.rtp_port = self.sip.getsockname()[1], self.rtp.getsockname()[1]
        self.contact = f"<sip:{user}@{HOST}:{self.sip_port}>"
        self.ssrc = random.getrandbits(32)
        self._seq = itertools.count(random.getrandbits(15))
        self.ts = random.getrandbits(31)
        self.sdp_dtmf = True
        self.codecs: tuple[int, ...] = (0,)  #: G.711 payload types our SDP offers/answers
        self._sdp_version = 1
        self.dialog: Dialog | None = None
        self.remote_sdp: Media | None = None  #: the other side's (the relay's)
        self.rtp_log: list[Received] = []
        self.sent_audio: list[bytes] = []  #: payloads sent by send_audio, in order
        self.infos: list[tuple[float, Request]] = []  #: (time.monotonic() of arrival, INFO)
        self.requests: list[Request] = []  #: every request received, retransmissions not
        self.arrived_at: list[float] = []  #: time.monotonic() of each of ``requests``
        self._arrived = threading.Condition()
        self.subscriptions: dict[str, Dialog] = {}  #: Call-ID -> our SUBSCRIBE dialogs
        self.provisionals: list[Response] = []  #: 1xx to our requests, in order
        self._invites: queue.Queue[tuple[Request, tuple[str, int]]] = queue.Queue()
        self._responses: dict[str, queue.Queue[Response]] = {}
        self._answered: dict[tuple[str, str], bytes] = {}  # (branch, method) -> response sent
        self._acks: dict[str, bytes] = {}  # INVITE branch -> our ACK to its 2xx
        self._acked = threading.Event()
        self._ringing: dict[str, tuple[Request, str]] = {}  # branch -> (INVITE, our tag)
        self._closed = threading.Event()
        threading.Thread(target=self._recv_loop, args=(self.sip, self._on_sip),
                         daemon=True).start()
        threading.Thread(target=self._recv_loop, args=(self.rtp, self._on_rtp),
                         daemon=True).start()

    # -- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        self._closed.set()
        self.sip.close()
        self.rtp.close()

    def __enter__(self) -> PyPhone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, msg: Request) -> None:
        self.sip.sendto(msg.to_bytes(), self.server)

    def _recv_loop(self, sock: socket.socket,
                   handle: Callable[[bytes, tuple[str, int]], None]) -> None:
        sock.settimeout(0.2)
        while not self._closed.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                handle(data, addr)
            except (BadMessage, OSError):  # not SIP/RTP; or a reply after close()
                pass

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        self.rtp_log.append(Received(time.monotonic(), addr, parse_rtp_untrusted(data)))

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message_untrusted(data)
        if isinstance(msg, Response):
            ack = self._acks.get(msg.branch or "")
            if ack is not None and 200 <= msg.status < 300:
                self.sip.sendto(ack, addr)  # a 2xx retransmitted: it wants our ACK again
            elif msg.branch in self._responses:
                self._responses[msg.branch].put(msg)
            return
        if msg.method == "ACK":
            self._acked.set()
            return
        sent = self._answered.get((msg.branch or "", msg.method))
        if sent is not None:  # a retransmission (b"": the test is still answering it)
            if sent:
                self.sip.sendto(sent, addr)
            return
        if msg.method == "INVITE" and msg.to_tag is None:
            self._answered[(msg.branch or "", "INVITE")] = b""  # being answered by the test
            self._invites.put((msg, addr))
            return
        with self._arrived:
            self.requests.append(msg)
            self.arrived_at.append(time.monotonic())
            self._arrived.notify_all()
        ringing = self._ringing.pop(msg.branch or "", None)
        if msg.method == "CANCEL" and ringing is not None:  # 200 to CANCEL, 487 to INVITE
            self._answer(msg, make_response(msg, 200), addr)
            self._answer(ringing[0], make_response(ringing[0], 487, to_tag=ringing[1]), addr)
            return
        resp = make_response(msg, 200)
        if msg.method == "INVITE":  # re-INVITE: answer with our SDP, the direction mirrored
            offer = parse_sdp_untrusted(msg.body).audio() if msg.body else None
            direction = _ANSWER_DIRECTION[offer.direction] if offer else "sendrecv"
            self._learn_sdp(msg.body)
            resp.headers.add("Contact", self.contact)
            self._with_sdp(resp, direction)
        elif msg.method == "INFO":
            self.infos.append((time.monotonic(), msg))
        elif msg.method == "BYE":
            self.dialog = None
        self._answer(msg, resp, addr)

    def _answer(self, req: Request, resp: Response, addr: tuple[str, int]) -> None:
        data = resp.to_bytes()
        self._answered[(req.branch or "", req.method)] = data
        self.sip.sendto(data, addr)

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {HOST}:{self.sip_port};branch={branch};rport"

    def _transact(self, req: Request, timeout: float = 5.0) -> Response:
        """Send ``req`` (retransmitted until a response comes) and return its final response."""
        branch = req.branch or ""
        inbox = self._responses.setdefault(branch, queue.Queue())
        deadline = time.monotonic() + timeout
        provisional = False
        try:
            self._send(req)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.user}: no final response to {req.method}")
                try:
                    resp = inbox.get(timeout=min(left, 0.5))
                except queue.Empty:
                    if not provisional:
                        self._send(req)
                    continue
                if resp.status >= 200:
                    return resp
                self.provisionals.append(resp)
                provisional = True
        finally:
            del self._responses[branch]

    # -- SDP ----------------------------------------------------------------------------
    def sdp(self, direction: str = "sendrecv") -> bytes:
        fmts = " ".join(map(str, self.codecs)) + (f" {EVENT_PT}" if self.sdp_dtmf else "")
        lines = ["v=0", f"o=pyphone 1 {self._sdp_version} IN IP4 {HOST}", "s=pyphone",
                 f"c=IN IP4 {HOST}", "t=0 0", f"m=audio {self.rtp_port} RTP/AVP {fmts}"]
        lines += [f"a=rtpmap:{pt} {_G711[pt]}/8000" for pt in self.codecs]
        if self.sdp_dtmf:
            lines += [f"a=rtpmap:{EVENT_PT} telephone-event/8000", f"a=fmtp:{EVENT_PT} 0-16"]
        lines += ["a=ptime:20", f"a={direction}"]
        self._sdp_version += 1
        return ("\r\n".join(lines) + "\r\n").encode()

    def _with_sdp(self, msg: Request | Response, direction: str = "sendrecv") -> None:
        msg.headers.add("Content-Type", "application/sdp")
        msg.body = self.sdp(direction)

    def _learn_sdp(self, body: bytes) -> None:
        if body:
            self.remote_sdp = parse_sdp_untrusted(body).audio()

    # -- registration and calls ---------------------------------------------------------
    def register(self, *, algorithm: str | None = None, expires: int = 300) -> Response:
        """REGISTER, answering a 401 (``algorithm``: the challenge to pick; None = the first)."""
        uri = f"sip:{self.domain}"
        call_id, tag, auth = new_call_id(), new_tag(), None
        for cseq in (1, 2):
            headers = [("Via", self._via(new_branch())), ("Max-Forwards", "70"),
                       ("From", f"<sip:{self.user}@{self.domain}>;tag={tag}"),
                       ("To", f"<sip:{self.user}@{self.domain}>"), ("Call-ID", call_id),
                       ("CSeq", f"{cseq} REGISTER"), ("Contact", self.contact),
                       ("Expires", str(expires))]
            if auth:
                headers.append(("Authorization", auth))
            resp = self._transact(Request("REGISTER", uri, headers))
            if resp.status != 401:
                return resp
            challenges = resp.headers.get_all("WWW-Authenticate")
            chosen = [c for c in challenges if algorithm is None
                      or f"algorithm={algorithm}".lower() in c.lower()]
            auth = authorization_for(chosen[0], "REGISTER", uri, self.user, self.password)
        return resp

    def call(self, number: str, *, sdp_dtmf: bool = True, timeout: float = 10.0,
             extra: tuple[tuple[str, str], ...] = ()) -> Response:
        """INVITE ``number`` (with ``extra`` headers: Replaces); answer a 407; wait for the
        final response; ACK a 2xx."""
        self.sdp_dtmf = sdp_dtmf
        uri = f"sip:{number}@{self.domain}"
        call_id, tag, auth = new_call_id(), new_tag(), None
        local_uri = f"<sip:{self.user}@{self.domain}>"
        for cseq in (1, 2):
            branch = new_branch()
            headers = [("Via", self._via(branch)), ("Max-Forwards", "70"),
                       ("From", f"{local_uri};tag={tag}"), ("To", f"<{uri}>"),
                       ("Call-ID", call_id), ("CSeq", f"{cseq} INVITE"), ("Contact", self.contact),
                       *extra]
            if auth:
                headers.append(("Proxy-Authorization", auth))
            invite = Request("INVITE", uri, headers)
            self._with_sdp(invite)
            resp = self._transact(invite, timeout)
            if resp.status >= 300:  # RFC 3261 17.1.1.3: the ACK of a failure, same branch
                ack = Request("ACK", uri, [("Via", self._via(branch)), ("Max-Forwards", "70"),
                                           ("From", f"{local_uri};tag={tag}"),
                                           ("To", resp.headers.get("To") or ""),
                                           ("Call-ID", call_id), ("CSeq", f"{cseq} ACK")])
                self._send(ack)
            if resp.status != 407:
                break
            auth = authorization_for(resp.headers.get("Proxy-Authenticate") or "", "INVITE",
                                     uri, self.user, self.password)
        if 200 <= resp.status < 300:
            self.dialog = Dialog(call_id, tag, resp.to_tag or "", local_uri,
                                 _untagged(resp.headers.get("To") or ""),
                                 str(resp.contacts[0].uri),
                                 list(reversed(resp.headers.values("Record-Route"))), cseq)
            self._learn_sdp(resp.body)
            self._ack_2xx(branch, cseq)
        return resp

    def _ack_2xx(self, invite_branch: str, cseq: int) -> None:
        ack = self._in_dialog("ACK", cseq=cseq)
        self._acks[invite_branch] = ack.to_bytes()
        self._send(ack)

    def ring_incoming(self, timeout: float = 10.0) -> Request:
        """Wait for a new INVITE and only ring (180); a CANCEL gets 200 and 487."""
        invite, addr = self._invites.get(timeout=timeout)
        tag = new_tag()
        self._ringing[invite.branch or ""] = (invite, tag)
        self._answer(invite, make_response(invite, 180, to_tag=tag), addr)
        return invite

    def reject_incoming(self, status: int = 486, timeout: float = 10.0) -> Request:
        """Wait for a new INVITE and refuse it with ``status``."""
        invite, addr = self._invites.get(timeout=timeout)
        self._answer(invite, make_response(invite, status, to_tag=new_tag()), addr)
        return invite

    def answer_incoming(self, *, sdp_dtmf: bool = True, timeout: float = 10.0,
                        ring: float = 0.0) -> Request:
        """Wait for a new INVITE, send 180, ring ``ring`` seconds, send 200 with our SDP,
        wait for the ACK."""
        self.sdp_dtmf = sdp_dtmf
        invite, addr = self._invites.get(timeout=timeout)
        tag = new_tag()
        self._answer(invite, make_response(invite, 180, to_tag=tag), addr)
        time.sleep(ring)
        ok = make_response(invite, 200, to_tag=tag, headers=[("Contact", self.contact)])
        self._with_sdp(ok)
        self._learn_sdp(invite.body)
        self.dialog = Dialog(invite.call_id, tag, invite.from_tag or "",
                             _untagged(invite.headers.get("To") or ""),
                             _untagged(invite.headers.get("From") or ""),
                             str(invite.contacts[0].uri), invite.headers.values("Record-Route"),
                             random.randint(1, 1000))
        self._acked.clear()
        deadline = time.monotonic() + timeout
        while not self._acked.is_set():  # the 2xx is ours to retransmit until the ACK
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}: no ACK to our 200")
            self._answer(invite, ok, addr)
            self._acked.wait(0.5)
        return invite

    # -- in the dialog ------------------------------------------------------------------
    def _in_dialog(self, method: str, *, cseq: int | None = None, body: bytes = b"",
                   headers: tuple[tuple[str, str], ...] = ()) -> Request:
        d = self.dialog
        if d is None:
            raise RuntimeError(f"{self.user}: not in a call")
        if cseq is None:
            d.cseq += 1
            cseq = d.cseq
        hdrs = [("Via", self._via(new_branch())), ("Max-Forwards", "70"),
                *[("Route", r) for r in d.routes],
                ("From", f"{d.local_uri};tag={d.local_tag}"),
                ("To", f"{d.remote_uri};tag={d.remote_tag}"),
                ("Call-ID", d.call_id), ("CSeq", f"{cseq} {method}"), *headers]
        return Request(method, d.target, hdrs, body)

    def reinvite(self, direction: str = "sendrecv", timeout: float = 5.0) -> Response:
        """A re-INVITE offering ``direction`` ("sendonly": hold; "sendrecv": resume)."""
        req = self._in_dialog("INVITE", headers=(("Contact", self.contact),))
        self._with_sdp(req, direction)
        resp = self._transact(req, timeout)
        if 200 <= resp.status < 300:
            self._learn_sdp(resp.body)
            self._ack_2xx(req.branch or "", req.cseq[0])
        return resp

    def send_info_digit(self, digit: str, duration_ms: int = 100) -> Response:
        body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
        return self._transact(self._in_dialog(
            "INFO", body=body, headers=(("Content-Type", "application/dtmf-relay"),)))

    def bye(self) -> Response:
        resp = self._transact(self._in_dialog("BYE"))
        self.dialog = None
        return resp

    # -- out-of-dialog requests with 407 authentication ----------------------------------
    def send(self, method: str, uri: str, *, headers: tuple[tuple[str, str], ...] = (),
             body: bytes = b"", call_id: str | None = None, tag: str | None = None,
             to: str | None = None) -> Response:
        """A non-INVITE request to ``uri`` (To ``to``), answering a 407 once."""
        call_id, tag, auth = call_id or new_call_id(), tag or new_tag(), None
        for cseq in (1, 2):
            hdrs = [("Via", self._via(new_branch())), ("Max-Forwards", "70"),
                    ("From", f"<sip:{self.user}@{self.domain}>;tag={tag}"),
                    ("To", f"<{to or uri}>"), ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
                    *headers]
            if auth:
                hdrs.append(("Proxy-Authorization", auth))
            resp = self._transact(Request(method, uri, hdrs, body))
            if resp.status != 407:
                return resp
            auth = authorization_for(resp.headers.get("Proxy-Authenticate") or "", method, uri,
                                     self.user, self.password)
        return resp

    def subscribe(self, user: str, event: str, *, expires: int | None = 600,
                  accept: str | None = None) -> Response:
        """SUBSCRIBE to ``user``'s ``event``; a 2xx keeps the dialog in ``subscriptions``."""
        uri = f"sip:{user}@{self.domain}"
        call_id, tag = new_call_id(), new_tag()
        headers = [("Event", event), ("Contact", self.contact)]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if accept is not None:
            headers.append(("Accept", accept))
        resp = self.send("SUBSCRIBE", uri, headers=tuple(headers), call_id=call_id, tag=tag)
        if 200 <= resp.status < 300:
            self.subscriptions[call_id] = Dialog(
                call_id, tag, resp.to_tag or "", f"<sip:{self.user}@{self.domain}>", f"<{uri}>",
                str(resp.contacts[0].uri), [], resp.cseq[0])
        return resp

    def resubscribe(self, call_id: str, event: str, expires: int) -> Response:
        """Refresh (or, with 0, end) a subscription inside its dialog."""
        d = self.subscriptions[call_id]
        d.cseq += 1
        req = Request("SUBSCRIBE", d.target, [
            ("Via", self._via(new_branch())), ("Max-Forwards", "70"),
            ("From", f"{d.local_uri};tag={d.local_tag}"),
            ("To", f"{d.remote_uri};tag={d.remote_tag}"),
            ("Call-ID", d.call_id), ("CSeq", f"{d.cseq} SUBSCRIBE"), ("Event", event),
            ("Contact", self.contact), ("Expires", str(expires))])
        return self._transact(req)

    def message(self, user: str, text: str) -> Response:
        return self.send("MESSAGE", f"sip:{user}@{self.domain}", body=text.encode(),
                         headers=(("Content-Type", "text/plain"),))

    def wait_requests(self, method: str, count: int, *, call_id: str | None = None,
                      timeout: float = 5.0) -> list[Request]:
        """The first ``count`` requests of ``method`` (in ``call_id``) received, in order."""
        def found() -> list[Request]:
            return [r for r in self.requests if r.method == method
                    and (call_id is None or r.call_id == call_id)]
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(found()) >= count, timeout):
                raise TimeoutError(f"{self.user}: {len(found())} of {count} {method} in "
                                   f"{timeout}s: {[r.body[:200] for r in found()]}")
            return found()[:count]

    def wait_for(self, method: str, match: Callable[[Request], bool], *,
                 call_id: str | None = None, timeout: float = 5.0) -> Request:
        """The first request of ``method`` (in ``call_id``) that ``match`` accepts."""
        def found() -> Request | None:
            return next((r for r in self.requests if r.method == method and match(r)
                         and (call_id is None or r.call_id == call_id)), None)
        with self._arrived:
            if not self._arrived.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"{self.user}: no such {method} in {timeout}s")
            hit = found()
            assert hit is not None
            return hit

    def refer(self, refer_to: str, timeout: float = 5.0) -> Response:
        """REFER in our dialog (a transfer): Refer-To ``refer_to``, Referred-By us."""
        return self._transact(self._in_dialog("REFER", headers=(
            ("Refer-To", refer_to), ("Referred-By", f"<sip:{self.user}@{self.domain}>"))),
            timeout)

    def replaces(self) -> str:
        """A Replaces value naming our dialog as minisip sees it (its tag is the to-tag)."""
        d = self.dialog
        if d is None:
            raise RuntimeError(f"{self.user}: not in a call")
        return f"{d.call_id};to-tag={d.remote_tag};from-tag={d.local_tag}"

    def wait_request(self, method: str, timeout: float = 10.0, since: int = 0,
                     match: Callable[[Request], bool] = lambda r: True) -> Request:
        """The first ``method`` request in ``requests[since:]`` that ``match``es."""
        def found() -> Request | None:
            return next((r for r in self.requests[since:] if r.method == method and match(r)),
                        None)
        with self._arrived:
            if not self._arrived.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"{self.user}: no {method} in {timeout}s: "
                                   f"{[r.method for r in self.requests]}")
            hit = found()
            assert hit is not None
            return hit

    def received_infos(self) -> list[Request]:
        """The INFO requests received so far (each was answered 200)."""
        return [req for _, req in list(self.infos)]

    # -- RTP ------------------------------------------------------------------------------
    def _rtp_send(self, pt: int, timestamp: int, payload: bytes, marker: bool = False) -> None:
        if self.remote_sdp is None or self.remote_sdp.rtp_address is None:
            raise RuntimeError(f"{self.user}: no remote RTP address")
        self.rtp.sendto(make_rtp(pt, next(self._seq), timestamp, self.ssrc, payload, marker),
                        self.remote_sdp.rtp_address)

    def send_audio(self, seconds: float, freq: float = 440.0) -> int:
        """A PCMU tone at 20 ms pacing (by deadline, so no drift); returns the packets sent."""
        frames = round(seconds / 0.020)
        start = time.monotonic()
        for n in range(frames):
            pcm = b"".join(int(8000 * math.sin(2 * math.pi * freq * (n * 160 + i) / 8000))
                           .to_bytes(2, "little", signed=True) for i in range(160))
            time.sleep(max(0.0, start + n * 0.020 - time.monotonic()))
            payload = g711.ulaw_encode(pcm)
            self._rtp_send(0, self.ts, payload, marker=n == 0)
            self.sent_audio.append(payload)
            self.ts += 160
        return frames

    def send_rtp_events(self, digit: str, duration_ms: int = 100) -> int:
        """One key press as RFC 4733 (start, updates, the three end packets), PT 101."""
        start = time.monotonic()
        packets = event_packets(digit, self.ts, duration_ms)
        for p in packets:
            time.sleep(max(0.0, start + p.offset - time.monotonic()))
            self._rtp_send(EVENT_PT, p.timestamp, p.payload, p.marker)
        self.ts += max(160, duration_ms * 8) + 160  # the next event has its own timestamp
        return len(packets)

    def received_rtp(self, seconds: float) -> list[Received]:
        """The RTP packets that arrive during the next ``seconds``."""
        start = time.monotonic()
        time.sleep(seconds)
        return [r for r in list(self.rtp_log) if r.at >= start]
