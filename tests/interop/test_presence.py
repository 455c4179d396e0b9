"""Presence, busy lamps and messages on the wire: sipp watchers, scripted phones.

sipp is the watcher (its scenarios check every NOTIFY's state, in order); the
parties of the watched calls are ``PyPhone``s, so the test decides when each
change happens. Changes are spaced a few tenths of a second apart: NOTIFYs of
changes closer than their round trip are merged by design (the latest state
wins), and these tests want to see each one.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from minisip.control.client import subscribe
from tests.helpers import ServerProcess, make_server, need, run_sipp, start_sipp
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop

TRACE = ("-trace_err", "-trace_msg")
GAP = 0.4  #: seconds between the changes of a watched user


def logs(tmp_path: Path, scenario: str) -> str:
    stem = scenario.removesuffix(".xml")
    return "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-5000:]
                   for p in sorted(tmp_path.glob(f"{stem}_*.log")))


def users(server: ServerProcess) -> dict[str, dict[str, Any]]:
    """``minisip presence --json``, by user."""
    out = server.cli("presence", "--json")
    assert out.returncode == 0, out.stderr + server.log()
    return {u["user"]: u for u in json.loads(out.stdout)}


def stats(server: ServerProcess) -> dict[str, Any]:
    """The events service's counters in ``minisip status``."""
    out = server.cli("status", "--json")
    assert out.returncode == 0, out.stderr + server.log()
    result: dict[str, Any] = json.loads(out.stdout)["events"]
    return result


def wait_watched(server: ServerProcess, user: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        watched = users(server)
        if len(watched[user]["watched_by"]) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} not watched {count} times: {watched[user]}\n"
                                 + server.log())
        time.sleep(0.1)


def set_config(server: ServerProcess, name: str, old: str, new: str) -> None:
    path = server.config_dir / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[ServerProcess]:
    need("sipp")
    srv = make_server(tmp_path)
    # 103 (group 7) may watch only group 7; 104 (group 7) is an operator and sees everyone.
    set_config(srv, "users.yaml", '  "102":\n    password: "102"\n',
               '  "102":\n    password: "102"\n'
               '  "103":\n    password: "103"\n    presence_group: 7\n'
               '  "104":\n    password: "104"\n    presence_group: 7\n'
               '    subscribe_all_presence: true\n')
    srv.start()
    yield srv
    srv.stop()


def test_watchers_see_each_change_of_101_in_order(pbx: ServerProcess, tmp_path: Path) -> None:
    with PyPhone(pbx.port, "100", "100") as p100, PyPhone(pbx.port, "101", "101") as p101:
        assert p101.register().status == 200
        remote = f"127.0.0.1:{pbx.port}"
        watchers = {sf: start_sipp(sf, remote=remote, users=[("102", "102", "101")],
                                   timeout=40, workdir=tmp_path, extra=TRACE)
                    for sf in ("watch_dialog.xml", "watch_presence.xml")}
        wait_watched(pbx, "101", 2)
        table = pbx.cli("presence").stdout
        assert re.search(r"^101 +idle +open +Available +102 \(dialog/presence\)", table, re.M)
        assert re.search(r"^102 +offline +closed +Offline +101 \(dialog/presence\)", table,
                         re.M), table
        answering = threading.Thread(target=p101.answer_incoming, kwargs={"ring": GAP})
        answering.start()
        assert p100.call("101").status == 200  # rings (early), then talks (confirmed)
        answering.join(10)
        time.sleep(GAP)
        assert p100.bye().status == 200  # terminated; presence back to open
        time.sleep(GAP)
        assert p101.register(expires=0).status == 200  # presence closed
        for sf, sipp in watchers.items():
            r = sipp.wait()
            assert r.ok, f"{sf}: {r.output[-3000:]}" + logs(tmp_path, sf) + pbx.log()
    assert stats(pbx)["subscriptions"] == 0


def test_groups_refuse_with_403_and_the_operator_watches_everyone(pbx: ServerProcess,
                                                                 tmp_path: Path) -> None:
    refused = run_sipp("subscribe_expect_403.xml", pbx.port, users=[("103", "103", "101")],
                       timeout=15, workdir=tmp_path, extra=TRACE)
    assert refused.ok, refused.output + logs(tmp_path, "subscribe_expect_403.xml")
    same_group = run_sipp("subscribe_once.xml", pbx.port, users=[("103", "103", "104")],
                          timeout=15, workdir=tmp_path, extra=TRACE)
    assert same_group.ok, same_group.output + logs(tmp_path, "subscribe_once.xml")
    everyone = [("104", "104", u) for u in ("100", "101", "102", "103")]
    operator = run_sipp("subscribe_once.xml", pbx.port, users=everyone, calls=len(everyone),
                        timeout=20, workdir=tmp_path, extra=TRACE)
    assert operator.ok and operator.successful == 4, operator.output + logs(
        tmp_path, "subscribe_once.xml")


