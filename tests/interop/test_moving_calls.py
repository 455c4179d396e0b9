"""Moving calls against a running server: transfer (REFER, Replaces), park and
retrieve, pick-up, call waiting, *74 join, break-in and overstep.

Phones are pyphones (tests/interop/pyphone.py: scripted SIP + RTP) where a test
listens to the audio afterwards, and sipp where a flow is scripted as a device
would play it. Audio checks: each phone sends its own tone (100: 440 Hz, 101: 880 Hz,
102: 1320 Hz ...) and the test decodes what each one received.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from minisip.media import g711
from minisip.media.recorder import Recorder
from tests.helpers import (
    ServerProcess, free_port_range, make_server, need, run_sipp, sipp_device, start_sipp,
)
from tests.interop.baresip import read_wav, tone_power
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop

TONES = {"100": 440.0, "101": 880.0, "102": 1320.0, "103": 1760.0, "104": 660.0}


def configure(server: ServerProcess, users: dict[str, str], services: str = "") -> None:
    """users.yaml with these users (name -> YAML flow items), services.yaml extended, and
    RTP ports of the server's own (other servers may be testing on this machine too)."""
    lo, hi = free_port_range(16)
    path = server.config_dir / "system.yaml"
    path.write_text(re.sub(r"^rtp_port_min: .*$", f"rtp_port_min: {lo}",
                           re.sub(r"^rtp_port_max: .*$", f"rtp_port_max: {hi}",
                                  path.read_text(), flags=re.M), flags=re.M))
    lines = ["users:"]
    for name, extra in users.items():
        lines.append(f'  "{name}": {{password: "{name}"{", " + extra if extra else ""}}}')
    (server.config_dir / "users.yaml").write_text("\n".join(lines) + "\n")
    if services:
        path = server.config_dir / "services.yaml"
        path.write_text(path.read_text() + services)


@pytest.fixture
def server(tmp_path: Path, phones: dict[str, PyPhone]) -> Iterator[ServerProcess]:
    """(It stops before the phones close: they answer the BYEs of its shutdown, which
    else waits out shutdown_grace.)"""
    need("sipp")
    srv = make_server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def phones() -> Iterator[dict[str, PyPhone]]:
    made: dict[str, PyPhone] = {}
    yield made
    for p in made.values():
        p.close()


def phone(server: ServerProcess, made: dict[str, PyPhone], name: str, user: str = "",
          register: bool = True) -> PyPhone:
    p = PyPhone(server.port, user or name, user or name)
    made[name] = p
    if register:
        assert p.register().status == 200
    return p


def in_thread(fn: Any, *args: Any, **kw: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kw)), daemon=True)
    t.start()
    return t, out


def connect(caller: PyPhone, callee: PyPhone, number: str | None = None) -> None:
    """``caller`` calls ``callee`` (its user, or ``number``), ``callee`` answers."""
    t, out = in_thread(caller.call, number or callee.user)
    callee.answer_incoming()
    t.join(10)
    assert out and out[0].status == 200, out


def tones_heard(talkers: list[PyPhone], seconds: float = 0.8) -> dict[str, dict[float, float]]:
    """Every phone of ``talkers`` sends its tone; the power of each tone in what each one
    received meanwhile (decoded PCMU), by user."""
    start = time.monotonic()
    threads = [in_thread(p.send_audio, seconds, TONES[p.user])[0] for p in talkers]
    for t in threads:
        t.join(seconds + 5)
    time.sleep(0.2)
    out = {}
    for p in talkers:
        pcm = b"".join(g711.ulaw_decode(r.packet.payload) for r in list(p.rtp_log)
                       if r.at >= start and r.packet.payload_type == 0)
        samples = [int.from_bytes(pcm[i:i + 2], "little", signed=True)
                   for i in range(0, len(pcm), 2)]
        out[p.user] = {f: tone_power(samples, 8000, f) for f in TONES.values()}
    return out


