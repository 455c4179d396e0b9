"""Graceful shutdown of a running server: calls end on the wire, CDRs say so, exit 0."""
from __future__ import annotations

import json
import random
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, Sipp, free_port, make_server, need, run_sipp, start_sipp

pytestmark = pytest.mark.interop


def device(server: ServerProcess, user: str, scenario: str, tmp_path: Path,
           calls: int) -> Sipp:
    port = free_port((socket.SOCK_DGRAM,))
    uas = start_sipp(scenario, port=port, calls=calls, timeout=30, workdir=tmp_path)
    reg = run_sipp("register_contact.xml", server.port, users=[(user, user)],
                   extra=("-key", "contact_port", str(port)), workdir=tmp_path)
    assert reg.ok, reg.output + server.log()
    return uas


def wait_calls(server: ServerProcess, n: int, state: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    live: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        r = server.cli("calls", "--json")
        if r.returncode == 0:
            live = json.loads(r.stdout)
            if len(live) == n and all(c["state"] == state for c in live):
                return
        time.sleep(0.1)
    raise AssertionError(f"wanted {n} calls {state}, have {live}\n{server.log()}")


def cdr_rows(server: ServerProcess) -> list[dict[str, object]]:
    with sqlite3.connect(server.data_dir / "cdr.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM cdr ORDER BY id")]


def register_once(port: int) -> bytes:
    """An unauthenticated REGISTER: the answer's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.bind(("127.0.0.1", 0))
        lp = s.getsockname()[1]
        b = f"z9hG4bK{random.getrandbits(40):x}"
        s.sendto((f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};"
                  f"branch={b}\r\nFrom: <sip:100@127.0.0.1>;tag=r1\r\nTo: <sip:100@127.0.0.1>"
                  f"\r\nCall-ID: {b}\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@127.0.0.1:{lp}>"
                  f"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", port))
        return s.recv(4096).split(b"\r\n", 1)[0]


def test_sigterm_during_two_answered_calls_byes_both_legs_and_exits_0(
        tmp_path: Path) -> None:
    need("sipp")
    srv = make_server(tmp_path)
    srv.start()
    try:
        # (a talking user without call_waiting is busy: one callee device per call)
        callees = [device(srv, user, "uas_answer.xml", tmp_path, calls=1)
                   for user in ("101", "102")]
        uac = start_sipp("uac_released_by_pbx.xml", remote=f"127.0.0.1:{srv.port}",
                         users=[("100", "100", "101"), ("100", "100", "102")], calls=2,
                         rate=10, timeout=30, workdir=tmp_path)
        wait_calls(srv, 2, "talking")
        t0 = time.monotonic()
        assert srv.stop(signal.SIGTERM, timeout=15) == 0, srv.log()
        assert time.monotonic() - t0 < 5  # every BYE answered: no waiting out the grace
        caller = uac.wait()
        assert caller.ok and caller.successful == 2, caller.output
        for uas in callees:
            callee = uas.wait()
            assert callee.ok and callee.successful == 1, callee.output
    finally:
        srv.stop(signal.SIGKILL)
    rows = cdr_rows(srv)
    assert len(rows) == 4, rows
    assert {(r["kind"], r["status"], r["cause"], r["released_by"]) for r in rows} == {
        ("O", 200, "shutdown", "pbx"), ("T", 200, "shutdown", "pbx")}
    assert "Traceback" not in srv.log()


def test_a_ringing_call_is_cancelled_and_new_work_refused_until_the_grace_ends(
        tmp_path: Path) -> None:
    need("sipp")
    srv = make_server(tmp_path)
    (srv.config_dir / "system.yaml").write_text(
        (srv.config_dir / "system.yaml").read_text().replace("shutdown_grace: 5",
                                                              "shutdown_grace: 2"))
    srv.start()
    try:
        talking = device(srv, "101", "uas_answer_ignore_bye.xml", tmp_path, calls=1)
        a = start_sipp("uac_released_by_pbx.xml", remote=f"127.0.0.1:{srv.port}",
                       users=[("100", "100", "101")], calls=1, timeout=30, workdir=tmp_path)
        wait_calls(srv, 1, "talking")
        ringing = device(srv, "102", "uas_ring_cancelled.xml", tmp_path, calls=1)
        b = start_sipp("uac_expect_503.xml", remote=f"127.0.0.1:{srv.port}",
                       users=[("100", "100", "102")], calls=1, timeout=30, workdir=tmp_path)
        wait_calls_in = time.monotonic() + 10
        while time.monotonic() < wait_calls_in:
            live = json.loads(srv.cli("calls", "--json").stdout or "[]")
            if sorted(c["state"] for c in live) == ["ringing", "talking"]:
                break
            time.sleep(0.1)
        assert srv.proc is not None
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        # The callee of the first call never answers its BYE: the server waits out the
        # grace (2 s), and meanwhile refuses what would start new work.
        time.sleep(0.5)
        assert register_once(srv.port) == b"SIP/2.0 503 Shutting down"
        assert srv.proc.wait(10) == 0, srv.log()
        assert 1.5 < time.monotonic() - t0 < 6
        for s in (a, talking, ringing, b):
            r = s.wait()
            assert r.ok, r.output
    finally:
        srv.stop(signal.SIGKILL)
    causes = {(r["final"], r["status"], r["cause"]) for r in cdr_rows(srv)}
    assert causes == {("101", 200, "shutdown"), ("102", 503, "shutdown")}
    assert "requests unanswered" in srv.log()
