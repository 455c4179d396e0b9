"""Mid-call requests through the B2BUA, with real sipp peers on both legs.

A callee "device" is a sipp server registered as 101 with ``register_contact.xml``;
the caller is a sipp client placing an authenticated call. Each pair of ``mid_*``
scenarios is one side's script of the same call: re-INVITEs (hold/resume), INFO,
UPDATE, PRACK, hang-up from the callee, a 200 crossing a CANCEL. Every check on a
relayed message (its dialog, body, Content-Type, CSeq) is an ``ereg check_it`` in
the scenario of the side that receives it, so a wrong relay fails that sipp.
"""
from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from minisip.control.client import request as control_request
from tests.helpers import (ServerProcess, Sipp, SippResult, eventually, make_server, need,
                           run_sipp, sipp_device, start_sipp)

pytestmark = pytest.mark.interop

TRACE = ("-trace_err", "-trace_msg")


def set_user(server: ServerProcess, user: str, **items: object) -> None:
    """Edit the copied users.yaml before the server starts (as test_calls does)."""
    path = server.config_dir / "users.yaml"
    text = path.read_text()
    marker = f'"{user}":\n'
    assert marker in text, f"user {user} not in {path}"
    extra = "".join(f"    {k}: {v}\n" for k, v in items.items())
    path.write_text(text.replace(marker, marker + extra, 1))


def set_system(server: ServerProcess, key: str, value: str) -> None:
    path = server.config_dir / "system.yaml"
    text, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", path.read_text())
    assert n == 1, f"{key} not in {path}"
    path.write_text(text)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server after editing the config:
    ``make(relay_media="always", **{"101": {"max_concurrent_calls": 1}})``."""
    need("sipp")
    servers: list[ServerProcess] = []

    def start(relay_media: str | None = None, **users: dict[str, object]) -> ServerProcess:
        srv = make_server(tmp_path)
        if relay_media is not None:
            set_system(srv, "relay_media", relay_media)
        for user, items in users.items():
            set_user(srv, user, **items)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(make: Callable[..., ServerProcess]) -> ServerProcess:
    return make()


@pytest.fixture(params=["auto", "always"], ids=["direct-media", "relayed-media"])
def any_server(request: pytest.FixtureRequest,
               make: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose calls between 127.0.0.1 phones keep their media direct (auto)
    or relay it (always: every SDP body is rewritten on its way, re-INVITEs too)."""
    return make(relay_media=request.param)


def device(server: ServerProcess, user: str, scenario: str, tmp_path: Path) -> Sipp:
    """A callee device: a sipp server registered as ``user`` on its own port."""
    return sipp_device(server, user, scenario, tmp_path, timeout=15, extra=TRACE)


def call(server: ServerProcess, caller: str, callee: str, scenario: str, tmp_path: Path,
         hold_ms: int = 0, extra: tuple[str, ...] = ()) -> SippResult:
    return run_sipp(scenario, server.port, users=[(caller, caller, callee)],
                    extra=("-d", str(hold_ms), *TRACE, *extra), timeout=15,
                    workdir=tmp_path)


def traces(tmp_path: Path, scenario: str) -> str:
    """What sipp logged for ``scenario`` (messages and errors), for failure reports."""
    stem = scenario.removesuffix(".xml")
    return "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-6000:]
                   for p in sorted(tmp_path.glob(f"{stem}_*.log")))


def messages(tmp_path: Path, scenario: str) -> str:
    """Every message sipp sent and received for ``scenario`` (its -trace_msg log)."""
    stem = scenario.removesuffix(".xml")
    return "".join(p.read_text(errors="replace")
                   for p in sorted(tmp_path.glob(f"{stem}_*_messages.log")))


def both_ok(server: ServerProcess, tmp_path: Path, caller: SippResult, caller_sf: str,
            uas: Sipp, uas_sf: str) -> None:
    callee = uas.wait()
    assert callee.ok, ("callee failed:\n" + callee.output[-3000:] + traces(tmp_path, uas_sf)
                       + traces(tmp_path, caller_sf) + server.log())
    assert caller.ok, ("caller failed:\n" + caller.output[-3000:] + traces(tmp_path, caller_sf)
                       + traces(tmp_path, uas_sf) + server.log())


def run_call(server: ServerProcess, tmp_path: Path, uac_sf: str, uas_sf: str,
             caller: str = "100", **kw: object) -> None:
    uas = device(server, "101", uas_sf, tmp_path)
    r = call(server, caller, "101", uac_sf, tmp_path, **kw)  # type: ignore[arg-type]
    both_ok(server, tmp_path, r, uac_sf, uas, uas_sf)


