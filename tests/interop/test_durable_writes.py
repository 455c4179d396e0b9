"""The databases refuse writes for 5 s under call load: no call fails, nothing is lost.

Another process holds the write lock of cdr.db and registrations.db (what a
backup tool or a long query does) while sipp places calls and a phone
registers. The server keeps answering; once the lock is gone every CDR and the
registration are on disk.
"""
from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, make_server, need, run_sipp, start_sipp
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop

CALLS, RATE = 300, 30  #: ten seconds of calls; the databases are locked in the middle


def test_locked_databases_lose_no_call_and_no_cdr(tmp_path: Path) -> None:
    need("sipp")
    srv = make_server(tmp_path)
    users = srv.config_dir / "users.yaml"  # 101 takes each call even while it talks, and
    # 100 may place calls that overlap (a loaded machine slows each; the limit is not tested)
    users.write_text(users.read_text().replace('"101":\n', '"101":\n    call_waiting: true\n')
                     .replace('"100":\n', '"100":\n    max_concurrent_calls: 1000\n'
                              '    max_concurrent_outgoing_calls: 1000\n'))
    srv.start()
    try:
        uas_port = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp("uas_answer.xml", port=uas_port, calls=CALLS, timeout=60,
                         workdir=tmp_path, extra=("-d", "0"))
        reg = run_sipp("register_contact.xml", srv.port, users=[("101", "101")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp_path)
        assert reg.ok, reg.output
        uac = start_sipp("uac_call.xml", remote=f"127.0.0.1:{srv.port}",
                         users=[("100", "100", "101")], calls=CALLS, rate=RATE, timeout=60,
                         workdir=tmp_path, extra=("-d", "0"))
        time.sleep(2)
        locks = []
        for name in ("cdr.db", "registrations.db"):
            db = sqlite3.connect(srv.data_dir / name, isolation_level=None, timeout=5)
            db.execute("BEGIN EXCLUSIVE")
            locks.append(db)
        locked_at = time.monotonic()
        with PyPhone(srv.port, "102", "102") as phone:  # registers while the disk refuses
            assert phone.register().status == 200, srv.log()
        time.sleep(max(0.0, 5 - (time.monotonic() - locked_at)))
        for db in locks:
            db.execute("COMMIT")
            db.close()
        r, u = uac.wait(), uas.wait()
        assert r.ok and r.successful == CALLS, r.output + srv.log()
        assert u.ok and u.successful == CALLS, u.output
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the retry comes within a second or two
            with sqlite3.connect(srv.data_dir / "cdr.db") as db:
                n = db.execute("SELECT count(*) FROM cdr").fetchone()[0]
            with sqlite3.connect(srv.data_dir / "registrations.db") as db:
                regs = {row[0] for row in db.execute("SELECT aor FROM bindings")}
            if n == 2 * CALLS and "102" in regs:
                break
            time.sleep(0.2)
        assert n == 2 * CALLS, f"{n} CDRs of {2 * CALLS}"
        assert regs >= {"101", "102"}
        log = srv.log()
        assert "CDRs not written (database is locked)" in log
        assert "CDRs written again" in log and "Traceback" not in log
    finally:
        srv.stop()
    days = (srv.data_dir / "cdr").glob("*.csv")
    csv_rows = sum(len(p.read_text().splitlines()) - 1 for p in days)
    assert csv_rows == 2 * CALLS  # each once: nothing twice after the retries
