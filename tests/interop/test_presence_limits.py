"""Every subscriptions:/messages: key of system.yaml, seen on the wire."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import make_server
from tests.interop.pyphone import PyPhone
from tests.interop.test_presence import set_config

pytestmark = pytest.mark.interop


def test_subscription_limits_expiry_and_pacing(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    set_config(srv, "system.yaml", "subscriptions:\n  min_expires: 60\n  max_expires: 3600\n"
               "  default_expires: 3600\n  max_per_user: 100\n  max_total: 20000\n"
               "  notify_rate: 10\n",
               "subscriptions:\n  min_expires: 120\n  max_expires: 900\n"
               "  default_expires: 300\n  max_per_user: 2\n  max_total: 3\n"
               "  notify_rate: 1\n")
    srv.start()
    try:
        with PyPhone(srv.port, "100", "100") as p100, PyPhone(srv.port, "101", "101") as p101, \
                PyPhone(srv.port, "102", "102") as p102:
            too_brief = p102.subscribe("100", "presence", expires=60)
            assert too_brief.status == 423 and too_brief.headers.get("Min-Expires") == "120"
            assert p102.subscribe("100", "dialog", expires=None).headers.get("Expires") == "300"
            assert p102.subscribe("100", "presence", expires=5000).headers.get("Expires") == "900"
            assert p102.subscribe("101", "presence").status == 403  # max_per_user: 2
            watch = p101.subscribe("101", "presence")  # 101 watches itself: the third
            assert watch.status == 200
            assert p100.subscribe("101", "dialog").status == 503  # max_total: 3
            (first,) = p101.wait_requests("NOTIFY", 1, call_id=watch.call_id)
            assert b"<basic>closed</basic>" in first.body  # 101 is not registered yet
            # notify_rate 1: the first NOTIFY spent the token; three changes within the next
            # second make one NOTIFY, a second after the first, with the latest state.
            assert p101.register().status == 200
            assert p101.register(expires=0).status == 200
            assert p101.register().status == 200
            second = p101.wait_requests("NOTIFY", 2, call_id=watch.call_id)[1]
            assert b"<basic>open</basic>" in second.body
            times = [t for r, t in zip(p101.requests, p101.arrived_at)
                     if r.method == "NOTIFY" and r.call_id == watch.call_id]
            assert times[1] - times[0] >= 0.8, times
    finally:
        srv.stop()


def test_stored_messages_are_bounded_and_expire(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    set_config(srv, "system.yaml", "messages:\n  store_per_user: 20\n  keep_seconds: 604800\n",
               "messages:\n  store_per_user: 1\n  keep_seconds: 2\n")
    srv.start()
    try:
        with PyPhone(srv.port, "100", "100") as p100, PyPhone(srv.port, "102", "102") as p102:
            assert p100.message("102", "stale").status == 202
            assert p100.message("102", "no room").status == 480  # store_per_user: 1
            time.sleep(2.5)  # keep_seconds: 2 -- "stale" is gone, and its place is free
            assert p100.message("102", "fresh").status == 202
            assert p102.register().status == 200
            (m,) = p102.wait_requests("MESSAGE", 1)
            assert m.body == b"fresh"
            p100.message("102", "live")  # now online: straight through
            assert [r.body for r in p102.wait_requests("MESSAGE", 2)] == [b"fresh", b"live"]
    finally:
        srv.stop()
