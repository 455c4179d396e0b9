"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, in a thread.

``MailServer(security=...)`` listens plain ("none"), with STARTTLS or with
implicit TLS, on a self-signed certificate for 127.0.0.1 (a client trusts it
through ``SSL_CERT_FILE=server.cert``), optionally with a login. Received
mails are parsed with the standard library and kept in ``messages``.
"""
from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from minisip.transport.tls import certificate_paths
from tests.helpers import free_port


class _Handler:
    def __init__(self, sink: MailServer) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.sink.lock:
            self.sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), mail))
        return "250 OK"


class MailServer:
    def __init__(self, tmp: Path, *, security: str = "none", login: tuple[str, str] | None = None,
                 port: int | None = None) -> None:
        self.security = security
        self.login = login
        self.port = port or free_port()
        self.cert, key = certificate_paths(tmp / "smtp-tls", "", "", ["127.0.0.1", "localhost"])
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(self.cert, key)
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.lock = threading.Lock()
        self.logins: list[str] = []
        self._controller: Controller | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and self.login is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self.login)
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    def start(self) -> MailServer:
        kwargs: dict[str, Any] = {}
        if self.security == "tls":
            kwargs["ssl_context"] = self.context
        elif self.security == "starttls":
            kwargs.update(tls_context=self.context, require_starttls=True)
        if self.login is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                      server_hostname="127.0.0.1", **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, count: int = 1, timeout: float = 20.0) -> list[EmailMessage]:
        """The mails received once there are ``count`` of them (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return [m for _, _, m in self.messages]
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.messages)} mails after {timeout} s, wanted {count}")
