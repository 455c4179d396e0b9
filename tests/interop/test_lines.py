"""External lines and trunks end to end: a second minisip process is the provider.

``pbx`` is the minisip under test; ``provider`` is another minisip whose user 2001
is the account of the pbx's line ``prov``. Phones are pyphones (scripted SIP+RTP
user agents) registered to either server; sipp plays a provider that is down and
an FXO gateway (a type 1 line).
"""
from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from minisip.sip.message import Request, Response
from tests.helpers import ServerProcess, free_port, make_server, need, run_sipp, start_sipp
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop

T = TypeVar("T")
ACCOUNT, SECRET = "2001", "pw2001"


def until(fn: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """Poll ``fn`` until it returns something true; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or fn}")
        time.sleep(0.1)


def edit(server: ServerProcess, name: str, old: str, new: str) -> None:
    path = server.config_dir / name
    text, n = re.subn(old, new, path.read_text(), count=1, flags=re.MULTILINE)
    assert n == 1, f"{old!r} not in {path}"
    path.write_text(text)


def write(server: ServerProcess, name: str, text: str) -> None:
    """Replace a config file atomically (the running server's watcher sees one change)."""
    path = server.config_dir / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def line_yaml(**lines: dict[str, Any]) -> str:
    out = ["lines:"]
    for name, keys in lines.items():
        out.append(f"  {name}:")
        for k, v in keys.items():
            if isinstance(v, dict):
                out.append(f"    {k}:")
                out += [f"      {k2}: {json.dumps(v2)}" for k2, v2 in v.items()]
            else:
                out.append(f"    {k}: {json.dumps(v)}")
    return "\n".join(out) + "\n"


def prov_line(provider: ServerProcess, **extra: Any) -> dict[str, Any]:
    return {"account": ACCOUNT, "password": SECRET, "server": "127.0.0.1",
            "port": provider.port, **extra}


def cli_json(server: ServerProcess, *args: str) -> Any:
    out = server.cli(*args, "--json")
    assert out.returncode == 0, out.stderr + server.log()
    return json.loads(out.stdout)


def line_state(server: ServerProcess, name: str) -> dict[str, Any]:
    return cli_json(server, "line", "show", name)


def cdrs(server: ServerProcess, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    def rows() -> list[dict[str, Any]]:
        with sqlite3.connect(server.data_dir / "cdr.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM cdr ORDER BY id")]
    until(lambda: len(rows()) >= count, timeout, f"{count} CDRs")
    return rows()


@dataclass
class Pair:
    pbx: ServerProcess
    provider: ServerProcess
    pool: ThreadPoolExecutor

    def background(self, fn: Callable[..., T], *args: Any, **kw: Any) -> Future[T]:
        return self.pool.submit(fn, *args, **kw)


def make_pair(tmp_path: Path, lines: str | None = None) -> tuple[ServerProcess, ServerProcess]:
    provider = make_server(tmp_path / "provider")
    pbx = make_server(tmp_path / "pbx")
    with open(provider.config_dir / "users.yaml", "a") as f:
        # the pbx behind this account takes several calls at once (not busy while talking)
        f.write(f'  "{ACCOUNT}":\n    password: "{SECRET}"\n    call_waiting: true\n')
    # The provider grants 4 s registrations: the pbx refreshes every 2 s.
    edit(provider, "system.yaml", r"^  min_expires: 60", "  min_expires: 1")
    edit(provider, "system.yaml", r"^  max_expires: 3600", "  max_expires: 4")
    edit(provider, "system.yaml", r"^  default_expires: 3600", "  default_expires: 4")
    edit(pbx, "system.yaml", r"^  t1: 0.5", "  t1: 0.2")  # faster timeouts
    write(pbx, "lines.yaml", lines if lines is not None else line_yaml(
        prov=prov_line(provider, incoming={"destination_number": "101"})))
    return pbx, provider


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    need("sipp")
    pbx, provider = make_pair(tmp_path)
    provider.start()
    pbx.start()
    with ThreadPoolExecutor(4) as pool:
        try:
            yield Pair(pbx, provider, pool)
        finally:
            pbx.stop()
            provider.stop()


def online(server: ServerProcess, name: str, timeout: float = 10.0) -> dict[str, Any]:
    return until(lambda: (s := line_state(server, name)) and s["state"] == "online" and s,
                 timeout, f"line {name} online ({server.log()[-1500:]})")


def provider_bindings(provider: ServerProcess) -> list[dict[str, Any]]:
    return cli_json(provider, "registrations", "--user", ACCOUNT)


# -- registration ------------------------------------------------------------------------

def test_line_registers_refreshes_survives_a_provider_restart_and_follows_edits(
        pair: Pair) -> None:
    pbx, provider = pair.pbx, pair.provider
    st = online(pbx, "prov")
    assert st["reason"].startswith("registered for 4 s"), st
    contact = until(lambda: provider_bindings(provider), what="binding at the provider")
    assert contact[0]["contact"].startswith(f"sip:{ACCOUNT}@127.0.0.1:{pbx.port}"), contact
    # Refreshed before expiry (4 s granted: a refresh every 2 s), on the same binding.
    until(lambda: line_state(pbx, "prov")["registrations"] >= 3, 10, "two refreshes")
    assert len(provider_bindings(provider)) == 1
    status = cli_json(pbx, "status")
    assert status["lines"]["online"] == 1 and status["lines"]["configured"] == 1, status

    # The provider restarts and has lost every registration: the next refresh restores it.
    provider.stop()
    for f in provider.data_dir.glob("registrations.db*"):
        f.unlink()
    provider.start()
    until(lambda: provider_bindings(provider), 10, "re-registration after the restart")

    # A wrong password (edited live): offline, with the reason.
    assert pbx.cli("line", "set", "prov", "password=wrong").returncode == 0
    st = until(lambda: (s := line_state(pbx, "prov"))["state"] == "offline" and s, 10,
               "offline with a wrong password")
    assert "401" in st["reason"] and "wrong credentials" in st["reason"], st
    calls = cli_json(pbx, "line", "list")
    assert calls[0]["state"] == "offline", calls

    # The right password again: registers at once; the line removed: unregisters.
    assert pbx.cli("line", "set", "prov", f"password={SECRET}").returncode == 0
    online(pbx, "prov")
    assert pbx.cli("line", "remove", "prov").returncode == 0
    until(lambda: not provider_bindings(provider), 10, "unregistered at the provider")


# -- calls out and in ------------------------------------------------------------------------

def test_100_dials_out_through_the_line_and_the_provider_calls_in(pair: Pair) -> None:
    pbx, provider = pair.pbx, pair.provider
    online(pbx, "prov")
    with PyPhone(provider.port, "102", "102") as far, \
            PyPhone(pbx.port, "100", "100") as alice, PyPhone(pbx.port, "101", "101") as bob:
        assert far.register().status == 200
        assert bob.register().status == 200
        # Out: 100 dials 9 + 102; the provider challenges the line (407), rings its 102.
        answered = pair.background(far.answer_incoming)
        resp = alice.call("9102")
        assert resp.status == 200, (resp, pbx.log())
        invite = answered.result(10)
        assert invite.from_addr.uri.user == ACCOUNT  # the provider's own B-leg: from 2001
        alice.send_audio(0.3)
        assert far.received_rtp(0.5) or far.rtp_log, "no audio reached the far end"
        assert alice.bye().status == 200
        rows = cdrs(pbx, 2)
        out = [r for r in rows if r["kind"] == "T"][-1]
        assert (out["line_out"], out["final"], out["status"]) == ("prov", "102", 200), rows
        assert [r for r in rows if r["kind"] == "O"][-1]["dialed"] == "9102"
        far_rows = cdrs(provider, 1)
        assert (far_rows[0]["caller"], far_rows[0]["dialed"]) == (ACCOUNT, "102"), far_rows

        # In: the provider's user 102 calls 2001, the provider sends it to the line,
        # whose destination_number is 101: 101 rings and talks.
        answered = pair.background(bob.answer_incoming)
        resp = far.call(ACCOUNT)
        assert resp.status == 200, (resp, pbx.log(), provider.log())
        invite = answered.result(10)
        assert invite.from_addr.uri.user == "102"  # the outside caller's number
        far.send_audio(0.3)
        bob.send_audio(0.3)
        assert bob.rtp_log and far.rtp_log, "audio did not flow both ways"
        assert far.bye().status == 200
        rows = cdrs(pbx, 4)
        o = [r for r in rows if r["kind"] == "O"][-1]
        assert (o["line_in"], o["caller"], o["final"], o["status"]) == (
            "prov", "102", "101", 200), rows

        # Refused before any callee: a CDR all the same.
        assert alice.call("777").status == 404
        o = [r for r in cdrs(pbx, 5) if r["kind"] == "O"][-1]
        assert (o["dialed"], o["status"], o["reason"]) == ("777", 404, "Number not found"), o


def test_a_failing_first_line_chains_to_the_next_and_a_routing_group_too(
        tmp_path: Path) -> None:
    need("sipp")
    down = free_port((socket.SOCK_DGRAM,))
    pbx, provider = make_pair(tmp_path)
    dead = {"account": "x", "server": "127.0.0.1", "port": down, "do_not_register": True}
    write(pbx, "lines.yaml", line_yaml(down=dead | {"chain_to_next_line": "prov"},
                                       down2=dead,
                                       prov=prov_line(provider)))
    write(pbx, "trunks.yaml", "routing_groups:\n  out:\n    members: [down2, prov]\n")
    write(pbx, "dialplan.yaml", "analyze_called:\n  \"8\":\n    route: routing_group\n"
                                "    target: out\n    transition: 1\ntransitions:\n  1:\n"
                                "    type: delete\n    start: 0\n    length: 1\n")
    provider.start()
    pbx.start()
    uas = start_sipp("uas_unavailable.xml", port=down, calls=2, timeout=20, workdir=tmp_path)
    try:
        online(pbx, "prov")
        with PyPhone(provider.port, "102", "102") as far, PyPhone(pbx.port, "100", "100") as me:
            far.register()
            with ThreadPoolExecutor(1) as pool:
                for number in ("9102", "8102"):  # the chain, then the routing group
                    answered = pool.submit(far.answer_incoming)
                    resp = me.call(number)
                    assert resp.status == 200, (resp, pbx.log())
                    answered.result(10)
                    me.bye()
        assert uas.wait().ok
        t = [(r["line_out"], r["status"]) for r in cdrs(pbx, 6) if r["kind"] == "T"]
        assert t == [("down", 503), ("prov", 200), ("down2", 503), ("prov", 200)], t
    finally:
        pbx.stop()
        provider.stop()


def test_line_limits_refuse_with_a_clear_reason(tmp_path: Path) -> None:
    need("sipp")
    pbx, provider = make_pair(tmp_path, "lines: {}\n")
    write(pbx, "lines.yaml", line_yaml(prov=prov_line(provider, max_outgoing_calls=1)))
    provider.start()
    pbx.start()
    try:
        online(pbx, "prov")
        with PyPhone(provider.port, "102", "102") as far, \
                PyPhone(pbx.port, "100", "100") as a, PyPhone(pbx.port, "101", "101") as b, \
                ThreadPoolExecutor(1) as pool:
            far.register()
            answered = pool.submit(far.answer_incoming)
            assert a.call("9102").status == 200
            answered.result(10)
            assert cli_json(pbx, "line", "show", "prov")["outgoing"] == 1
            resp = b.call("9102")  # the one outgoing call the line takes is up
            assert (resp.status, resp.reason) == (
                403, "Line prov: 1 outgoing calls (max_outgoing_calls)"), resp
            a.bye()
        until(lambda: cli_json(pbx, "line", "show", "prov")["outgoing"] == 0, 5, "slot back")
        t = [r for r in cdrs(pbx, 4) if r["kind"] == "T" and r["status"] == 403]
        assert t and t[0]["line_out"] == "prov" and "max_outgoing_calls" in t[0]["reason"], t
    finally:
        pbx.stop()
        provider.stop()


# -- a type 1 line: a gateway registers to us --------------------------------------------

def test_gateway_registers_with_the_line_account_and_calls_in_and_out(
        tmp_path: Path) -> None:
    need("sipp")
    pbx = make_server(tmp_path / "pbx")
    write(pbx, "lines.yaml", line_yaml(fxo={"type": 1, "account": "gw1", "password": "gwpw",
                                             "incoming": {"destination_number": "101"}}))
    pbx.start()
    gw = free_port((socket.SOCK_DGRAM,))
    try:
        assert line_state(pbx, "fxo")["state"] == "offline"
        reg = start_sipp("register_contact.xml", remote=f"127.0.0.1:{pbx.port}", port=gw,
                         users=[("gw1", "gwpw")], extra=("-key", "contact_port", str(gw)),
                         workdir=tmp_path).wait()
        assert reg.ok, reg.output + pbx.log()
        st = online(pbx, "fxo")
        assert st["reason"] == f"gateway registered from 127.0.0.1:{gw}", st
        assert "gw1" not in [u["name"] for u in cli_json(pbx, "user", "list")]
        with PyPhone(pbx.port, "101", "101") as bob, PyPhone(pbx.port, "100", "100") as alice, \
                ThreadPoolExecutor(1) as pool:
            bob.register()
            # In: the gateway calls from the address it registered from; not challenged.
            answered = pool.submit(bob.answer_incoming)
            call = start_sipp("gateway_call.xml", remote=f"127.0.0.1:{pbx.port}", port=gw,
                              users=[("0211234", "", "555")], workdir=tmp_path, timeout=15)
            invite = answered.result(10)
            assert invite.from_addr.uri.user == "0211234"
            time.sleep(0.3)
            bob.bye()
            r = call.wait()
            assert r.ok, r.output + pbx.log()
            # Out: 100 dials 9 + a number; the gateway's Contact gets it.
            uas = start_sipp("uas_answer_then_bye.xml", port=gw, workdir=tmp_path, timeout=15)
            time.sleep(0.3)
            resp = alice.call("90551234")
            assert resp.status == 200, (resp, pbx.log())
            alice.bye()
            r = uas.wait()
            assert r.ok, r.output
        rows = cdrs(pbx, 4)
        assert {(r["kind"], r["line_in"], r["line_out"]) for r in rows} >= {
            ("O", "fxo", ""), ("T", "", "fxo")}, rows
    finally:
        pbx.stop()


# -- a SIP trunk: trusted by address and port -----------------------------------------------

def test_trunk_calls_from_an_untrusted_port_get_403_and_from_the_trunk_connect(
        tmp_path: Path) -> None:
    need("sipp")
    pbx = make_server(tmp_path / "pbx")
    with PyPhone(0, "carrier", "") as carrier, PyPhone(0, "101", "101") as bob:
        carrier.server = bob.server = ("127.0.0.1", pbx.port)
        write(pbx, "trunks.yaml", f"trunks:\n  carrier:\n    address: 127.0.0.1\n"
                                  f"    port: {carrier.sip_port}\n"
                                  f"    incoming:\n      destination_number: \"101\"\n")
        pbx.start()
        try:
            r = run_sipp("trunk_call_403.xml", pbx.port, users=[("0211234", "", "101")],
                         workdir=tmp_path)
            assert r.ok, r.output + pbx.log()
            bob.register()
            with ThreadPoolExecutor(1) as pool:
                answered = pool.submit(bob.answer_incoming)
                resp = carrier.call("5550101")
                assert resp.status == 200, (resp, pbx.log())
                assert answered.result(10).from_addr.uri.user == "carrier"
                carrier.bye()
            o = [r for r in cdrs(pbx, 2) if r["kind"] == "O"][-1]
            assert (o["line_in"], o["dialed"], o["final"]) == ("carrier", "5550101", "101"), o
        finally:
            pbx.stop()


# -- what each key of a line and a trunk puts on the wire ------------------------------------

DIALPLAN = """\
analyze_caller:
  "100":
    transition: 3
analyze_called:
  "8":
    route: sip_trunk
    target: carrier
    transition: 2
transitions:
  1:
    type: replace
    start: 0
    length: 1
    string: "0086"
  2:
    type: delete
    start: 0
    length: 1
  3:
    type: insert
    start: 0
    length: 0
    string: "021"
refine_called:
  - outgoing_group_id: 1
    prefix: "0"
    transition: 1
refine_caller: []
"""


def test_line_and_trunk_keys_on_the_wire(tmp_path: Path) -> None:
    """A pyphone plays the provider: the INVITEs it gets show each key's effect."""
    pbx = make_server(tmp_path / "pbx")
    with PyPhone(0, "far", "") as far, PyPhone(0, "100", "100") as alice, \
            ThreadPoolExecutor(1) as pool:
        alice.server = ("127.0.0.1", pbx.port)
        write(pbx, "lines.yaml", line_yaml(wire={
            "account": "acc", "server": "127.0.0.1", "port": far.sip_port,
            "do_not_register": True, "request_uri_parameter": "user=phone",
            "original_caller_as_display_name": True, "disable_100rel": True,
            "outgoing_group_id": 1, "max_duration": 1}))
        write(pbx, "trunks.yaml", f"trunks:\n  carrier:\n    address: 127.0.0.1\n"
                                  f"    port: {far.sip_port}\n    tel_uri: true\n"
                                  f"    unified_caller_number: \"8008\"\n"
                                  f"    outgoing_group_id: 2\n    disable_100rel: false\n")
        write(pbx, "dialplan.yaml", DIALPLAN)
        pbx.start()
        try:
            online(pbx, "wire")
            answered = pool.submit(far.answer_incoming)
            assert alice.call("905551234").status == 200, pbx.log()
            inv = answered.result(10)
            # refine_called of group 1: 0 -> 0086; request_uri_parameter appended
            assert inv.uri == f"sip:00865551234@127.0.0.1:{far.sip_port};user=phone", inv.uri
            # From is the account; the caller number (analyze_caller: 021 + 100) shown
            assert inv.from_addr.uri.user == "acc"
            assert inv.from_addr.display_name == "021100"
            assert "100rel" not in (inv.headers.get("Supported") or ""), inv.headers
            # max_duration of the line: the pbx hangs up after 1 s
            until(lambda: any(r.method == "BYE" for r in far.requests), 5, "BYE at 1 s")
            answered = pool.submit(far.answer_incoming)
            assert alice.call("85551234").status == 200, pbx.log()
            inv = answered.result(10)
            assert inv.uri == "tel:5551234" and inv.headers.get("To") == "<tel:5551234>"
            assert str(inv.from_addr.uri) == "tel:8008"  # unified_caller_number
            assert "100rel" in (inv.headers.get("Supported") or "")
            alice.bye()
            t = [(r["line_out"], r["final"], r["caller_number"]) for r in cdrs(pbx, 4)
                 if r["kind"] == "T"]
            assert t == [("wire", "00865551234", "021100"), ("carrier", "5551234", "8008")], t
        finally:
            pbx.stop()


async def test_line_state_events_on_the_control_socket(tmp_path: Path) -> None:
    import trio

    from minisip.control.client import subscribe

    need("sipp")
    pbx = make_server(tmp_path / "pbx")
    write(pbx, "lines.yaml", line_yaml(fxo={"type": 1, "account": "gw1", "password": "gwpw"}))
    pbx.start()
    seen: list[dict[str, Any]] = []
    try:
        with trio.fail_after(20):
            async with subscribe(pbx.data_dir / "control.sock", ["lines"],
                                 {"line": "fxo"}) as events:
                await trio.to_thread.run_sync(lambda: run_sipp(
                    "register.xml", pbx.port, users=[("gw1", "gwpw")], workdir=tmp_path))
                seen.append((await events.__anext__())["data"])
                write(pbx, "lines.yaml", "lines: {}\n")
                seen.append((await events.__anext__())["data"])
    finally:
        pbx.stop()
    assert seen[0]["state"] == "online" and seen[0]["reason"].startswith("gateway registered")
    assert seen[1] == {"line": "fxo", "state": "removed", "reason": "removed"}


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_line_over_tcp_and_tls(tmp_path: Path, transport: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """minisip dials the provider's TCP/TLS port itself; calls go both ways on it."""
    need("sipp")
    pbx, provider = make_pair(tmp_path)
    provider.start()  # its self-signed certificate names 127.0.0.1: trust it for TLS
    monkeypatch.setenv("SSL_CERT_FILE", str(provider.data_dir / "tls" / "cert.pem"))
    port = provider.port if transport == "tcp" else provider.tls_port
    write(pbx, "lines.yaml", line_yaml(prov=prov_line(
        provider, port=port, transport=transport, incoming={"destination_number": "101"})))
    pbx.start()
    try:
        online(pbx, "prov")
        (binding,) = provider_bindings(provider)
        assert binding["source"].startswith(f"{transport}:127.0.0.1:"), binding
        # its Contact names the pbx's port of that transport, from the first REGISTER on
        # (else the refreshes add a second binding, and the provider's calls fork to both)
        mine = pbx.port if transport == "tcp" else pbx.tls_port
        assert binding["contact"] == f"sip:{ACCOUNT}@127.0.0.1:{mine};transport={transport}"
        with PyPhone(provider.port, "102", "102") as far, \
                PyPhone(pbx.port, "100", "100") as alice, PyPhone(pbx.port, "101", "101") as bob, \
                ThreadPoolExecutor(1) as pool:
            far.register()
            bob.register()
            answered = pool.submit(far.answer_incoming)
            assert alice.call("9102").status == 200, pbx.log()
            answered.result(10)
            alice.bye()
            answered = pool.submit(bob.answer_incoming)
            assert far.call(ACCOUNT).status == 200, (pbx.log(), provider.log())
            answered.result(10)
            far.bye()
        o = [r for r in cdrs(pbx, 4) if r["kind"] == "O"]
        assert [(r["line_out"] or r["line_in"], r["status"]) for r in o] == [
            ("prov", 200), ("prov", 200)], (o, pbx.log(), provider.log())
    finally:
        pbx.stop()
        provider.stop()
