"""Real softphones through minisip's RTP relay: two baresip instances talk.

Phone 100's microphone plays 440 Hz, 101's plays 880 Hz (WAVs made here); each
phone records what it hears. 100 calls 101, 101 answers by itself, they talk
for a few seconds and 100 hangs up. The relay's live figures (``minisip calls``),
the CDRs and the recordings must all show audio both ways, and the relay's
ports must be free again afterwards. Then the same behind a NAT (101 hangs
up there): the phones' Contact and SDP name an address that reaches nothing,
and only latching on the source of their RTP gets the audio through.

See tests/interop/baresip.py for the phone and its outbound proxy.
"""
from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest


from tests.helpers import ServerProcess, make_server, need
from tests.helpers import free_port_range as shared_free_port_range
from tests.interop.baresip import MODULES, Baresip, SipProxy, heard, wait_online, write_tone

pytestmark = pytest.mark.interop

TONE = {"100": 440, "101": 880}
TALK = 3.0  #: seconds of conversation
NAT_ADDRESS = "127.0.0.9"  #: the phones' "private" address behind the NAT: nothing listens there
PAIRS = 2  #: RTP port pairs of the relay: exactly one call's worth


def free_port_range(pairs: int = PAIRS) -> tuple[int, int]:
    return shared_free_port_range(pairs, start=20000)


def ports_held(lo: int, hi: int) -> list[int]:
    """The ports of [lo, hi] that something still holds (empty: all free)."""
    held = []
    for port in range(lo, hi + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                held.append(port)
    return held


def set_system(server: ServerProcess, **items: object) -> None:
    path = server.config_dir / "system.yaml"
    text = path.read_text()
    for key, value in items.items():
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, count=1, flags=re.MULTILINE)
        assert n == 1, f"{key} not in {path}"
    path.write_text(text)


class Pbx:
    def __init__(self, server: ServerProcess, ports: tuple[int, int]) -> None:
        self.server = server
        self.ports = ports

    def calls(self) -> list[dict[str, Any]]:
        out = self.server.cli("calls", "--json")
        assert out.returncode == 0, out.stderr + self.server.log()
        calls: list[dict[str, Any]] = json.loads(out.stdout)
        return calls

    def cdrs(self, call_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.server.data_dir / "cdr.db") as db:
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute(
                    "SELECT * FROM cdr WHERE call_id = ? ORDER BY id", (call_id,))]
            if len(rows) >= 2 or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


@pytest.fixture
def pbx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pbx]:
    """minisip with ``relay_media`` = the test's param (default always) and 2 RTP port pairs."""
    need("baresip")
    for module in ("g711", "aufile", "aubridge", "sndfile", "ctrl_tcp", "menu", "account"):
        if not (MODULES / f"{module}.so").exists():
            pytest.skip(f"baresip module {module} missing in {MODULES} (apt install baresip-core)")
    srv = make_server(tmp_path)
    lo, hi = free_port_range()
    set_system(srv, relay_media=getattr(request, "param", "always"),
               rtp_port_min=lo, rtp_port_max=hi)
    srv.start()
    try:
        yield Pbx(srv, (lo, hi))
    finally:
        srv.stop()


def start_phones(stack: ExitStack, pbx: Pbx, tmp_path: Path,
                 nat: str | None = None) -> dict[str, tuple[Baresip, SipProxy]]:
    """Phones 100 and 101, each behind its own SipProxy, registered to minisip."""
    out = {}
    server = ("127.0.0.1", pbx.server.port)
    for user in ("100", "101"):
        proxy = stack.enter_context(SipProxy(server, nat))
        wav = write_tone(tmp_path / f"tone-{user}.wav", TONE[user], 4 * TALK)
        phone = Baresip(tmp_path, user, user, server, source_wav=wav, proxy_port=proxy.port)
        stack.callback(phone.close)
        phone.start()
        out[user] = (phone, proxy)
    try:
        wait_online(pbx.server.cli, ["100", "101"], timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{[p.trace for _, p in out.values()]}\n"
                             f"{out['100'][0].log()}\n{pbx.server.log()}") from None
    return out


def legs_flowing(call: dict[str, Any]) -> bool:
    media = call.get("media") or {}
    return all((media.get(leg) or {}).get("rtp_packets", 0) > 0 for leg in ("a", "b"))