def check_media_path(server: ServerProcess, tmp_path: Path, uas_sf: str,
                     held: bool = False) -> None:
    """The callee saw the relay's ports (rtp_port_min.. in system.yaml) only when the
    server relays media, or for the time of a hold (music on hold comes from the relay
    even on a direct-media call); sipp's own media ports are 6000 and up."""
    relayed = re.search(r"(?m)^relay_media: always",
                        (server.config_dir / "system.yaml").read_text()) is not None
    ports = {int(p) for p in re.findall(r"(?m)^m=audio (\d+) ", messages(tmp_path, uas_sf))}
    assert ports and any(10000 <= p <= 20000 for p in ports) == (relayed or held), ports


def cdrs(server: ServerProcess, n: int = 1) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(server.data_dir / "cdr.db") as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM cdr ORDER BY id")]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def live_calls(server: ServerProcess) -> list[dict[str, object]]:
    return trio.run(control_request, server.data_dir / "control.sock", "calls")


# -- 1. re-INVITE ---------------------------------------------------------------------

def test_caller_holds_and_resumes(any_server: ServerProcess, tmp_path: Path) -> None:
    """Caller re-INVITEs a=sendonly then a=sendrecv: each reaches the callee in the
    B-leg dialog (its To tag, CSeq 2 then 3), the callee's 200 (a=recvonly, then
    a=sendrecv) reaches the caller, who ACKs; then BYE."""
    run_call(any_server, tmp_path, "mid_uac_hold_resume.xml", "mid_uas_hold_resume.xml")
    check_media_path(any_server, tmp_path, "mid_uas_hold_resume.xml", held=True)


def test_callee_reinvite_reaches_the_caller(any_server: ServerProcess, tmp_path: Path) -> None:
    """The callee re-INVITEs (From = its answered To, To = the PBX's From): the caller
    gets it in the A-leg dialog with the sendonly SDP, its 200 (recvonly) goes back."""
    run_call(any_server, tmp_path, "mid_uac_reinvited.xml", "mid_uas_reinvite.xml")
    check_media_path(any_server, tmp_path, "mid_uas_reinvite.xml", held=True)


def test_relayed_reinvite_200_is_retransmitted_until_the_ack(server: ServerProcess,
                                                             tmp_path: Path) -> None:
    # -nr: the caller's sipp must not swallow the repeated 200 as a retransmission.
    run_call(server, tmp_path, "mid_uac_hold_late_ack.xml", "mid_uas_hold.xml",
             extra=("-nr",))


def test_offerless_reinvite_answer_in_the_ack_reaches_the_callee(server: ServerProcess,
                                                                 tmp_path: Path) -> None:
    run_call(server, tmp_path, "mid_uac_reinvite_no_sdp.xml", "mid_uas_reinvite_no_sdp.xml")


# -- 2./3. INFO and UPDATE -------------------------------------------------------------------

def test_info_dtmf_is_relayed(any_server: ServerProcess, tmp_path: Path) -> None:
    """INFO application/dtmf-relay 'Signal=5\\r\\nDuration=160\\r\\n' reaches the callee with
    the same Content-Type and body (Content-Length 24); its 200 reaches the caller."""
    run_call(any_server, tmp_path, "mid_uac_info.xml", "mid_uas_info.xml")
    check_media_path(any_server, tmp_path, "mid_uas_info.xml")


def test_update_is_relayed(any_server: ServerProcess, tmp_path: Path) -> None:
    """UPDATE with an SDP offer reaches the callee; its 200 with the answer comes back."""
    run_call(any_server, tmp_path, "mid_uac_update.xml", "mid_uas_update.xml")
    check_media_path(any_server, tmp_path, "mid_uas_update.xml", held=True)


# -- 4. outside any dialog ---------------------------------------------------------------------

def test_out_of_dialog_keepalives_and_unknown_dialog(server: ServerProcess,
                                                     tmp_path: Path) -> None:
    """Without a To tag: OPTIONS 200, INFO 481 (RFC 6086 4.2.1), REFER 403 (a transfer
    moves a call the REFER's sender is part of). BYE and INVITE with a To tag that names no dialog: 481 (RFC 3261 12.2.2)."""
    r = run_sipp("mid_out_of_dialog.xml", server.port, timeout=10, workdir=tmp_path,
                 extra=TRACE)
    assert r.ok, r.output + traces(tmp_path, "mid_out_of_dialog.xml") + server.log()


# -- 5. display name ------------------------------------------------------------------------

