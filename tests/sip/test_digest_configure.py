"""Digest settings change on reload: realm, nonce lifetime, algorithms."""
from __future__ import annotations

from minisip.sip.digest import AuthResult, DigestAuthenticator, authorization_for
from minisip.sip.digest import parse_credentials_untrusted as parse


def answer(auth: DigestAuthenticator, now: float, password: str = "pw") -> AuthResult:
    (_, challenge), *_ = auth.challenge(now)
    creds = parse(authorization_for(challenge, "REGISTER", "sip:pbx", "100", password))
    return auth.verify(creds, "REGISTER", password, now + 20)


def test_nonce_ttl_realm_and_algorithms_take_effect_for_the_next_challenge() -> None:
    auth = DigestAuthenticator("old", secret=b"k" * 32, nonce_ttl=300, algorithms=("MD5",))
    assert answer(auth, 1000.0) is AuthResult.OK
    auth.configure(realm="new", nonce_ttl=10, algorithms=("SHA-256", "MD5"))
    assert answer(auth, 2000.0) is AuthResult.STALE  # answered 20 s later: past 10 s
    (_, first), (_, second) = auth.challenge(3000.0)
    assert 'realm="new"' in first and "algorithm=SHA-256" in first and "MD5" in second


def test_a_nonce_of_the_old_realm_no_longer_verifies() -> None:
    auth = DigestAuthenticator("old", secret=b"k" * 32)
    (_, challenge), *_ = auth.challenge(1000.0)
    creds = parse(authorization_for(challenge, "REGISTER", "sip:pbx", "100", "pw"))
    auth.configure(realm="new", nonce_ttl=300, algorithms=("MD5",))
    assert auth.verify(creds, "REGISTER", "pw", 1001.0) is AuthResult.BAD
