"""The registrar as a pure decision: request in, response and bindings out."""
from __future__ import annotations

import itertools

import pytest

from minisip.pbx.guard import AuthGuard
from minisip.pbx.location import LocationService, device_peer, route_headers
from minisip.pbx.registrar import Registrar, RegistrarPolicy
from minisip.sip.digest import DigestAuthenticator, authorization_for
from minisip.sip.errors import BadMessage
from minisip.sip.message import Request, Response
from minisip.sip.peer import Peer

PEER = Peer("udp", "192.0.2.10", 5062)
USERS = {"100": "100", "101": "101", "102": "secret"}
_cseq = itertools.count(1)


class Phone:
    """Just enough of a UA to register against the registrar in memory."""

    def __init__(self, reg: Registrar, user: str, password: str, contact: str | None = None,
                 call_id: str | None = None) -> None:
        self.reg, self.user, self.password = reg, user, password
        self.contact = contact or f"sip:{user}@192.0.2.10:5062"
        self.call_id = call_id or f"cid-{user}-{id(self)}"
        self.challenge: str | None = None

    def request(self, *, expires: int | None = 3600, contact: str | None = "default",
                extra: list[tuple[str, str]] | None = None, cseq: int | None = None) -> Request:
        headers = [
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{next(_cseq)}"),
            ("From", f"<sip:{self.user}@pbx>;tag=ft{self.user}"),
            ("To", f"<sip:{self.user}@pbx>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq if cseq is not None else next(_cseq)} REGISTER"),
            ("Max-Forwards", "70"),
        ]
        if contact == "default":
            contact = f"<{self.contact}>"
        if contact is not None:
            headers.append(("Contact", contact))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        headers += extra or []
        if self.challenge is not None:
            headers.append(("Authorization", authorization_for(
                self.challenge, "REGISTER", "sip:pbx", self.user, self.password)))
        return Request("REGISTER", "sip:pbx", headers)

    def register(self, now: float = 1000.0, **kw: object) -> Response:
        resp = self.reg.handle(self.request(**kw), PEER, now)  # type: ignore[arg-type]
        if resp.status == 401:
            self.challenge = resp.headers.get("WWW-Authenticate")
            resp = self.reg.handle(self.request(**kw), PEER, now)  # type: ignore[arg-type]
        return resp


@pytest.fixture
def registrar() -> Registrar:
    loc = LocationService(None)
    auth = DigestAuthenticator("minisip", secret=b"k" * 32, nonce_ttl=300)
    return Registrar(loc, auth, AuthGuard(), USERS.get,
                     lambda: RegistrarPolicy(min_expires=60, max_expires=3600,
                                             default_expires=1800, max_contacts=3))


def test_first_register_is_challenged_with_sha256_and_md5(registrar: Registrar) -> None:
    resp = registrar.handle(Phone(registrar, "100", "100").request(), PEER, 1000.0)
    assert resp.status == 401
    challenges = resp.headers.get_all("WWW-Authenticate")
    assert "SHA-256" in challenges[0] and "MD5" in challenges[1]
    assert resp.to_tag


def test_right_password_registers_and_lists_contact(registrar: Registrar) -> None:
    resp = Phone(registrar, "100", "100").register()
    assert resp.status == 200
    assert resp.headers.get_all("Contact") == ["<sip:100@192.0.2.10:5062>;expires=3600"]
    assert registrar.location.is_online("100")


def test_wrong_password_is_challenged_again_never_200(registrar: Registrar) -> None:
    assert Phone(registrar, "100", "wrong").register().status == 401
    assert not registrar.location.is_online("100")


def test_unknown_user_is_challenged_exactly_like_a_known_one(registrar: Registrar) -> None:
    known = registrar.handle(Phone(registrar, "100", "x").request(), PEER, 1000.0)
    unknown = registrar.handle(Phone(registrar, "555", "x").request(), PEER, 1000.0)
    assert known.status == unknown.status == 401
    assert Phone(registrar, "555", "555").register().status == 401


def test_user_cannot_register_someone_elses_aor(registrar: Registrar) -> None:
    phone = Phone(registrar, "100", "100")
    phone.register()
    req = phone.request()
    req.headers.set("To", "<sip:101@pbx>")
    assert registrar.handle(req, PEER, 1000.0).status == 403


def test_too_short_expires_gets_423_with_min_expires(registrar: Registrar) -> None:
    resp = Phone(registrar, "101", "101").register(expires=10)
    assert resp.status == 423 and resp.headers.get("Min-Expires") == "60"


def test_long_expires_is_clamped_to_max(registrar: Registrar) -> None:
    resp = Phone(registrar, "101", "101").register(expires=999999)
    assert resp.headers.get("Contact").endswith("expires=3600")


def test_expires_zero_and_star_unregister(registrar: Registrar) -> None:
    phone = Phone(registrar, "101", "101")
    phone.register()
    assert phone.register(expires=0).status == 200
    assert not registrar.location.is_online("101")
    phone.register()
    resp = phone.register(expires=0, contact="*")
    assert resp.status == 200 and not registrar.location.is_online("101")


def test_star_with_nonzero_expires_is_a_bad_request(registrar: Registrar) -> None:
    with pytest.raises(BadMessage):
        Phone(registrar, "101", "101").register(expires=60, contact="*")


def test_query_without_contact_lists_bindings(registrar: Registrar) -> None:
    phone = Phone(registrar, "102", "secret")
    phone.register()
    resp = phone.register(contact=None)
    assert resp.status == 200 and len(resp.headers.get_all("Contact")) == 1


