"""A blocking SIP phone on a real socket (UDP or TCP) that says exactly what a test
tells it, bad bytes included: for end-to-end tests against a running server."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable

from minisip.sip.digest import authorization_for
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response, make_response, new_branch, new_call_id, new_tag
from minisip.sip.parser import PING, StreamFramer, parse_message_untrusted

Message = Request | Response


class RawPhone:
    def __init__(self, server_port: int, user: str, password: str | None = None, *,
                 transport: str = "udp", host: str = "127.0.0.1") -> None:
        self.user, self.password = user, user if password is None else password
        self.transport, self.host, self.server = transport, host, (host, server_port)
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
        else:
            self.sock = socket.create_connection(self.server, timeout=5)
        self.port = self.sock.getsockname()[1]
        tp = "" if transport == "udp" else f";transport={transport}"
        self.contact = f"<sip:{user}@{host}:{self.port}{tp}>"
        self.framer = StreamFramer()
        self.backlog: list[Message] = []

    def close(self) -> None:
        self.sock.close()

    # -- wire ------------------------------------------------------------------------
    def via(self, branch: str | None = None, params: str = ";rport") -> str:
        return (f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};"
                f"branch={branch or new_branch()}{params}")

    def send_bytes(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def send(self, msg: Message) -> None:
        self.send_bytes(msg.to_bytes())

    def _read(self, timeout: float) -> list[Message]:
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65535) if self.transport != "udp" else self.sock.recvfrom(
                65535)[0]
        except (TimeoutError, BlockingIOError):
            return []
        if self.transport == "udp":
            chunks = [data]
        else:
            self.framer.feed(data)
            chunks = []
            while (m := self.framer.next_message()) is not None:
                if m is not PING:
                    chunks.append(m)
        out = []
        for c in chunks:
            try:
                out.append(parse_message_untrusted(c))
            except BadMessage:
                continue
        return out

    def expect(self, pred: Callable[[Message], bool], timeout: float = 5.0) -> Message:
        """The first message (kept or new) for which ``pred`` holds; TimeoutError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.backlog):
                try:
                    ok = pred(m)
                except BadMessage:
                    ok = False
                if ok:
                    return self.backlog.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.user}: nothing expected came; had {self.backlog}")
            self.backlog += self._read(min(left, 0.5))

    def response_to(self, req: Request, final: bool = True, timeout: float = 5.0) -> Response:
        r = self.expect(lambda m: isinstance(m, Response) and m.call_id == req.call_id
                        and m.cseq == req.cseq and (m.status >= 200 or not final), timeout)
        assert isinstance(r, Response)
        return r

    def final(self, req: Request, first: Response, timeout: float = 5.0) -> Response:
        """``first`` if it is final, else the final response to ``req`` still to come."""
        return first if first.status >= 200 else self.response_to(req, timeout=timeout)

    def answer(self, req: Request, status: int, headers: list[tuple[str, str]] | None = None,
               body: bytes = b"", to_tag: str | None = None) -> Response:
        hdrs = list(headers or [])
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        resp = make_response(req, status, to_tag=to_tag or new_tag(), headers=hdrs)
        resp.body = body
        self.send(resp)
        return resp

    # -- what phones do ------------------------------------------------------------------
    def register(self, expires: int = 300) -> Response:
        call_id, tag, auth, resp = new_call_id(), new_tag(), None, None
        for cseq in (1, 2):
            headers = [("Via", self.via()), ("Max-Forwards", "70"),
                       ("From", f"<sip:{self.user}@minisip>;tag={tag}"),
                       ("To", f"<sip:{self.user}@minisip>"), ("Call-ID", call_id),
                       ("CSeq", f"{cseq} REGISTER"), ("Contact", self.contact),
                       ("Expires", str(expires))]
            if auth:
                headers.append(("Authorization", auth))
            req = Request("REGISTER", "sip:minisip", headers)
            self.send(req)
            resp = self.response_to(req)
            if resp.status != 401:
                break
            auth = authorization_for(resp.headers.get("WWW-Authenticate") or "", "REGISTER",
                                     "sip:minisip", self.user, self.password)
        assert resp is not None
        return resp

    def invite(self, number: str, body: bytes, *, headers: list[tuple[str, str]] | None = None,
               mangle: Callable[[bytes], bytes] | None = None) -> tuple[Request, Response]:
        """An authenticated INVITE (the 407 answered and ACKed); returns it and its first
        response after the 407 (provisional or final)."""
        uri = f"sip:{number}@minisip"
        call_id, tag, auth = new_call_id(), new_tag(), None
        for cseq in (1, 2):
            branch = new_branch()
            hdrs = [("Via", self.via(branch)), ("Max-Forwards", "70"),
                    ("From", f"<sip:{self.user}@minisip>;tag={tag}"), ("To", f"<{uri}>"),
                    ("Call-ID", call_id), ("CSeq", f"{cseq} INVITE"),
                    ("Contact", self.contact), *(headers or []),
                    ("Content-Type", "application/sdp")]
            if auth:
                hdrs.append(("Proxy-Authorization", auth))
            req = Request("INVITE", uri, hdrs, body)
            data = req.to_bytes()
            self.send_bytes(mangle(data) if mangle is not None and auth else data)
            resp = self.response_to(req, final=auth is None)
            if resp.status != 407:
                return req, resp
            self.ack(req, resp)
            auth = authorization_for(resp.headers.get("Proxy-Authenticate") or "", "INVITE",
                                     uri, self.user, self.password)
        return req, resp

    def ack(self, invite: Request, resp: Response) -> None:
        """The ACK of a non-2xx final response (RFC 3261 17.1.1.3)."""
        self.send(Request("ACK", invite.uri, [
            ("Via", invite.headers.get_all("Via")[0]), ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""), ("To", resp.headers.get("To") or ""),
            ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq[0]} ACK")]))

    def cancel(self, invite: Request) -> None:
        self.send(Request("CANCEL", invite.uri, [
            ("Via", invite.headers.get_all("Via")[0]), ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""), ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq[0]} CANCEL")]))