def hears(heard: dict[float, float], *users: str) -> bool:
    """True when the loudest tones heard are exactly those of ``users``."""
    wanted = {TONES[u] for u in users}
    strongest = sorted(heard, key=heard.__getitem__, reverse=True)[:len(wanted)]
    quiet = max((v for f, v in heard.items() if f not in wanted), default=0.0)
    return set(strongest) == wanted and all(heard[f] > 20 * max(quiet, 1.0) for f in wanted)


def cdrs(server: ServerProcess, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The O-CDRs, oldest first, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(server.data_dir / "cdr.db") as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(
                "SELECT * FROM cdr WHERE kind = 'O' ORDER BY id")]
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{len(rows)} CDRs, not {count}: {rows}")


def live_calls(server: ServerProcess) -> list[dict[str, Any]]:
    out = server.cli("calls", "--json")
    assert out.returncode == 0, out.stderr
    calls: list[dict[str, Any]] = json.loads(out.stdout)
    return calls


def wait_calls(server: ServerProcess, check: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    calls: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        calls = live_calls(server)
        if check(calls):
            return calls
        time.sleep(0.1)
    raise AssertionError(f"calls never matched: {json.dumps(calls, indent=1)}\n{server.log()}")


def states(server: ServerProcess) -> dict[str, str]:
    out = server.cli("user", "list", "--json")
    return {u["name"]: u.get("state", "") for u in json.loads(out.stdout)}


def notifies(p: PyPhone, since: int = 0) -> list[str]:
    """The sipfrag status lines of the refer NOTIFYs ``p`` received."""
    return [r.body.decode().split("\r\n")[0] for r in p.requests[since:]
            if r.method == "NOTIFY" and "refer" in (r.headers.get("Event") or "")]


def wait_notify(p: PyPhone, status: str, timeout: float = 10.0, since: int = 0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = notifies(p, since)
        if any(status in line for line in seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{p.user}: no NOTIFY {status}: {notifies(p)}")


# -- blind transfer ------------------------------------------------------------------

@pytest.mark.parametrize("transferor", ["callee", "caller"])
def test_blind_transfer_connects_the_transferee_to_the_target(
        server: ServerProcess, phones: dict[str, PyPhone], transferor: str) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    connect(a, b)
    t, s = (b, a) if transferor == "callee" else (a, b)
    assert t.reinvite("sendonly").status == 200  # phones hold the party they transfer
    seen = len(s.requests)
    resp = t.refer("<sip:102@minisip>")
    assert resp.status == 202, resp
    c.answer_incoming()
    assert wait_notify(t, "200 OK")[0] == "SIP/2.0 100 Trying"
    s.wait_request("INVITE", since=seen)  # the transferee's media moves to the relay
    t.wait_request("BYE", timeout=5)  # minisip releases the transferor
    heard = tones_heard([s, c])
    assert hears(heard[s.user], "102") and hears(heard["102"], s.user), heard
    st = states(server)
    assert st[s.user] == "talking" and st["102"] == "talking" and st[t.user] == "online", st
    assert s.bye().status == 200
    rows = cdrs(server, 2)
    first, moved = rows
    assert (first["transferred_by"], first["transferred_to"]) == (t.user, "102"), first
    assert (moved["caller"], moved["dialed"], moved["final"], moved["transferred_by"]) == (
        s.user, "102", "102", t.user), moved
    assert states(server) == {"100": "online", "101": "online", "102": "online"}


def test_a_blind_transfer_nobody_takes_goes_back_to_the_transferor(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    connect(a, b)
    seen = len(b.requests)
    assert b.refer("<sip:102@minisip>").status == 202
    c.reject_incoming(486)
    assert wait_notify(b, "486") == ["SIP/2.0 100 Trying", "SIP/2.0 486 Busy Here"]
    b.wait_request("INVITE", since=seen)  # 101 is re-INVITEd to the transferee's relay
    time.sleep(0.3)
    heard = tones_heard([a, b])
    assert hears(heard["100"], "101") and hears(heard["101"], "100"), heard
    assert b.bye().status == 200
    assert states(server) == {"100": "online", "101": "online", "102": "online"}


def test_a_scripted_transferor_gets_202_and_the_sipfrag_notifies(
        server: ServerProcess, phones: dict[str, PyPhone], tmp_path: Path) -> None:
    """sipp as the caller transfers its callee: REFER, 202, NOTIFY 100 Trying (active),
    NOTIFY 200 OK (terminated), then minisip's BYE (uac_transfer_blind.xml)."""
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    b, c = phone(server, phones, "101"), phone(server, phones, "102")
    sipp = start_sipp("uac_transfer_blind.xml", remote=f"127.0.0.1:{server.port}",
                      users=[("100", "100", "101", "102")], timeout=20, workdir=tmp_path)
    b.answer_incoming()
    c.answer_incoming()
    r = sipp.wait()
    assert r.ok, r.output + server.log()
    heard = tones_heard([b, c])
    assert hears(heard["101"], "102") and hears(heard["102"], "101"), heard
    assert c.bye().status == 200


# -- attended transfer -----------------------------------------------------------------

@pytest.mark.parametrize("refer_in", ["held call", "consultation call"])
def test_attended_transfer_replaces_the_transferor(
        server: ServerProcess, phones: dict[str, PyPhone], refer_in: str) -> None:
    """101 talks with 100 (on one line of its phone), calls 102 on another, then
    transfers: 100 and 102 talk, 101's two dialogs end."""
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b1, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    b2 = phone(server, phones, "101b", "101", register=False)  # the phone's second line
    connect(a, b1)
    connect(b2, c, "102")
    if refer_in == "held call":  # REFER to 100: "call 102, replacing my call with it"
        referrer, replaced, gone = b1, b2, b2
    else:  # REFER to 102: "call 100, replacing my call with it"
        referrer, replaced, gone = b2, b1, b1
    target = "102" if refer_in == "held call" else "100"
    resp = referrer.refer(f"<sip:{target}@minisip?Replaces={quote(replaced.replaces(), safe='')}>")
    assert resp.status == 202, resp
    assert wait_notify(referrer, "200 OK")[0] == "SIP/2.0 100 Trying"
    gone.wait_request("BYE", timeout=5)  # the replaced dialog ends at once
    referrer.wait_request("BYE", timeout=5)  # the REFER's dialog after the NOTIFY
    moved = a if refer_in == "held call" else c
    moved.wait_request("INVITE", timeout=5)  # re-INVITEd to the other call's relay
    time.sleep(0.3)
    heard = tones_heard([a, c])
    assert hears(heard["100"], "102") and hears(heard["102"], "100"), heard
    st = states(server)
    assert (st["100"], st["101"], st["102"]) == ("talking", "online", "talking"), st
    assert a.bye().status == 200
    rows = cdrs(server, 2)
    assert all(r["transferred_by"] == "101" for r in rows), rows
    assert states(server) == {"100": "online", "101": "online", "102": "online"}


def test_a_replaces_naming_a_call_still_ringing_transfers_blind(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b1, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    b2 = phone(server, phones, "101b", "101", register=False)
    connect(a, b1)
    t, out = in_thread(b2.call, "102", timeout=15)
    c.ring_incoming()
    deadline = time.monotonic() + 5
    while not any(r.to_tag for r in b2.provisionals) and time.monotonic() < deadline:
        time.sleep(0.02)
    early = next(r for r in b2.provisionals if r.to_tag)
    replaces = f"{early.call_id};to-tag={early.to_tag};from-tag={early.from_tag}"
    assert b1.refer(f"<sip:102@minisip?Replaces={quote(replaces, safe='')}>").status == 202
    t.join(10)
    assert out and out[0].status == 487  # the consultation call is cancelled ...
    c.answer_incoming()  # ... and 102 rung again for 100
    wait_notify(b1, "200 OK")
    heard = tones_heard([a, c])
    assert hears(heard["100"], "102") and hears(heard["102"], "100"), heard
    assert a.bye().status == 200


def test_replaces_takes_over_an_answered_dialog_of_the_same_user_only(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b1, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    b2 = phone(server, phones, "101b", "101", register=False)
    connect(a, b1)
    assert c.call("101", extra=(("Replaces", b1.replaces()),)).status == 403
    assert b2.call("101", extra=(("Replaces", "nosuchcall;to-tag=1;from-tag=2"),)
                   ).status == 481
    assert b2.call("101", extra=(("Replaces", b1.replaces()),)).status == 200
    b1.wait_request("BYE", timeout=5)
    heard = tones_heard([a, b2])
    assert hears(heard["100"], "101") and hears(heard["101"], "100"), heard
    assert a.bye().status == 200


def test_a_transfer_refused_by_the_dial_plan_leaves_the_call_as_it_was(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": ""})
    server.start()
    a, b = phone(server, phones, "100"), phone(server, phones, "101")
    connect(a, b)
    assert b.refer("<sip:555@minisip>").status == 202
    assert wait_notify(b, "404") == ["SIP/2.0 100 Trying", "SIP/2.0 404 Number not found"]
    heard = tones_heard([a, b])
    assert hears(heard["100"], "101") and hears(heard["101"], "100"), heard
    assert a.bye().status == 200


# -- park and retrieve -------------------------------------------------------------------

def test_park_by_blind_transfer_and_retrieve_from_another_phone(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    connect(a, b)
    assert b.refer("<sip:*70*5@minisip>").status == 202
    wait_notify(b, "200 OK")
    b.wait_request("BYE", timeout=5)
    calls = wait_calls(server, lambda cs: [x.get("parked") for x in cs] == ["5"])
    assert calls[0]["caller"] == "100", calls
    music = a.received_rtp(1.0)
    assert len(music) > 30, "the parked party hears music on hold"
    assert c.call("*71*5").status == 200
    wait_calls(server, lambda cs: len(cs) == 1 and not cs[0].get("parked"))
    heard = tones_heard([a, c])
    assert hears(heard["100"], "102") and hears(heard["102"], "100"), heard
    assert c.bye().status == 200
    rows = cdrs(server, 2)
    assert rows[1]["steps"].startswith("transferred by 101"), rows[1]
    assert "parked in slot 5" in rows[1]["steps"] and "retrieved by 102" in rows[1]["steps"]


def test_a_taken_park_slot_refuses_the_transfer(server: ServerProcess,
                                                 phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    connect(a, b)
    assert b.refer("<sip:*70*5@minisip>").status == 202
    wait_notify(b, "200 OK")
    b.wait_request("BYE", timeout=5)
    seen = len(b.requests)
    connect(c, b)
    assert b.refer("<sip:*70*5@minisip>").status == 202
    assert wait_notify(b, "503", since=seen)[-1] == "SIP/2.0 503 park is not available"
    heard = tones_heard([b, c])  # 102 came back to 101
    assert hears(heard["101"], "102") and hears(heard["102"], "101"), heard
    assert [x.get("parked") for x in live_calls(server)].count("5") == 1


def test_a_transferee_hanging_up_while_the_target_rings_releases_everyone(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "", "102": ""})
    server.start()
    a, b, c = (phone(server, phones, u) for u in ("100", "101", "102"))
    connect(a, b)
    assert b.refer("<sip:102@minisip>").status == 202
    c.ring_incoming()
    a.wait_request("INVITE", timeout=5)
    assert a.bye().status == 200
    c.wait_request("CANCEL", timeout=5)
    assert wait_notify(b, "487")[-1] == "SIP/2.0 487 Request Terminated"
    b.wait_request("BYE", timeout=5)
    wait_calls(server, lambda cs: cs == [])
    assert states(server) == {"100": "online", "101": "online", "102": "online"}


def test_park_by_attended_transfer_says_the_slot_and_rings_back_the_parker(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    """101 calls *70 on its second line (minisip answers and says the slot), transfers
    100 there; nobody retrieves it, so after park_timer it rings 101 again."""
    configure(server, {"100": "", "101": ""})
    path = server.config_dir / "services.yaml"
    path.write_text(path.read_text().replace("first_slot: 1", "first_slot: 3")
                    .replace("park_timer: 60", "park_timer: 3"))
    server.start()
    a, b1 = phone(server, phones, "100"), phone(server, phones, "101")
    b2 = phone(server, phones, "101b", "101", register=False)
    connect(a, b1)
    assert b2.call("*70").status == 200
    prompt = b2.received_rtp(1.5)
    assert len(prompt) > 40, "the parker hears the slot"
    wait_calls(server, lambda cs: [(x["caller"], x.get("parked")) for x in cs] == [
        ("100", None), ("101", "3")] or sorted((x["caller"], x.get("parked") or "")
                                               for x in cs) == [("100", ""), ("101", "3")])
    transferred = time.monotonic()
    assert b1.refer(f"<sip:*70@minisip?Replaces={quote(b2.replaces(), safe='')}>"
                    ).status == 202
    wait_notify(b1, "200 OK")
    b2.wait_request("BYE", timeout=5)
    b1.wait_request("BYE", timeout=5)
    parked = wait_calls(server, lambda cs: [(x["caller"], x.get("parked")) for x in cs]
                        == [("100", "3")])
    assert parked
    b1.answer_incoming(timeout=10)  # the ring-back, park_timer after 100 was parked
    assert time.monotonic() - transferred > 2.8
    time.sleep(0.3)
    heard = tones_heard([a, b1])
    assert hears(heard["100"], "101") and hears(heard["101"], "100"), heard
    assert a.bye().status == 200
    rows = cdrs(server, 2)
    assert "park timer: ringing back 101" in rows[-1]["steps"], rows[-1]


# -- pick-up -----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["directed", "group", "replaces"])
def test_pickup_answers_a_call_ringing_another_phone(
        server: ServerProcess, phones: dict[str, PyPhone], tmp_path: Path, how: str) -> None:
    configure(server, {"100": "", "101": "pickup_group_id: 7", "102": "pickup_group_id: 7"})
    server.start()
    device = sipp_device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    a, c = phone(server, phones, "100"), phone(server, phones, "102")
    t, out = in_thread(a.call, "101", timeout=20)
    wait_calls(server, lambda cs: len(cs) == 1 and cs[0]["ringing"] == ["101"])
    if how == "directed":
        resp = c.call("*40*101")
    elif how == "group":
        resp = c.call("*50")
    else:  # what a busy lamp key sends: the caller's dialog, as its dialog-info names it
        early = next(r for r in a.provisionals if r.to_tag)
        replaces = f"{early.call_id};to-tag={early.to_tag};from-tag={early.from_tag}"
        resp = c.call("101", extra=(("Replaces", replaces),))
    assert resp.status == 200, resp
    t.join(10)
    assert out and out[0].status == 200
    r = device.wait()
    assert r.ok, r.output  # the ringing device got CANCEL
    heard = tones_heard([a, c])
    assert hears(heard["100"], "102") and hears(heard["102"], "100"), heard
    st = states(server)
    assert (st["100"], st["101"], st["102"]) == ("talking", "online", "talking"), st
    assert a.bye().status == 200
    rows = cdrs(server, 1)
    assert rows[-1]["final"] == "102" and "picked up by 102" in rows[-1]["steps"], rows


def test_pickup_with_nothing_ringing_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    configure(server, {"100": "", "101": ""})
    server.start()
    r = run_sipp("uac_expect_404.xml", server.port, users=[("100", "100", "*40*101")],
                 timeout=20, workdir=tmp_path)
    assert r.ok, r.output + server.log()


# -- call waiting --------------------------------------------------------------------------

@pytest.mark.parametrize("waiting", [True, False])
def test_call_waiting_offers_a_second_call_to_a_talking_user(
        server: ServerProcess, phones: dict[str, PyPhone], tmp_path: Path,
        waiting: bool) -> None:
    configure(server, {"100": f"call_waiting: {str(waiting).lower()}", "101": "", "102": ""})
    server.start()
    a, b = phone(server, phones, "100"), phone(server, phones, "101")
    connect(b, a)
    if waiting:  # 100's phone sees the second call while it talks; 102 gives up
        caller = start_sipp("uac_cancel.xml", remote=f"127.0.0.1:{server.port}",
                            users=[("102", "102", "100")], timeout=20, workdir=tmp_path)
        invite = a.ring_incoming(timeout=10)
        assert invite.from_addr.uri.user == "102"
        r = caller.wait()
    else:
        r = run_sipp("uac_expect_486.xml", server.port, users=[("102", "102", "100")],
                     timeout=20, workdir=tmp_path)
        assert a._invites.empty()
    assert r.ok, r.output + server.log()
    heard = tones_heard([a, b])
    assert hears(heard["100"], "101"), heard
    assert b.bye().status == 200


# -- one-number join -------------------------------------------------------------------

def test_star_74_moves_the_call_to_another_device_of_the_user(
        server: ServerProcess, phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": ""})
    server.start()
    desk, b = phone(server, phones, "100"), phone(server, phones, "101")
    connect(b, desk)
    mobile = phone(server, phones, "100m", "100")
    assert mobile.call("*74").status == 200
    desk.wait_request("BYE", timeout=5)
    heard = tones_heard([mobile, b])
    assert hears(heard["100"], "101") and hears(heard["101"], "100"), heard
    st = states(server)
    assert (st["100"], st["101"]) == ("talking", "talking"), st
    assert mobile.bye().status == 200
    assert "joined by 100" in cdrs(server, 1)[-1]["steps"]
    assert states(server) == {"100": "online", "101": "online"}


# -- break-in and overstep ----------------------------------------------------------------

def record(p: PyPhone, since: float, path: Path) -> dict[float, float]:
    """What ``p`` received since ``since``, written to a WAV (the proof), and the power of
    each tone in that recording."""
    with Recorder(path) as rec:
        for r in list(p.rtp_log):
            if r.at >= since:
                rec.feed(r.packet)
    samples, rate = read_wav(path)
    return {f: tone_power(samples, rate, f) for f in TONES.values()}


@pytest.mark.parametrize("how", ["*75*101", "101"])
def test_break_in_mixes_three_parties(server: ServerProcess, phones: dict[str, PyPhone],
                                      tmp_path: Path, how: str) -> None:
    configure(server, {"100": "", "101": "", "103": "operator_break_in: true"})
    server.start()
    a, b, op = (phone(server, phones, u) for u in ("100", "101", "103"))
    connect(a, b)
    assert op.call(how).status == 200
    time.sleep(0.5)
    start = time.monotonic()
    threads = [in_thread(p.send_audio, 1.0, TONES[p.user])[0] for p in (a, b, op)]
    for t in threads:
        t.join(10)
    time.sleep(0.2)
    heard = {p.user: record(p, start, tmp_path / f"heard-{p.user}.wav") for p in (a, b, op)}
    assert hears(heard["100"], "101", "103"), heard
    assert hears(heard["101"], "100", "103"), heard
    assert hears(heard["103"], "100", "101"), heard
    assert op.bye().status == 200  # the operator leaves: the two talk on
    time.sleep(0.3)
    again = tones_heard([a, b])
    assert hears(again["100"], "101") and hears(again["101"], "100"), again
    assert a.bye().status == 200
    assert "broken into by 103" in cdrs(server, 1)[-1]["steps"]


def test_overstep_protection_refuses_break_in(server: ServerProcess,
                                              phones: dict[str, PyPhone]) -> None:
    configure(server, {"100": "", "101": "operator_overstep: true",
                       "103": "operator_break_in: true"})
    server.start()
    a, b, op = (phone(server, phones, u) for u in ("100", "101", "103"))
    connect(a, b)
    assert op.call("*75*101").status == 403
    assert op.call("*75*100").status == 403  # 100's call is with a protected user
    assert op.call("101").status == 486  # calling a busy protected user: busy
    heard = tones_heard([a, b])
    assert hears(heard["100"], "101") and hears(heard["101"], "100"), heard
    assert a.bye().status == 200
