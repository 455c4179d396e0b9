"""HTTP digest authentication for SIP: RFC 8760 (SHA-256 for SIP) over RFC 7616 / RFC 3261 22.

Server side, nonces are stateless: ``hex(timestamp) + hex(random) + MAC(secret, both)``,
so any nonce we issued is recognised without a table, even after a restart with the
same secret, and its age tells STALE from OK. The only state is the last nonce-count
seen per (nonce, cnonce) (replay protection), kept in a bounded LRU. Keying on the
cnonce too is as safe (a new cnonce needs a new response, which only the password
holder can compute) and forgives clients that restart nc at 1 with a fresh cnonce
on a reused nonce (seen in the field, and what a stateless client does). When an entry is evicted,
every nonce as old as it stops being accepted (answered STALE), so eviction can never
let a replay through, it only costs the client one more round trip.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .errors import BadMessage
from .tokens import random_hex

# Algorithm (upper case) -> hash constructor; "-SESS" variants hash the HA1 once more.
_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5, "MD5-SESS": hashlib.md5,
    "SHA-256": hashlib.sha256, "SHA-256-SESS": hashlib.sha256,
}
_CANONICAL_ALGORITHM = {"MD5": "MD5", "MD5-SESS": "MD5-sess", "SHA-256": "SHA-256",
                        "SHA-256-SESS": "SHA-256-sess"}

# One auth-param and its comma; the quoted-string is the unrolled-loop form (fast in re).
_AUTH_PARAM = re.compile(r'([ \t]*([A-Za-z0-9_\-]+)[ \t]*=[ \t]*'
                         r'(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^ \t,"]*))[ \t]*(?:,|\Z))', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_HEX = re.compile(r"[0-9a-f]+")

NONCE_LEN = 64  # 16 hex of ms timestamp + 16 hex random + 32 hex MAC


class AuthResult(Enum):
    OK = "ok"  #: right response, fresh nonce, new nonce-count
    STALE = "stale"  #: right response on our nonce, but expired: challenge with stale=true
    BAD = "bad"  #: wrong response, unknown nonce, realm or algorithm: challenge again
    REPLAY = "replay"  #: nonce-count not above the last one seen for this nonce (and cnonce)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


def ha1_for(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password), what a user database may store instead of a password."""
    alg = algorithm.upper()
    if alg not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return _h(alg, f"{username}:{realm}:{password}")