def test_message_reaches_every_device_or_waits_for_the_next_registration(
        pbx: ServerProcess) -> None:
    with PyPhone(pbx.port, "100", "100") as p100, PyPhone(pbx.port, "101", "101") as a, \
            PyPhone(pbx.port, "101", "101") as b, PyPhone(pbx.port, "102", "102") as p102:
        assert a.register().status == 200 and b.register().status == 200
        assert p100.message("101", "hello 101").status == 200
        for device in (a, b):
            (m,) = device.wait_requests("MESSAGE", 1)
            assert m.body == b"hello 101"
            assert re.match(r"<sip:100@minisip>;tag=", m.headers.get("From") or "")
        assert p100.message("102", "first").status == 202  # 102 has no device online
        assert p100.message("102", "second").status == 202
        assert p100.message("199", "nobody").status == 404
        assert p102.register().status == 200
        got = p102.wait_requests("MESSAGE", 2)
        assert [m.body for m in got] == [b"first", b"second"]
        assert all(m.headers.get("Date") for m in got)
        deadline = time.monotonic() + 5  # the phone's 200 to the second one may still travel
        while (counts := stats(pbx))["messages_waiting"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (counts["messages_stored"], counts["messages_delivered_later"],
                counts["messages_waiting"]) == (2, 2, 0)


def test_subscriptions_survive_a_restart(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    srv.start()
    try:
        with PyPhone(srv.port, "101", "101") as p101, PyPhone(srv.port, "102", "102") as w:
            assert p101.register().status == 200
            resp = w.subscribe("101", "presence")
            assert resp.status == 200
            (first,) = w.wait_requests("NOTIFY", 1)
            srv.stop()
            srv.start()
            # After the restart the server tells the state again, in the same dialog.
            second = w.wait_requests("NOTIFY", 2)[1]
            assert second.call_id == first.call_id and second.cseq[0] > first.cseq[0]
            assert p101.register(expires=0).status == 200
            third = w.wait_requests("NOTIFY", 3)[2]
            assert b"<basic>closed</basic>" in third.body
            assert w.resubscribe(first.call_id, "presence", 0).status == 200
    finally:
        srv.stop()


def test_hold_shows_on_the_lamp_and_in_presence(pbx: ServerProcess) -> None:
    with PyPhone(pbx.port, "100", "100") as p100, PyPhone(pbx.port, "101", "101") as p101, \
            PyPhone(pbx.port, "102", "102") as lamp:
        assert p101.register().status == 200
        sub = lamp.subscribe("101", "dialog")
        answering = threading.Thread(target=p101.answer_incoming)
        answering.start()
        assert p100.call("101").status == 200
        answering.join(10)
        lamp.wait_for("NOTIFY", lambda r: b"confirmed" in r.body, call_id=sub.call_id)
        assert p100.reinvite("sendonly").status == 200  # 100 puts 101 on hold
        held = lamp.wait_for("NOTIFY", lambda r: b"+sip.rendering" in r.body,
                             call_id=sub.call_id)
        # 101's dialog: the other side (100) put it on hold, so the remote target renders not
        assert re.search(rb"<remote>.*pname=\"\+sip.rendering\" pval=\"no\"", held.body), \
            held.body
        me = users(pbx)["101"]
        assert (me["state"], me["note"]) == ("on hold", "On hold")
        n = len(lamp.requests)
        assert p100.reinvite("sendrecv").status == 200
        resumed = lamp.wait_for("NOTIFY", lambda r: lamp.requests.index(r) >= n,
                                call_id=sub.call_id)
        assert b"confirmed" in resumed.body and b"+sip.rendering" not in resumed.body
        assert p100.bye().status == 200


async def test_the_event_stream_carries_states_and_subscriptions(pbx: ServerProcess) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    with trio.fail_after(20):
        async with subscribe(pbx.data_dir / "control.sock", ["presence"],
                             {"user": "101"}) as events:
            def act() -> None:
                with PyPhone(pbx.port, "101", "101") as p101, \
                        PyPhone(pbx.port, "102", "102") as p102:
                    assert p101.register().status == 200
                    assert p102.subscribe("101", "presence").status == 200
                    p102.wait_requests("NOTIFY", 1)
            await trio.to_thread.run_sync(act)
            async for frame in events:
                seen.append((frame["event"], frame["data"]))
                if frame["event"] == "subscribed":
                    break
    assert ("user_presence", {"user": "101", "state": "idle", "presence": "open",
                              "note": "Available"}) in seen
    assert seen[-1][1]["watcher"] == "102" and seen[-1][1]["event"] == "presence"


def test_a_phone_watches_its_own_mailbox_only(pbx: ServerProcess) -> None:
    with PyPhone(pbx.port, "101", "101") as p101:
        mine = p101.subscribe("101", "message-summary",
                              accept="application/simple-message-summary")
        assert mine.status == 200
        (n,) = p101.wait_requests("NOTIFY", 1, call_id=mine.call_id)
        assert n.headers.get("Content-Type") == "application/simple-message-summary"
        assert n.body.startswith(b"Messages-Waiting: no\r\nMessage-Account: sip:101@")
        assert p101.subscribe("102", "message-summary").status == 403
