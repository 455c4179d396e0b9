"""CDR storage: a cdr.db from an older minisip opens and gains the new columns."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from minisip.pbx.cdr import CdrRecord, CdrStore

OLD_COLUMNS = ("call_id TEXT, kind TEXT, caller TEXT, dialed TEXT, final TEXT, route TEXT, "
               "setup_time REAL, answer_time REAL, end_time REAL, duration REAL, "
               "status INTEGER, cause TEXT, released_by TEXT")


def test_an_old_cdr_db_gains_the_line_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "cdr.db") as db:
        db.execute(f"CREATE TABLE cdr (id INTEGER PRIMARY KEY, {OLD_COLUMNS})")
        db.execute("INSERT INTO cdr (call_id, kind, caller, dialed, final, route, setup_time,"
                   " end_time, duration, status, cause, released_by) VALUES "
                   "('old', 'O', '100', '101', '101', 'local_user:101', 1, 2, 0, 486, 'busy',"
                   " 'callee')")
    store = CdrStore(tmp_path)
    store.write([CdrRecord(call_id="new", kind="T", caller="100", dialed="9555", final="555",
                           route="external_line:prov", setup_time=3, answer_time=None,
                           end_time=4, duration=0, status=503, cause="service unavailable",
                           released_by="callee", line_out="prov", caller_number="021100",
                           reason="Line prov offline: 403 Forbidden")])
    rows = {r["call_id"]: r for r in store.query(limit=10)}
    assert rows["old"]["line_in"] == "" and rows["old"]["reason"] == ""
    assert rows["old"]["a_packets"] == 0
    assert (rows["new"]["line_out"], rows["new"]["reason"]) == (
        "prov", "Line prov offline: 403 Forbidden")
    assert [r["call_id"] for r in store.query(line="prov")] == ["new"]
    store.close()
    assert CdrStore(tmp_path).query(limit=1)[0]["call_id"] == "new"  # opens again as is
