"""CDR storage: a cdr.db from an older minisip opens and gains the new columns; the
day's CSV of an older minisip is moved aside."""
from __future__ import annotations

import csv
import sqlite3
import time
from dataclasses import fields
from pathlib import Path

from minisip.pbx.cdr import CdrRecord, CdrStore

OLD_COLUMNS = ("call_id TEXT, kind TEXT, caller TEXT, dialed TEXT, final TEXT, route TEXT, "
               "setup_time REAL, answer_time REAL, end_time REAL, duration REAL, "
               "status INTEGER, cause TEXT, released_by TEXT")
OLD_COLUMNS_CSV = [c.split()[0] for c in OLD_COLUMNS.split(", ")]


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


def _record(call_id: str, end_time: float) -> CdrRecord:
    return CdrRecord(call_id=call_id, kind="O", caller="100", dialed="101", final="101",
                     route="local_user:101", setup_time=end_time - 1, answer_time=None,
                     end_time=end_time, duration=0, status=486, cause="busy",
                     released_by="callee")


def test_the_days_csv_of_an_older_minisip_is_moved_aside_so_columns_match(
        tmp_path: Path) -> None:
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    (tmp_path / "cdr").mkdir()
    old = tmp_path / "cdr" / f"{day}.csv"
    old.write_text(",".join(OLD_COLUMNS_CSV) + "\nold,O,100,101,101,local_user:101,1,,2,0,486,"
                   "busy,callee\n")
    store = CdrStore(tmp_path)
    store.write([_record("new", now)])
    store.write([_record("newer", now)])
    store.close()
    with open(old, newline="") as f:
        rows = list(csv.reader(f))
    columns = [f.name for f in fields(CdrRecord)]
    assert rows[0] == columns and [r[0] for r in rows[1:]] == ["new", "newer"]
    assert all(len(r) == len(columns) for r in rows)
    aside = tmp_path / "cdr" / f"{day}.old.csv"
    assert aside.read_text().splitlines()[1].startswith("old,")
    store = CdrStore(tmp_path)
    store.write([_record("again", now)])  # the same columns: appended, not moved
    store.close()
    assert not (tmp_path / "cdr" / f"{day}.old2.csv").exists()
    assert old.read_text().splitlines()[-1].startswith("again,")