def _response(alg: str, ha1: str, nonce: str, nc: str | None, cnonce: str | None,
              qop: str | None, method: str, uri: str) -> str:
    if alg.endswith("-SESS"):
        ha1 = _h(alg, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = _h(alg, f"{method}:{uri}")
    if qop:
        return _h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(alg, f"{ha1}:{nonce}:{ha2}")  # RFC 2069 compatibility (client side only)


def parse_auth_params_untrusted(value: str) -> tuple[str, dict[str, str]]:
    """``Scheme a=b, c="d"`` -> ("scheme" lower case, {name lower case: unquoted value})."""
    parts = value.split(None, 1)
    if len(parts) != 2:
        raise BadMessage("Bad authorization header")
    scheme, rest = parts
    found = _AUTH_PARAM.findall(rest)
    # findall skips what does not match: the matches must tile the whole text.
    if sum(len(f[0]) for f in found) != len(rest):
        raise BadMessage("Bad authorization header")
    params: dict[str, str] = {}
    for _, name, quoted, token in found:
        key = name.lower()
        if key in params:
            raise BadMessage("Bad authorization header: repeated parameter")
        if quoted:
            params[key] = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            params[key] = token
    return scheme.lower(), params


def parse_credentials_untrusted(value: str) -> Credentials:
    """An Authorization / Proxy-Authorization value with the Digest scheme."""
    scheme, p = parse_auth_params_untrusted(value)
    if scheme != "digest":
        raise BadMessage("Not digest credentials")
    try:
        return Credentials(p["username"], p["realm"], p["nonce"], p["uri"], p["response"],
                           p.get("algorithm", "MD5"), p.get("cnonce"), p.get("nc"),
                           p.get("qop"), p.get("opaque"))
    except KeyError as exc:
        raise BadMessage(f"Digest credentials without {exc.args[0]}") from None


class DigestAuthenticator:
    """Issues challenges and checks credentials for one realm."""

    def __init__(self, realm: str, secret: bytes | None = None, nonce_ttl: float = 300.0,
                 algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 max_nonces: int = 100_000) -> None:
        self.secret = secret if secret is not None else os.urandom(32)
        self._key = hashlib.sha256(self.secret).digest()  # BLAKE2s keys are 32 bytes at most
        self.nonce_ttl = nonce_ttl
        self.algorithms: tuple[str, ...] = ()
        self.configure(realm=realm, nonce_ttl=nonce_ttl, algorithms=algorithms)
        self.max_nonces = max_nonces
        # The last nonce-count per hash((nonce, cnonce)), in one table per second of the
        # nonces' stamps: a nonce's table is found from its stamp, and what expires goes
        # a table at a time. A second's table is a dict while its nonces are being
        # answered, then two sorted arrays (``_Sealed``): tens of thousands of entries
        # live for the nonce TTL, and 16 bytes each in arrays is less than a dict's 50;
        # above all, no small object each, scattered through the allocator's arenas,
        # keeps them from going back to the system once a load is over.
        self._nc: dict[int, dict[int, int] | _Sealed] = {}
        self.counted = 0  #: entries in all the tables
        self._floor = -1  # nonces stamped at or before this (ms) and not in _nc are stale
        self._ha1s: dict[tuple[str, str, str, str], str] = {}
        self.max_ha1s = 20_000

    parse_credentials_untrusted = staticmethod(parse_credentials_untrusted)

    def configure(self, *, realm: str, nonce_ttl: float, algorithms: tuple[str, ...]) -> None:
        """New settings (a reload), for the next challenge and check. Nonces issued
        under another realm stop verifying (their MAC covers the realm): phones are
        challenged again, which is what changing the realm means."""
        algs = tuple(a.upper() for a in algorithms)
        for a in algs:
            if a not in _HASHES:
                raise ValueError(f"unsupported digest algorithm {a!r}")
        self.realm, self.nonce_ttl, self.algorithms = realm, nonce_ttl, algs

    # -- nonces ------------------------------------------------------------------------
    def _mac(self, stamp: str) -> str:
        # keyed BLAKE2s (a MAC by design, RFC 7693 2.9): 0.4 us, HMAC-SHA256 took 3.5
        return hashlib.blake2s(f"{stamp}:{self.realm}".encode(), key=self._key,
                               digest_size=16).hexdigest()

    def new_nonce(self, now: float) -> str:
        stamp = f"{max(0, int(now * 1000)):016x}{random_hex(8)}"
        return stamp + self._mac(stamp)

    def _nonce_time(self, nonce: str) -> int | None:
        """The nonce's timestamp in ms if we issued it, else None."""
        if len(nonce) != NONCE_LEN or not _HEX.fullmatch(nonce):
            return None
        if not hmac.compare_digest(self._mac(nonce[:32]), nonce[32:]):
            return None
        return int(nonce[:16], 16)

    # -- challenges ----------------------------------------------------------------------
    def challenge(self, now: float, *, stale: bool = False,
                  proxy: bool = False) -> list[tuple[str, str]]:
        """WWW-Authenticate (or Proxy-Authenticate) lines: one per algorithm, strongest first."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self.new_nonce(now)
        tail = ', stale=true' if stale else ""
        return [(name, (f'Digest realm="{_quote(self.realm)}", nonce="{nonce}", '
                        f'algorithm={_CANONICAL_ALGORITHM[a]}, qop="auth"{tail}'))
                for a in self.algorithms]

    # -- verification --------------------------------------------------------------------
    def verify(self, creds: Credentials, method: str, password: str | None, now: float, *,
               ha1: str | None = None, request_uri: str | None = None) -> AuthResult:
        """Check credentials against a password (or a precomputed ``ha1`` for creds.algorithm).

        ``request_uri``, when given, must equal the digest ``uri`` (RFC 3261 22.4 rule 9
        asks to check it refers to the Request-URI).
        """
        alg = creds.algorithm.upper()
        if alg not in self.algorithms or creds.realm != self.realm:
            return AuthResult.BAD
        if creds.qop != "auth" or not creds.nc or not creds.cnonce:
            return AuthResult.BAD  # we always offer qop=auth; RFC 2069 answers carry no nc
        if request_uri is not None and creds.uri != request_uri:
            return AuthResult.BAD
        stamp = self._nonce_time(creds.nonce)
        if stamp is None:
            return AuthResult.BAD
        nc_text = creds.nc
        if len(nc_text) != 8 or not _HEX.fullmatch(nc_text.lower()):
            return AuthResult.BAD
        if ha1 is None:
            if password is None:
                raise ValueError("verify needs a password or an ha1")
            ha1 = self._ha1(alg.removesuffix("-SESS"), creds.username, password)
        expected = _response(alg, ha1, creds.nonce, nc_text, creds.cnonce, creds.qop,
                             method, creds.uri)
        # compare_digest takes str only when ASCII (a TypeError otherwise): compare bytes
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode(
                "utf-8", "surrogateescape")):
            return AuthResult.BAD
        now_ms = int(now * 1000)
        age = now_ms - stamp
        # A nonce from the future was issued under another clock (a restart): stale too.
        if age > self.nonce_ttl * 1000 or age < -5000:
            return AuthResult.STALE
        return self._count(hash((creds.nonce, creds.cnonce)), int(nc_text, 16), stamp, now_ms)

    def _ha1(self, alg: str, username: str, password: str) -> str:
        """H(username:realm:password), kept per user (and password: a changed password
        is a new entry); bounded, as usernames come from the wire."""
        key = (alg, username, self.realm, password)
        ha1 = self._ha1s.get(key)
        if ha1 is None:
            ha1 = _h(alg, f"{username}:{self.realm}:{password}")
            if len(self._ha1s) >= self.max_ha1s:
                self._ha1s.clear()
            self._ha1s[key] = ha1
        return ha1

    def verify_ha1(self, creds: Credentials, method: str, ha1: str, now: float) -> AuthResult:
        return self.verify(creds, method, None, now, ha1=ha1)

    def _count(self, key: int, nc: int, stamp: int, now_ms: int) -> AuthResult:
        # (String hashes are keyed per process: a stranger cannot make two pairs collide;
        # if two did, the stored count only grows, so no replay ever passes.)
        second = stamp // 1000
        table = self._nc.get(second)
        last = None if table is None else table.get(key)
        if last is None:
            if stamp <= self._floor:
                return AuthResult.STALE  # its record may have been evicted: be safe
            self.counted += 1
        elif nc <= last:
            return AuthResult.REPLAY
        if table is None:
            table = self._nc[second] = {}
            self.expire(now_ms / 1000)
        table[key] = nc
        while self.counted > self.max_nonces:  # the oldest second goes: its nonces are stale
            oldest = min(self._nc)
            self.counted -= len(self._nc.pop(oldest))
            self._floor = max(self._floor, oldest * 1000 + 999)
        return AuthResult.OK

    def expire(self, now: float) -> None:
        """Drop the tables whose every nonce is past the TTL and seal those of seconds
        gone by (each new second's first count runs this; the server, every few seconds
        besides, for when no request comes)."""
        now_s = int(now)
        last_alive = now_s - int(self.nonce_ttl) - 2
        for second, table in list(self._nc.items()):
            if second < last_alive:
                self.counted -= len(self._nc.pop(second))
            elif second < now_s - SEAL_AFTER and isinstance(table, dict):
                self._nc[second] = _Sealed(table)


#: a second's nonce-counts are sealed this many seconds after it (its nonces are then
#: mostly answered: later counts update the arrays in place, or insert)
SEAL_AFTER = 2


class _Sealed:
    """A past second's nonce-counts: hashes and counts in two sorted arrays, read and
    written as a dict is (``get``, ``[key] = nc``, ``len``)."""

    __slots__ = ("counts", "keys")

    def __init__(self, table: dict[int, int]) -> None:
        keys = sorted(table)
        self.keys = array("q", keys)
        self.counts = array("L", [table[k] for k in keys])

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: int) -> int | None:
        keys = self.keys
        i = bisect_left(keys, key)
        return self.counts[i] if i < len(keys) and keys[i] == key else None

    def __setitem__(self, key: int, nc: int) -> None:
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            self.counts[i] = nc
        else:
            keys.insert(i, key)
            self.counts.insert(i, nc)


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


# -- client side ---------------------------------------------------------------------------

def authorization_for(challenge_value: str, method: str, uri: str, username: str,
                      password: str, *, nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization (or Proxy-Authorization) value answering one challenge."""
    scheme, p = parse_auth_params_untrusted(challenge_value)
    if scheme != "digest" or "nonce" not in p or "realm" not in p:
        raise BadMessage("Not a digest challenge")
    alg = p.get("algorithm", "MD5").upper()
    if alg not in _HASHES:
        raise BadMessage(f"Unsupported digest algorithm {alg}")
    realm, nonce = p["realm"], p["nonce"]
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    if qops and qop is None:
        raise BadMessage("No supported qop in challenge")
    cn = cnonce if cnonce is not None else os.urandom(8).hex()
    nc_text = f"{nc:08x}"
    ha1 = ha1_for(username, realm, password, alg.removesuffix("-SESS"))
    resp = _response(alg, ha1, nonce, nc_text, cn, qop, method, uri)
    parts = [f'Digest username="{_quote(username)}"', f'realm="{_quote(realm)}"',
             f'nonce="{_quote(nonce)}"', f'uri="{_quote(uri)}"', f'response="{resp}"',
             f"algorithm={_CANONICAL_ALGORITHM[alg]}"]
    if qop:
        parts += [f'cnonce="{_quote(cn)}"', f"qop={qop}", f"nc={nc_text}"]
    if "opaque" in p:
        parts.append(f'opaque="{_quote(p["opaque"])}"')
    return ", ".join(parts)
