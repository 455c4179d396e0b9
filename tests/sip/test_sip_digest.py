"""Digest authentication: RFC 7616 vectors, RFC 8760 SIP use, nonces, replays, stale, realms."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest

from minisip.sip.digest import (
    AuthResult,
    Credentials,
    DigestAuthenticator,
    authorization_for,
    ha1_for,
    parse_auth_params_untrusted,
    parse_credentials_untrusted,
)
from minisip.sip.errors import BadMessage

REALM = "minisip"
NOW = 1000.0


def H(alg: str, text: str) -> str:
    return hashlib.new({"MD5": "md5", "SHA-256": "sha256"}[alg], text.encode()).hexdigest()


def expected_response(alg: str, user: str, realm: str, password: str, nonce: str, nc: str,
                      cnonce: str, method: str, uri: str) -> str:
    """RFC 7616 3.4.1 with qop=auth, computed here from hashlib, not from the module."""
    ha1 = H(alg, f"{user}:{realm}:{password}")
    ha2 = H(alg, f"{method}:{uri}")
    return H(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


@pytest.mark.parametrize(("alg", "published"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")])
def test_rfc7616_example_vectors(alg: str, published: str) -> None:
    challenge = (f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
                 'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                 'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    value = authorization_for(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life",
                              cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    creds = parse_credentials_untrusted(value)
    assert creds.response == published
    assert published == expected_response(
        alg, "Mufasa", "http-auth@example.org", "Circle of Life",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "GET", "/dir/index.html")
    assert creds.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert creds.qop == "auth" and creds.nc == "00000001" and creds.algorithm == alg


@pytest.fixture
def auth() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, secret=b"s" * 32, nonce_ttl=300)


def challenge_params(auth: DigestAuthenticator, **kw: bool) -> list[dict[str, str]]:
    return [parse_auth_params_untrusted(v)[1] for _, v in auth.challenge(NOW, **kw)]


def test_challenge_offers_sha256_then_md5_with_qop_auth(auth: DigestAuthenticator) -> None:
    lines = auth.challenge(NOW)
    assert [n for n, _ in lines] == ["WWW-Authenticate", "WWW-Authenticate"]
    p = challenge_params(auth)
    assert [x["algorithm"] for x in p] == ["SHA-256", "MD5"]
    assert all(x["qop"] == "auth" and x["realm"] == REALM and "stale" not in x for x in p)
    assert [n for n, _ in auth.challenge(NOW, proxy=True)] == ["Proxy-Authenticate"] * 2
    assert challenge_params(auth, stale=True)[0]["stale"] == "true"


@pytest.mark.parametrize("alg", ["SHA-256", "MD5"])
def test_sip_register_with_each_algorithm_is_accepted(auth: DigestAuthenticator, alg: str) -> None:
    challenge = next(v for _, v in auth.challenge(NOW) if f"algorithm={alg}" in v)
    value = authorization_for(challenge, "REGISTER", "sip:pbx.example.com", "100@example.com",
                              "pw", cnonce="c0ffee")
    creds = parse_credentials_untrusted(value)
    assert creds.username == "100@example.com"
    assert creds.response == expected_response(alg, "100@example.com", REALM, "pw", creds.nonce,
                                               "00000001", "c0ffee", "REGISTER",
                                               "sip:pbx.example.com")
    assert auth.verify(creds, "REGISTER", "pw", NOW + 1) is AuthResult.OK


def _creds(auth: DigestAuthenticator, password: str = "pw", *, nc: int = 1,
           cnonce: str = "abc", method: str = "REGISTER", alg: str = "SHA-256",
           now: float = NOW) -> Credentials:
    challenge = next(v for _, v in auth.challenge(now) if f"algorithm={alg}" in v)
    return parse_credentials_untrusted(authorization_for(
        challenge, method, "sip:pbx", "100", password, nc=nc, cnonce=cnonce))


def test_wrong_password_is_bad(auth: DigestAuthenticator) -> None:
    assert auth.verify(_creds(auth, "nope"), "REGISTER", "pw", NOW) is AuthResult.BAD


def test_wrong_method_is_bad(auth: DigestAuthenticator) -> None:
    assert auth.verify(_creds(auth), "INVITE", "pw", NOW) is AuthResult.BAD


def test_wrong_realm_is_bad_even_with_the_right_hash(auth: DigestAuthenticator) -> None:
    other = DigestAuthenticator("elsewhere", secret=b"s" * 32)
    creds = _creds(other)
    assert other.verify(creds, "REGISTER", "pw", NOW) is AuthResult.OK
    assert auth.verify(creds, "REGISTER", "pw", NOW) is AuthResult.BAD


def test_nonce_not_ours_is_bad(auth: DigestAuthenticator) -> None:
    stranger = DigestAuthenticator(REALM, secret=b"t" * 32)
    assert auth.verify(_creds(stranger), "REGISTER", "pw", NOW) is AuthResult.BAD
    challenge = 'Digest realm="minisip", nonce="made-up", algorithm=MD5, qop="auth"'
    forged = parse_credentials_untrusted(
        authorization_for(challenge, "REGISTER", "sip:pbx", "100", "pw"))
    assert auth.verify(forged, "REGISTER", "pw", NOW) is AuthResult.BAD


def test_expired_nonce_is_stale_only_when_the_response_is_right(auth: DigestAuthenticator) -> None:
    creds = _creds(auth)
    assert auth.verify(creds, "REGISTER", "pw", NOW + 301) is AuthResult.STALE
    assert auth.verify(_creds(auth, "nope"), "REGISTER", "pw", NOW + 301) is AuthResult.BAD
    # A nonce from "the future" was made under another clock (a restart): stale, not OK.
    assert auth.verify(_creds(auth, now=NOW + 100), "REGISTER", "pw", NOW) is AuthResult.STALE


def test_nonce_survives_a_restart_with_the_same_secret(auth: DigestAuthenticator) -> None:
    creds = _creds(auth)
    restarted = DigestAuthenticator(REALM, secret=b"s" * 32)
    assert restarted.verify(creds, "REGISTER", "pw", NOW + 10) is AuthResult.OK


def test_replayed_nonce_count_is_refused(auth: DigestAuthenticator) -> None:
    first = _creds(auth, nc=1)
    assert auth.verify(first, "REGISTER", "pw", NOW) is AuthResult.OK
    assert auth.verify(first, "REGISTER", "pw", NOW + 1) is AuthResult.REPLAY
    nonce = first.nonce
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
    second = parse_credentials_untrusted(authorization_for(
        challenge, "REGISTER", "sip:pbx", "100", "pw", nc=2, cnonce="abc"))
    assert auth.verify(second, "REGISTER", "pw", NOW + 2) is AuthResult.OK
    lower = parse_credentials_untrusted(authorization_for(
        challenge, "REGISTER", "sip:pbx", "100", "pw", nc=1, cnonce="abc"))
    assert auth.verify(lower, "REGISTER", "pw", NOW + 3) is AuthResult.REPLAY
    # A fresh cnonce needs a fresh response (only the password holder has it): accepted.
    fresh = parse_credentials_untrusted(authorization_for(
        challenge, "REGISTER", "sip:pbx", "100", "pw", nc=1, cnonce="new"))
    assert auth.verify(fresh, "REGISTER", "pw", NOW + 3) is AuthResult.OK


def test_a_forged_response_does_not_poison_the_nonce_count(auth: DigestAuthenticator) -> None:
    good = _creds(auth, nc=5)
    bad = _creds(auth, "nope", nc=9)
    bad = Credentials(bad.username, bad.realm, good.nonce, bad.uri, bad.response, bad.algorithm,
                      good.cnonce, "00000009", "auth")
    assert auth.verify(bad, "REGISTER", "pw", NOW) is AuthResult.BAD
    assert auth.verify(good, "REGISTER", "pw", NOW) is AuthResult.OK


def test_nonce_table_is_bounded_and_eviction_never_lets_a_replay_through() -> None:
    auth = DigestAuthenticator(REALM, secret=b"s" * 32, max_nonces=10)
    first = _creds(auth, now=NOW)
    assert auth.verify(first, "REGISTER", "pw", NOW) is AuthResult.OK
    for i in range(50):  # (over the cap, the oldest second of nonces is forgotten: stale)
        c = _creds(auth, cnonce=f"c{i}", now=NOW + 1 + i / 4)
        assert auth.verify(c, "REGISTER", "pw", NOW + 1 + i / 4) is AuthResult.OK
    assert auth.counted <= 10
    assert auth.verify(first, "REGISTER", "pw", NOW + 14) is AuthResult.STALE


def test_entries_expire_with_their_nonce(auth: DigestAuthenticator) -> None:
    assert auth.verify(_creds(auth), "REGISTER", "pw", NOW) is AuthResult.OK
    later = _creds(auth, now=NOW + 400)
    assert auth.verify(later, "REGISTER", "pw", NOW + 400) is AuthResult.OK
    assert auth.counted == 1 and len(auth._nc) == 1


def test_counts_of_seconds_gone_by_are_sealed_and_still_refuse_replays(
        auth: DigestAuthenticator) -> None:
    first = _creds(auth, nc=1)
    assert auth.verify(first, "REGISTER", "pw", NOW) is AuthResult.OK
    later = _creds(auth, cnonce="x", now=NOW + 5)  # a new second's first count seals NOW's
    assert auth.verify(later, "REGISTER", "pw", NOW + 5) is AuthResult.OK
    assert type(auth._nc[int(NOW)]).__name__ == "_Sealed"
    challenge = f'Digest realm="{REALM}", nonce="{first.nonce}", algorithm=SHA-256, qop="auth"'

    def again(nc: int, cnonce: str) -> AuthResult:
        creds = parse_credentials_untrusted(authorization_for(
            challenge, "REGISTER", "sip:pbx", "100", "pw", nc=nc, cnonce=cnonce))
        return auth.verify(creds, "REGISTER", "pw", NOW + 6)

    assert again(1, "abc") is AuthResult.REPLAY
    assert again(2, "abc") is AuthResult.OK  # updated in place
    assert again(2, "abc") is AuthResult.REPLAY
    assert again(1, "new") is AuthResult.OK  # a new cnonce: inserted in order
    assert again(1, "new") is AuthResult.REPLAY
    assert auth.counted == 3


def test_counts_expire_without_further_requests(auth: DigestAuthenticator) -> None:
    assert auth.verify(_creds(auth), "REGISTER", "pw", NOW) is AuthResult.OK
    auth.expire(NOW + 100)
    assert auth.counted == 1
    auth.expire(NOW + 400)  # the server's housekeeping, with nobody registering
    assert auth.counted == 0 and not auth._nc


@pytest.mark.parametrize("alg", ["SHA-256", "MD5"])
def test_verify_with_a_precomputed_ha1(auth: DigestAuthenticator, alg: str) -> None:
    ha1 = ha1_for("100", REALM, "pw", alg)
    assert ha1 == H(alg, f"100:{REALM}:pw")
    assert auth.verify(_creds(auth, alg=alg), "REGISTER", None, NOW, ha1=ha1) is AuthResult.OK
    assert auth.verify_ha1(_creds(auth, alg=alg, cnonce="x"), "REGISTER", ha1,
                           NOW) is AuthResult.OK
    assert auth.verify_ha1(_creds(auth, "no", alg=alg), "REGISTER", ha1, NOW) is AuthResult.BAD


def test_algorithm_not_offered_is_bad() -> None:
    md5_only = DigestAuthenticator(REALM, secret=b"s" * 32, algorithms=("MD5",))
    sha = DigestAuthenticator(REALM, secret=b"s" * 32)
    assert md5_only.verify(_creds(sha, alg="SHA-256"), "REGISTER", "pw", NOW) is AuthResult.BAD


def test_request_uri_must_match_when_given(auth: DigestAuthenticator) -> None:
    creds = _creds(auth)
    assert auth.verify(creds, "REGISTER", "pw", NOW, request_uri="sip:other") is AuthResult.BAD
    assert auth.verify(creds, "REGISTER", "pw", NOW, request_uri="sip:pbx") is AuthResult.OK


def test_credentials_without_qop_are_bad(auth: DigestAuthenticator) -> None:
    c = _creds(auth)
    no_qop = Credentials(c.username, c.realm, c.nonce, c.uri, c.response, c.algorithm)
    assert auth.verify(no_qop, "REGISTER", "pw", NOW) is AuthResult.BAD


def test_parse_credentials_handles_quoting_and_spacing() -> None:
    c = parse_credentials_untrusted(
        'Digest  username="a\\"b@example.com" ,realm="r, s",nonce=n1, uri="sip:x",'
        'response="ABC",algorithm=md5,qop=auth,nc=00000001,cnonce="c"')
    assert c.username == 'a"b@example.com' and c.realm == "r, s" and c.nonce == "n1"
    assert c.algorithm == "md5" and c.response == "ABC"


@pytest.mark.parametrize("value", [
    "Digest", "Digest username", 'Digest username="a', "Digest realm=r, realm=s",
    'Digest realm="r", nonce="n"', "Basic dXNlcjpwYXNz", 'Digest username="u",,'])
def test_bad_credentials_raise_bad_message(value: str) -> None:
    with pytest.raises(BadMessage):
        parse_credentials_untrusted(value)


def test_a_response_with_non_ascii_characters_is_bad_not_a_type_error() -> None:
    auth = DigestAuthenticator("minisip", secret=b"k" * 32)
    creds = parse_credentials_untrusted(authorization_for(
        auth.challenge(1000.0)[0][1], "INVITE", "sip:101@minisip", "100", "100"))
    bad = dataclasses.replace(creds, response="\xb2" + creds.response[1:])
    assert auth.verify(bad, "INVITE", "100", 1000.0) is AuthResult.BAD
