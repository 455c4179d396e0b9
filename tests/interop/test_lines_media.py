"""Audio both ways on an outside call: two real softphones (baresip), two minisips.

Phone 100 is registered to the pbx, phone 102 to the provider (another minisip);
100 dials 9 + 102, the call leaves on line ``prov`` whose ``relay_media`` makes
the pbx relay it. Each phone plays its own tone and must hear the other's.
"""
from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import free_port_range, need
from tests.interop.baresip import MODULES, Baresip, heard, wait_online, write_tone
from tests.interop.test_lines import edit, line_yaml, make_pair, prov_line, online, write

pytestmark = pytest.mark.interop

TONE = {"100": 440, "102": 880}
TALK = 3.0


def test_baresip_talks_through_a_line_with_relayed_media(tmp_path: Path) -> None:
    need("baresip")
    need("sipp")
    for module in ("g711", "aufile", "aubridge", "sndfile", "ctrl_tcp", "menu", "account"):
        if not (MODULES / f"{module}.so").exists():
            pytest.skip(f"baresip module {module} missing in {MODULES}")
    pbx, provider = make_pair(tmp_path)
    write(pbx, "lines.yaml", line_yaml(prov=prov_line(provider, relay_media=True)))
    lo, hi = free_port_range(2, start=30000)
    edit(pbx, "system.yaml", r"^rtp_port_min: .*$", f"rtp_port_min: {lo}")
    edit(pbx, "system.yaml", r"^rtp_port_max: .*$", f"rtp_port_max: {hi}")
    edit(provider, "system.yaml", r"^relay_media: .*$", "relay_media: never")
    provider.start()
    pbx.start()
    with ExitStack() as stack:
        stack.callback(provider.stop)
        stack.callback(pbx.stop)
        online(pbx, "prov")
        phones = {}
        for user, server, ports in (("100", pbx, (46000, 46499)),
                                    ("102", provider, (46500, 46999))):
            wav = write_tone(tmp_path / f"tone-{user}.wav", TONE[user], 4 * TALK)
            phone = Baresip(tmp_path, user, user, ("127.0.0.1", server.port),
                            source_wav=wav, rtp_ports=ports)
            stack.callback(phone.close)
            phone.start()
            phones[user] = phone
        wait_online(pbx.cli, ["100"])
        wait_online(provider.cli, ["102"])
        a, b = phones["100"], phones["102"]
        a.dial("9102")
        a.wait_event("CALL_ESTABLISHED")
        b.wait_event("CALL_ESTABLISHED")
        time.sleep(TALK)
        live = json.loads(pbx.cli("calls", "--json").stdout)
        a.hangup()
        a.wait_event("CALL_CLOSED")
        b.wait_event("CALL_CLOSED")
        # The pbx relayed the call (the line's relay_media), and RTP crossed it both ways.
        assert len(live) == 1 and live[0]["line_out"] == "prov", live
        media = live[0]["media"]
        for leg in ("a", "b"):
            assert lo <= media[leg]["local_rtp_port"] <= hi, media
            assert media[leg]["rtp_packets"] > TALK * 50 / 2, media
        for user, other in (("100", "102"), ("102", "100")):
            dec, _ = phones[user].recordings()
            heard_for, heard_hz = heard(dec)
            assert abs(heard_hz - TONE[other]) <= 20 and heard_for >= TALK / 2, (
                f"{user} heard {heard_hz} Hz for {heard_for:.2f}s, expected {TONE[other]} Hz"
                f"\n{pbx.log()}")