def converse(pbx: Pbx, caller: Baresip, callee: Baresip, seconds: float = TALK,
             hangup_by: str = "caller") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``caller`` dials ``callee``, they talk, then ``hangup_by`` (caller/callee) hangs up.

    Returns the call as ``minisip calls --json`` showed it once both legs had
    RTP, and the call's CDR rows (written when it ended).
    """
    ma, mb = len(caller.events), len(callee.events)
    caller.dial(callee.user)
    caller.wait_event("CALL_ESTABLISHED", since=ma)
    callee.wait_event("CALL_ESTABLISHED", since=mb)
    start = time.monotonic()
    live: list[dict[str, Any]] = []
    while time.monotonic() < start + seconds + 2:
        live = pbx.calls()
        if len(live) == 1 and legs_flowing(live[0]):
            break
        time.sleep(0.2)
    assert len(live) == 1 and legs_flowing(live[0]), (
        f"no RTP on both legs: {json.dumps(live, indent=1)}\n{pbx.server.log()}")
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    (caller if hangup_by == "caller" else callee).hangup()
    caller.wait_event("CALL_CLOSED", since=ma)
    callee.wait_event("CALL_CLOSED", since=mb)
    deadline = time.monotonic() + 5
    while pbx.calls() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pbx.calls() == [], pbx.server.log()
    return live[0], pbx.cdrs(live[0]["call_id"])


def check_cdrs(rows: list[dict[str, Any]], min_packets: int, released_by: str = "caller") -> None:
    assert {(r["kind"], r["status"], r["caller"], r["final"], r["released_by"]) for r in rows} == {
        ("O", 200, "100", "101", released_by), ("T", 200, "100", "101", released_by)}, rows
    for r in rows:
        # a = what the caller sent through the relay, b = what the callee sent
        assert r["a_packets"] >= min_packets and r["b_packets"] >= min_packets, r


def check_audio(phones: dict[str, tuple[Baresip, SipProxy]]) -> None:
    """Each phone heard the other's tone (and sent its own), for most of the call."""
    for user, other in (("100", "101"), ("101", "100")):
        dec, enc = phones[user][0].recordings()
        heard_for, heard_hz = heard(dec)
        sent_for, sent_hz = heard(enc)
        assert abs(sent_hz - TONE[user]) <= 20, (user, "sent", sent_for, sent_hz)
        assert abs(heard_hz - TONE[other]) <= 20 and heard_for >= TALK / 2, (
            f"{user} heard {heard_hz} Hz for {heard_for:.2f}s; expected {TONE[other]} Hz "
            f"(the other phone's tone) for about {TALK}s")


def test_baresip_call_audio_both_ways_through_the_relay(pbx: Pbx, tmp_path: Path) -> None:
    with ExitStack() as stack:
        phones = start_phones(stack, pbx, tmp_path)
        a, b = phones["100"][0], phones["101"][0]
        call, rows = converse(pbx, a, b)
        lo, hi = pbx.ports
        media = call["media"]
        for leg in ("a", "b"):
            assert lo <= media[leg]["local_rtp_port"] < hi, media
            assert media[leg]["remote"].startswith("127.0.0.1:"), media
        # 100's INVITE went through its proxy: its SDP port is where leg A sends.
        assert media["a"]["remote"] == f"127.0.0.1:{phones['100'][1].sdp_seen[0][1]}", media
        check_cdrs(rows, min_packets=int(TALK * 50 * 0.5))
        check_audio(phones)

        # The relay gave its ports back: nothing holds them, and the next call gets them
        # (the range has room for one call only; without them its media would go direct).
        assert ports_held(lo, hi) == [], (lo, hi, pbx.server.log())
        call2, rows2 = converse(pbx, a, b, seconds=1.0)
        assert call2["call_id"] != call["call_id"]
        assert {call2["media"][leg]["local_rtp_port"] for leg in ("a", "b")} == {
            media[leg]["local_rtp_port"] for leg in ("a", "b")}, (call2, media)
        check_cdrs(rows2, min_packets=10)
        assert ports_held(lo, hi) == [], (lo, hi, pbx.server.log())


@pytest.mark.parametrize("pbx", ["always", "auto"], indirect=True)
def test_baresip_behind_nat_audio_both_ways_by_latching(pbx: Pbx, tmp_path: Path) -> None:
    """Contact and SDP name 127.0.0.9 (private); SIP and RTP come from 127.0.0.1.

    With ``relay_media: auto`` the PBX must notice the NAT by itself. Here the
    callee hangs up, so minisip's BYE to the caller must find it through the NAT too.
    """
    with ExitStack() as stack:
        phones = start_phones(stack, pbx, tmp_path, nat=NAT_ADDRESS)
        a, b = phones["100"][0], phones["101"][0]
        call, rows = converse(pbx, a, b, hangup_by="callee")
        media = call["media"]
        assert media is not None, f"call not relayed: {call}"
        for user, leg in (("100", "a"), ("101", "b")):
            proxy = phones[user][1]
            assert proxy.rewritten >= 1, f"{user}: no SDP went through the NAT: {proxy.trace}"
            real_port = proxy.sdp_seen[0][1]  # baresip sends RTP from the port it offers
            # latched onto the real source, not the SDP's private address
            assert media[leg]["remote"] == f"127.0.0.1:{real_port}", (user, media, proxy.trace)
        check_cdrs(rows, min_packets=int(TALK * 50 * 0.5), released_by="callee")
        check_audio(phones)
        assert ports_held(*pbx.ports) == [], pbx.server.log()
