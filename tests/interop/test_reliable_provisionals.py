"""A caller that Requires 100rel gets its 18x reliably (RFC 3262, minisip as UAS)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minisip.sip.message import Request, Response, new_branch
from tests.helpers import ServerProcess, make_server, poll
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop

REQUIRE = (("Require", "100rel"), ("Supported", "100rel"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path)
    system = srv.config_dir / "system.yaml"
    system.write_text(system.read_text().replace("  t1: 0.5", "  t1: 0.1"))  # 64*T1 = 6.4 s
    srv.start()
    yield srv
    srv.stop()


def ringing(a: PyPhone, count: int, timeout: float = 5.0) -> list[Response]:
    """The 180s the caller has received, once there are ``count``."""
    poll(lambda: len([p for p in list(a.provisionals) if p.status == 180]) >= count, timeout)
    return [p for p in list(a.provisionals) if p.status == 180]


def prack(a: PyPhone, r180: Response, rseq: int, cseq: int) -> Response:
    """A PRACK in the early dialog the 180 made (the INVITE was CSeq 2: after the 407)."""
    headers = [("Via", a._via(new_branch())), ("Max-Forwards", "70"),
               ("From", r180.headers.get("From") or ""), ("To", r180.headers.get("To") or ""),
               ("Call-ID", r180.call_id), ("CSeq", f"{cseq} PRACK"), ("RAck", f"{rseq} 2 INVITE")]
    return a._transact(Request("PRACK", str(r180.contacts[0].uri), headers))


def test_ringing_is_resent_until_its_prack_names_it(server: ServerProcess) -> None:
    with PyPhone(server.port, "100", "100") as a, PyPhone(server.port, "101", "101") as b:
        assert b.register().status == 200
        callee = threading.Thread(target=lambda: b.answer_incoming(ring=6.0))
        callee.start()
        result: list[Response] = []
        t = threading.Thread(target=lambda: result.append(a.call("101", extra=REQUIRE)))
        t.start()
        first = ringing(a, 3)  # 0.1, 0.2, 0.4 s apart until a PRACK comes
        assert len(first) >= 3, server.log()
        assert {r.headers.get("RSeq") for r in first} == {first[0].headers.get("RSeq")}
        assert "100rel" in (first[0].headers.get("Require") or "")
        rseq = int(first[0].headers.get("RSeq") or 0)
        assert prack(a, first[0], rseq + 1, 3).status == 481  # names nothing we sent
        assert prack(a, first[0], rseq, 4).status == 200
        time.sleep(0.3)
        seen = len(ringing(a, 0))
        time.sleep(1.0)
        assert len(ringing(a, 0)) == seen  # PRACKed: not resent any more
        t.join(15)
        callee.join(5)
        assert result and result[0].status == 200, server.log()
        assert a.dialog is not None
        a.dialog.cseq = 4  # the PRACKs came after the INVITE
        assert a.bye().status == 200


def test_no_prack_in_64_t1_refuses_the_call_and_stops_the_ringing(
        server: ServerProcess) -> None:
    with PyPhone(server.port, "100", "100") as a, PyPhone(server.port, "101", "101") as b:
        assert b.register().status == 200
        started = time.monotonic()
        result: list[Response] = []
        t = threading.Thread(target=lambda: result.append(
            a.call("101", extra=REQUIRE, timeout=15)))
        t.start()
        b.ring_incoming()
        t.join(15)
        assert result and result[0].status == 504, server.log()
        assert 5.0 < time.monotonic() - started < 12.0
        b.wait_requests("CANCEL", 1)