def test_display_name_in_the_callee_invite(make: Callable[..., ServerProcess],
                                           tmp_path: Path) -> None:
    """display_name "Alice Smith" on 100: the INVITE to 101 says From: "Alice Smith" <...>
    (the scenario checks it loosely, sipp's regexps cannot hold a double quote)."""
    server = make(**{"100": {"display_name": '"Alice Smith"'}})
    run_call(server, tmp_path, "uac_call.xml", "mid_uas_display_name.xml")
    seen = messages(tmp_path, "mid_uas_display_name.xml")
    invite = seen[seen.index("INVITE sip:"):]
    assert re.search(r'(?m)^From: "Alice Smith" <sip:100@[^>]*>;tag=', invite), invite[:1000]


# -- 6. limits -----------------------------------------------------------------------------

def test_callee_at_its_call_limit_is_busy(make: Callable[..., ServerProcess],
                                          tmp_path: Path) -> None:
    """101 with max_concurrent_calls 1 talks to 100; 102 calling 101 gets 486."""
    server = make(**{"101": {"max_concurrent_calls": 1}})
    uas = device(server, "101", "uas_answer.xml", tmp_path)
    first = start_sipp("uac_call.xml", remote=f"127.0.0.1:{server.port}",
                       users=[("100", "100", "101")], extra=("-d", "3000", *TRACE),
                       timeout=15, workdir=tmp_path)
    try:
        assert eventually(lambda: any(c["state"] == "talking" for c in live_calls(server))), (
            server.log())
        busy = run_sipp("uac_expect_486.xml", server.port, users=[("102", "102", "101")],
                        timeout=10, workdir=tmp_path)
        assert busy.ok, busy.output + server.log()
    finally:
        r = first.wait()
    assert r.ok, r.output + server.log()
    assert uas.wait().ok


def test_caller_without_outgoing_calls_gets_403(make: Callable[..., ServerProcess],
                                                tmp_path: Path) -> None:
    server = make(**{"100": {"max_concurrent_outgoing_calls": 0}})
    r = call(server, "100", "101", "mid_uac_expect_403.xml", tmp_path)
    assert r.ok, r.output + traces(tmp_path, "mid_uac_expect_403.xml") + server.log()


# -- 7. PRACK ------------------------------------------------------------------------------------

def test_reliable_180_is_pracked(server: ServerProcess, tmp_path: Path) -> None:
    """180 with Require: 100rel, RSeq: 1 gets a PRACK in the early B-leg dialog (RAck:
    1 1 INVITE, CSeq 2 PRACK); 200 to it; the call is answered and ends normally."""
    run_call(server, tmp_path, "uac_call.xml", "mid_uas_prack.xml", hold_ms=200)


def test_retransmitted_reliable_180_is_not_pracked_twice(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    run_call(server, tmp_path, "uac_call.xml", "mid_uas_prack_retransmitted.xml",
             hold_ms=200)


def test_200_contact_is_the_target_after_an_early_dialog(server: ServerProcess,
                                                          tmp_path: Path) -> None:
    run_call(server, tmp_path, "uac_call.xml", "mid_uas_target_refresh.xml", hold_ms=200)


# -- 8. release from the callee side -----------------------------------------------------------

def test_callee_hangs_up_caller_gets_bye(server: ServerProcess, tmp_path: Path) -> None:
    run_call(server, tmp_path, "mid_uac_callee_hangs_up.xml", "mid_uas_hangs_up.xml")
    rows = cdrs(server, 2)
    assert {(c["kind"], c["status"], c["cause"], c["released_by"]) for c in rows} == {
        ("O", 200, "normal", "callee"), ("T", 200, "normal", "callee")}, rows
    assert not live_calls(server)


def test_answer_crossing_the_cancel_is_acked_and_released(server: ServerProcess,
                                                          tmp_path: Path) -> None:
    """The caller CANCELs while ringing; the callee's 200 crosses the PBX's CANCEL. The
    caller gets 200 (CANCEL) and 487; the callee gets an ACK and a BYE (RFC 3261 9.1,
    15: a 2xx after CANCEL is a confirmed dialog that must be torn down)."""
    run_call(server, tmp_path, "uac_cancel.xml", "mid_uas_answer_crosses_cancel.xml")
    assert {c["cause"] for c in cdrs(server)} == {"cancelled"}
    assert not live_calls(server)


def test_cancel_after_the_answer_changes_nothing(server: ServerProcess, tmp_path: Path) -> None:
    """The caller's CANCEL crosses the 200: it gets 200 (CSeq CANCEL), the call stays up
    (no BYE, no 487), the caller ACKs and later hangs up normally."""
    run_call(server, tmp_path, "mid_uac_cancel_after_answer.xml", "uas_answer.xml")
    assert {(c["status"], c["cause"], c["released_by"]) for c in cdrs(server, 2)} == {
        (200, "normal", "caller")}
