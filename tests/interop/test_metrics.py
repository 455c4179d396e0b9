"""Prometheus metrics: scraped over HTTP from a running server while calls run."""
from __future__ import annotations

import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, make_server, need, run_sipp, start_sipp

pytestmark = pytest.mark.interop

EXPECTED = ["minisip_registered_devices", "minisip_registrations_total",
            "minisip_calls{state=\"talking\"}", "minisip_calls_ended_total",
            "minisip_transactions{kind=\"ist\"}", "minisip_retransmissions_sent_total",
            "minisip_shed_requests_total", "minisip_relay_packets_total",
            "minisip_loop_lag_seconds_bucket", "minisip_config_reloads_total",
            "minisip_loop_stalls_total", "minisip_gc_pause_worst_seconds",
            "minisip_auth_challenges_total", "minisip_faults_total{kind=\"sip\"}",
            "minisip_transport_failures_total"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def value(text: str, name: str) -> float:
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


def test_metrics_are_scraped_while_calls_run(tmp_path: Path) -> None:
    need("sipp")
    srv = make_server(tmp_path)
    mport = free_port((socket.SOCK_STREAM,))
    system = srv.config_dir / "system.yaml"
    system.write_text(system.read_text().replace("metrics_port: 0", f"metrics_port: {mport}"))
    (srv.config_dir / "users.yaml").write_text(
        'users:\n  "100": {password: "100", max_concurrent_calls: 10, '
        'max_concurrent_outgoing_calls: 10}\n'
        '  "101": {password: "101", max_concurrent_calls: 10, call_waiting: true}\n')
    srv.start()
    try:
        uport = free_port((socket.SOCK_DGRAM,))
        uas = start_sipp("uas_answer.xml", port=uport, calls=6, timeout=30, workdir=tmp_path)
        reg = run_sipp("register_contact.xml", srv.port, users=[("101", "101")],
                       extra=("-key", "contact_port", str(uport)), workdir=tmp_path)
        assert reg.ok, reg.output
        caller = start_sipp("uac_call.xml", remote=f"127.0.0.1:{srv.port}",
                            users=[("100", "100", "101")] * 6, calls=6, rate=20,
                            extra=("-d", "2000"), timeout=30, workdir=tmp_path)
        deadline = time.monotonic() + 10
        talking = 0.0
        while time.monotonic() < deadline and talking < 2:
            text = scrape(mport)
            talking = value(text, 'minisip_calls{state="talking"}')
            time.sleep(0.1)
        assert talking >= 2, text
        for name in EXPECTED:
            assert name in text, name
        assert value(text, "minisip_registered_devices") == 1
        assert value(text, "minisip_auth_challenges_total") >= 2
        r = caller.wait()
        assert r.ok, r.output + srv.log()
        assert uas.wait().ok
        text = scrape(mport)
        assert value(text, 'minisip_calls_ended_total{cause="normal"}') == 6
        assert value(text, "minisip_calls_completed_total") == 6
        assert value(text, 'minisip_calls{state="talking"}') == 0
        assert value(text, 'minisip_faults_total{kind="sip"}') == 0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/other", timeout=5)
    finally:
        srv.stop()


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    srv.start()
    try:
        assert "metrics on http" not in srv.log()
    finally:
        srv.stop()
