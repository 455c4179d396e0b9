"""The registrar (RFC 3261 section 10.3) with digest authentication.

``handle()`` is a pure decision over (request, source, policy, now): it updates
the location service and returns the response. Order of checks follows 10.3:
authenticate first (an unknown user is challenged exactly like a known one, so
REGISTER cannot enumerate users), then the AOR, then each Contact.
"""
from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..sip.digest import AuthResult, DigestAuthenticator
from ..sip.digits import digits_untrusted
from ..sip.errors import BadMessage
from ..sip.message import MAX_EXPIRES, Request, Response, make_response, new_tag
from ..sip.peer import Peer
from .guard import AuthGuard, security_event
from .location import Binding, LocationService

#: RFC 3261 25.1 qvalue: 0 to 1 with at most three decimals, ASCII digits only
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", re.ASCII)


def _supports(req: Request, tag: str) -> bool:
    """The request names option tag ``tag`` in Supported (or Require)."""
    return any(t.strip().lower() == tag for name in ("Supported", "Require")
               for t in req.headers.values(name))


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 3  #: the manual's "one number, multi-devices": 3 devices


# A password no user can have: unknown users are verified against it so their
# challenge, and the time it takes, look like a known user's.
_NO_PASSWORD = hmac.new(b"minisip", b"unknown-user", "sha256").hexdigest()


class Registrar:
    def __init__(self, location: LocationService, auth: DigestAuthenticator,
                 guard: AuthGuard, password_of: Callable[[str], str | None],
                 policy: Callable[[], RegistrarPolicy],
                 open_account: Callable[[str], bool] = lambda aor: False) -> None:
        self.location = location
        #: accounts that register without authentication (a type 1 line without password)
        self.open_account = open_account
        self.auth = auth
        self.guard = guard
        self.password_of = password_of
        self.policy = policy
        self.registered = 0
        self.challenged = 0
        self.refused = 0
        self.auth_failed = 0  #: wrong password or unknown user (logged as auth_failed)

    # -- authentication ----------------------------------------------------------
    def authenticate(self, req: Request, peer: Peer, now: float, *,
                     proxy: bool = False) -> Response | str:
        """The authenticated user name, or the response to send (401/407/403)."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        creds = None
        for value in req.headers.get_all(header):
            if value[:6].lower() != "digest":
                continue  # RFC 4475 regaut01: unknown schemes are ignored, not errors
            c = self.auth.parse_credentials_untrusted(value)
            if c.realm == self.auth.realm:
                creds = c
                break
        if creds is None:
            return self._challenge(req, now, proxy=proxy)
        user = creds.username
        if self.guard.is_blocked(peer.host, user, now):
            self.refused += 1
            return make_response(req, 403, "Too many failed attempts", to_tag=new_tag())
        password = self.password_of(user)
        result = self.auth.verify(creds, req.method,
                                  password if password is not None else _NO_PASSWORD, now)
        if result is AuthResult.OK and password is not None:
            self.guard.success(peer.host, user)
            return user
        if result is AuthResult.STALE:
            return self._challenge(req, now, proxy=proxy, stale=True)
        if result is not AuthResult.REPLAY:
            self.auth_failed += 1
            security_event("auth_failed", peer, user=user, method=req.method)
            scope = self.guard.failure(peer.host, user, now)
            if scope is not None:
                security_event("auth_blocked", peer, user=user, scope=scope,
                               seconds=int(self.guard.block_seconds))
        return self._challenge(req, now, proxy=proxy)

    def _challenge(self, req: Request, now: float, *, proxy: bool,
                   stale: bool = False) -> Response:
        self.challenged += 1
        status = 407 if proxy else 401
        return make_response(req, status, to_tag=new_tag(),
                             headers=self.auth.challenge(now, stale=stale, proxy=proxy))

    # -- REGISTER ------------------------------------------------------------------
    def handle(self, req: Request, peer: Peer, now: float) -> Response:
        to_uri = req.to_addr.uri
        if to_uri.scheme not in ("sip", "sips"):
            raise BadMessage("To must be a SIP URI")
        aor = to_uri.user or ""
        auth = aor if self.open_account(aor) else self.authenticate(req, peer, now)
        if isinstance(auth, Response):
            return auth
        if aor != auth:
            self.refused += 1
            return make_response(req, 403, "Authenticated user does not match To",
                                 to_tag=new_tag())
        policy = self.policy()
        wall = time.time()
        if req.contact_star:
            # RFC 3261 10.3 step 6: "*" only with Expires: 0 and no other Contact.
            if req.expires != 0 or len(req.contacts) > 0:
                raise BadMessage("Contact * needs Expires: 0 and no other Contact")
            self.location.remove_all(aor)
            return self._ok(req, [], wall)
        default = req.expires if req.expires is not None else policy.default_expires
        call_id, cseq = req.call_id, req.cseq[0]
        existing = {b.contact: b for b in self.location.bindings(aor)}
        updates: list[tuple[str, int, float | None, str]] = []
        for contact in req.contacts:
            raw = contact.params.get("expires")
            expires = default if raw is None else min(
                digits_untrusted(raw.strip(), "Contact expires parameter", max_len=20),
                MAX_EXPIRES)
            if 0 < expires < policy.min_expires:
                return make_response(req, 423, to_tag=new_tag(),
                                     headers=[("Min-Expires", str(policy.min_expires))])
            q = contact.params.get("q")
            if q and not _QVALUE.fullmatch(q):  # RFC 3261 25.1; float() took "nan", "1e9"...
                raise BadMessage("Bad Contact q parameter")
            qv = float(q) if q else None
            key = str(contact.uri)
            old = existing.get(key)
            if old is not None and old.call_id == call_id and old.cseq >= cseq:
                # Step 7: an older REGISTER arriving late must not undo a newer one.
                return make_response(req, 500, "Out of order REGISTER", to_tag=new_tag(),
                                     headers=[("Retry-After", "1")])
            instance = (contact.params.get("+sip.instance") or "").strip('"<>')
            updates.append((key, min(expires, policy.max_expires), qv, instance))
        ua = req.headers.get("User-Agent") or ""
        path = tuple(req.headers.values("Path"))  # RFC 3327: the edge proxies it came by
        for key, expires, qv, instance in updates:
            if expires == 0:
                self.location.remove(aor, key)
                continue
            if instance:  # a rebooted phone re-registers with a new contact: replace
                for b in existing.values():
                    if b.instance == instance and b.contact != key:
                        self.location.remove(aor, b.contact)
            self.location.put(Binding(aor, key, wall + expires, qv, call_id, cseq, peer,
                                      ua, instance, wall, path))
        self.registered += 1
        ok = self._ok(req, self._limit_devices(aor, policy.max_contacts), wall)
        if path and _supports(req, "path"):  # RFC 3327 5.3: the UA learns its path
            for value in path:
                ok.headers.add("Path", value)
        return ok

    def _limit_devices(self, aor: str, limit: int) -> list[Binding]:
        """The user's bindings, the oldest devices removed beyond ``limit``."""
        bindings = self.location.bindings(aor)
        if len(bindings) > limit:  # the oldest device makes room for the newest
            bindings.sort(key=lambda b: b.registered_at)
            for b in bindings[:len(bindings) - limit]:
                self.location.remove(aor, b.contact)
            bindings = self.location.bindings(aor)
        return bindings

    def _ok(self, req: Request, bindings: list[Binding], wall: float) -> Response:
        contacts = [("Contact", f"<{b.contact}>;expires={b.remaining(wall)}")
                    for b in bindings]
        return make_response(req, 200, to_tag=new_tag(), headers=contacts)