def test_several_devices_register_up_to_the_limit(registrar: Registrar) -> None:
    for n in range(4):
        Phone(registrar, "100", "100", contact=f"sip:100@192.0.2.{n}:5060").register()
    contacts = [b.contact for b in registrar.location.bindings("100")]
    assert len(contacts) == 3 and "sip:100@192.0.2.0:5060" not in contacts


def test_bindings_expire_on_the_timer(registrar: Registrar) -> None:
    import time
    Phone(registrar, "100", "100").register(expires=60)
    registrar.location.handle_timer(time.time() + 61)
    assert not registrar.location.is_online("100")


def test_out_of_order_register_on_same_call_id_is_refused(registrar: Registrar) -> None:
    phone = Phone(registrar, "100", "100")
    assert phone.register(cseq=10).status == 200
    assert phone.register(cseq=5).status == 500


def test_brute_force_is_blocked_per_address_and_user(registrar: Registrar) -> None:
    for _ in range(12):
        Phone(registrar, "100", "guess").register()
    resp = Phone(registrar, "100", "100").register()
    assert resp.status == 403
    # another user behind the same address still registers
    assert Phone(registrar, "101", "101").register().status == 200


def test_bindings_survive_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "reg.db"
    loc = LocationService(db)
    auth = DigestAuthenticator("minisip", secret=b"k" * 32)
    reg = Registrar(loc, auth, AuthGuard(), USERS.get, RegistrarPolicy)
    Phone(reg, "100", "100").register()
    loc.commit()
    # no close(): as after kill -9
    again = LocationService(db)
    assert [b.contact for b in again.bindings("100")] == ["sip:100@192.0.2.10:5062"]
    assert again.bindings("100")[0].source == PEER


def old_bindings(tmp_path, options: str):  # type: ignore[no-untyped-def]
    """registrations.db as a minisip before Path support wrote it, with one binding."""
    import sqlite3
    import time
    db = tmp_path / "reg.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE bindings (aor TEXT NOT NULL, contact TEXT NOT NULL, "
                "expires_at REAL NOT NULL, q REAL, call_id TEXT NOT NULL, cseq INTEGER NOT "
                "NULL, transport TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL, "
                "user_agent TEXT NOT NULL DEFAULT '', instance TEXT NOT NULL DEFAULT '', "
                f"registered_at REAL NOT NULL, PRIMARY KEY (aor, contact)){options}")
    old.execute("INSERT INTO bindings VALUES ('100', 'sip:100@192.0.2.10:5062', ?, NULL, "
                "'c1', 2, 'udp', '192.0.2.10', 5062, 'ua', '', 1.0)", (time.time() + 600,))
    old.commit()
    old.close()
    return db


def test_bindings_of_an_older_minisip_are_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3
    db = old_bindings(tmp_path, "")  # the table as minisip created it before WITHOUT ROWID
    loc = LocationService(db)
    assert [b.contact for b in loc.bindings("100")] == ["sip:100@192.0.2.10:5062"]
    loc.close()
    sql = sqlite3.connect(db).execute("SELECT group_concat(sql) FROM sqlite_master").fetchone()
    assert "WITHOUT ROWID" in sql[0] and "bindings_old" not in sql[0]
    assert [b.user_agent for b in LocationService(db).bindings("100")] == ["ua"]


@pytest.mark.parametrize("params, ok", [
    (";expires=600;q=0.5", True), (";q=1.000", True), (";q=0", True),
    (";expires=\u00b2", False), (";expires=-1", False), (";expires=1_0", False),
    (";q=nan", False), (";q=2", False), (";q=0.12345", False), (";q=\u00b9", False),
])
def test_contact_expires_and_q_are_ascii_numbers_in_range(registrar: Registrar, params: str,
                                                         ok: bool) -> None:
    phone = Phone(registrar, "100", "100")
    if ok:
        assert phone.register(contact=f"<{phone.contact}>{params}").status == 200
    else:
        with pytest.raises(BadMessage):
            phone.register(contact=f"<{phone.contact}>{params}")


EDGE = "<sip:198.51.100.7:5070;lr>"


def test_a_path_is_kept_echoed_to_a_ua_that_supports_it_and_routes_requests(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "reg.db"
    loc = LocationService(db)
    auth = DigestAuthenticator("minisip", secret=b"k" * 32)
    reg = Registrar(loc, auth, AuthGuard(), USERS.get, RegistrarPolicy)
    ok = Phone(reg, "100", "100").register(extra=[("Path", EDGE), ("Supported", "path")])
    assert ok.status == 200 and ok.headers.values("Path") == [EDGE]  # RFC 3327 5.3
    (b,) = loc.bindings("100")
    assert b.path == (EDGE,) and route_headers(b) == (("Route", EDGE),)
    assert device_peer(b) == Peer("udp", "198.51.100.7", 5070)  # the edge, not the phone
    loc.commit()
    assert LocationService(db).bindings("100")[0].path == (EDGE,)  # kept across a restart
    quiet = Phone(reg, "101", "101").register(extra=[("Path", EDGE)])
    assert quiet.status == 200 and not quiet.headers.values("Path")  # no Supported: path
    assert loc.bindings("101")[0].path == (EDGE,)


def test_a_bindings_table_from_before_path_gains_the_column(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    loc = LocationService(old_bindings(tmp_path, " WITHOUT ROWID"))
    (b,) = loc.bindings("100")
    assert b.path == () and device_peer(b) == Peer("udp", "192.0.2.10", 5062)
