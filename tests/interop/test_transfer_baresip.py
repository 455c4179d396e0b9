"""A real softphone transfers with its own command: baresip's blind transfer (REFER).

Three baresip phones (100: 440 Hz, 101: 880 Hz, 102: 1320 Hz, each recording what
it hears). 100 calls 101; 101 transfers the call to 102 with ``transfer``; baresip
sends REFER, minisip answers 202 and NOTIFYs, 101 hangs up when the NOTIFY says
200, 102 answers by itself. Then 100 must hear 102's tone and 102 100's: the
recordings prove the audio went between the right parties after the transfer.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, free_port_range, make_server, need
from tests.interop.baresip import MODULES, Baresip, SipProxy, heard, read_wav, tone_power, \
    wait_online, write_tone

pytestmark = pytest.mark.interop

TONE = {"100": 440.0, "101": 880.0, "102": 1320.0}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    need("baresip")
    for module in ("g711", "aufile", "aubridge", "sndfile", "ctrl_tcp", "menu", "account"):
        if not (MODULES / f"{module}.so").exists():
            pytest.skip(f"baresip module {module} missing in {MODULES}")
    srv = make_server(tmp_path)
    lo, hi = free_port_range(8)  # RTP ports of its own: other servers may run tests too
    path = srv.config_dir / "system.yaml"
    path.write_text(path.read_text().replace("rtp_port_min: 10000", f"rtp_port_min: {lo}")
                    .replace("rtp_port_max: 20000", f"rtp_port_max: {hi}"))
    srv.start()
    yield srv
    srv.stop()


def calls(server: ServerProcess) -> list[dict[str, Any]]:
    out = server.cli("calls", "--json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def last_seconds(path: Path, seconds: float) -> list[int]:
    samples, rate = read_wav(path)
    return samples[-int(seconds * rate):]


def test_baresip_blind_transfer_connects_the_right_parties(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    with ExitStack() as stack:
        phones: dict[str, Baresip] = {}
        for user in ("100", "101", "102"):
            proxy = stack.enter_context(SipProxy(("127.0.0.1", server.port)))
            wav = write_tone(tmp_path / f"tone-{user}.wav", TONE[user], 30)
            p = Baresip(tmp_path, user, user, ("127.0.0.1", server.port), source_wav=wav,
                        proxy_port=proxy.port)
            stack.callback(p.close)
            phones[user] = p.start()
        wait_online(server.cli, list(phones))
        a, b, c = phones["100"], phones["101"], phones["102"]
        a.dial("101")
        a.wait_event("CALL_ESTABLISHED")
        b.wait_event("CALL_ESTABLISHED")
        time.sleep(1.0)
        mb, mc = len(b.events), len(c.events)
        b.command("transfer", f"sip:102@127.0.0.1:{server.port}")
        c.wait_event("CALL_ESTABLISHED", since=mc)
        b.wait_event("CALL_CLOSED", since=mb)  # 101 hung up on the NOTIFY's 200
        deadline = time.monotonic() + 10
        live = calls(server)
        while time.monotonic() < deadline and not (
                len(live) == 1 and live[0]["state"] == "talking" and all(
                    (live[0].get("media") or {}).get(side, {}).get("rtp_packets", 0) > 50
                    for side in ("a", "b"))):
            time.sleep(0.2)
            live = calls(server)
        assert len(live) == 1 and sorted(live[0]["parties"]) == ["100", "102"], (
            live, server.log())
        time.sleep(2.0)  # talk
        dec_a = a.recordings()[0]
        dec_c = c.recordings()[0]
        a.hangup()
        c.wait_event("CALL_CLOSED", since=mc)
        tail_a = last_seconds(dec_a, 1.5)  # after the transfer, 100 hears 102 ...
        assert tone_power(tail_a, 8000, TONE["102"]) > 20 * tone_power(tail_a, 8000,
                                                                         TONE["101"]), \
            (heard(dec_a), b.log())
        seconds, hz = heard(dec_c)  # ... and 102 hears 100
        assert abs(hz - TONE["100"]) <= 20 and seconds >= 1.0, (seconds, hz)
        deadline = time.monotonic() + 5
        rows: list[sqlite3.Row] = []
        while time.monotonic() < deadline and len(rows) < 2:
            with sqlite3.connect(server.data_dir / "cdr.db") as db:
                rows = db.execute("SELECT caller, final, transferred_by, transferred_to "
                                  "FROM cdr WHERE kind = 'O' ORDER BY id").fetchall()
            time.sleep(0.1)
        assert [tuple(r) for r in rows] == [("100", "101", "101", "102"),
                                            ("100", "102", "101", "")], rows
