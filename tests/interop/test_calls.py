"""Calls between local users through the B2BUA, with sipp on both sides."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (ServerProcess, Sipp, make_server, need, run_sipp,
                           sipp_device)

pytestmark = pytest.mark.interop


def set_user(server: ServerProcess, user: str, **items: object) -> None:
    """Edit users.yaml the way an administrator would (before the server starts)."""
    path = server.config_dir / "users.yaml"
    text = path.read_text()
    marker = f'"{user}":\n'
    assert marker in text, f"user {user} not in {path}"
    extra = "".join(f"    {k}: {v}\n" for k, v in items.items())
    path.write_text(text.replace(marker, marker + extra, 1))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    need("sipp")
    srv = make_server(tmp_path)
    set_user(srv, "101", no_answer_time=3)
    set_user(srv, "102", max_duration=2)
    srv.start()
    yield srv
    srv.stop()


def device(server: ServerProcess, user: str, scenario: str, tmp_path: Path,
           calls: int = 1) -> Sipp:
    """A callee device: a sipp server registered as ``user`` on its own port."""
    return sipp_device(server, user, scenario, tmp_path, calls=calls)


def cdrs(server: ServerProcess) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(server.data_dir / "cdr.db") as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM cdr ORDER BY id")]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def call(server: ServerProcess, caller: str, callee: str, scenario: str, tmp_path: Path,
         hold_ms: int = 300) -> object:
    return run_sipp(scenario, server.port, users=[(caller, caller, callee)],
                    extra=("-d", str(hold_ms)), timeout=30, workdir=tmp_path)


def test_100_calls_101_rings_answers_and_hangs_up(server: ServerProcess,
                                                  tmp_path: Path) -> None:
    uas = device(server, "101", "uas_answer.xml", tmp_path)
    r = call(server, "100", "101", "uac_call.xml", tmp_path)
    assert r.ok, r.output + server.log()
    u = uas.wait()
    assert u.ok, u.output
    rows = cdrs(server)
    assert {(c["kind"], c["status"], c["cause"]) for c in rows} == {
        ("O", 200, "normal"), ("T", 200, "normal")}
    assert rows[0]["caller"] == "100" and rows[0]["final"] == "101"
    assert rows[0]["released_by"] == "caller"


def test_caller_cancels_while_ringing_gets_487(server: ServerProcess, tmp_path: Path) -> None:
    uas = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    r = call(server, "100", "101", "uac_cancel.xml", tmp_path)
    assert r.ok, r.output + server.log()
    assert uas.wait().ok
    assert {c["cause"] for c in cdrs(server)} == {"cancelled"}


def test_busy_callee_486_is_relayed(server: ServerProcess, tmp_path: Path) -> None:
    uas = device(server, "101", "uas_busy.xml", tmp_path)
    r = call(server, "100", "101", "uac_expect_486.xml", tmp_path)
    assert r.ok, r.output + server.log()
    assert uas.wait().ok
    assert {(c["status"], c["cause"]) for c in cdrs(server)} == {(486, "busy")}


def test_no_answer_gives_480_after_the_no_answer_time(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    uas = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    t0 = time.monotonic()
    r = call(server, "100", "101", "uac_expect_480.xml", tmp_path)
    elapsed = time.monotonic() - t0
    assert r.ok, r.output + server.log()
    assert uas.wait().ok
    assert 2.5 < elapsed < 10
    assert {(c["status"], c["cause"], c["released_by"]) for c in cdrs(server)} == {
        (480, "no answer", "pbx")}


def test_offline_and_unknown_callees(server: ServerProcess, tmp_path: Path) -> None:
    r = call(server, "100", "102", "uac_expect_480.xml", tmp_path)  # 102 is not registered
    assert r.ok, r.output + server.log()
    r = call(server, "100", "777", "uac_expect_404.xml", tmp_path)
    assert r.ok, r.output + server.log()


def test_two_devices_ring_and_the_loser_gets_cancel(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    loser = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    winner = device(server, "101", "uas_answer.xml", tmp_path)
    r = call(server, "100", "101", "uac_call.xml", tmp_path)
    assert r.ok, r.output + server.log()
    assert winner.wait().ok
    lost = loser.wait()
    assert lost.ok, lost.output


def test_max_duration_releases_the_call(server: ServerProcess, tmp_path: Path) -> None:
    uas = device(server, "101", "uas_answer_then_bye.xml", tmp_path)
    t0 = time.monotonic()
    r = call(server, "102", "101", "uac_released_by_pbx.xml", tmp_path)
    assert r.ok, r.output + server.log()
    assert uas.wait().ok
    assert 1.5 < time.monotonic() - t0 < 10
    assert {(c["cause"], c["released_by"]) for c in cdrs(server)} == {("max duration", "pbx")}
