"""The error boundaries with the real wiring (tests/pbx/harness.py): a bug met while
handling one message or timer is counted and shown by status, the request gets 500,
and everything else goes on."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minisip.media.relay import MediaIO
from minisip.transaction import events as ev
from tests.pbx.harness import Harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_a_bug_in_the_registrar_is_a_500_a_counted_fault_and_nothing_more(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    phone = h.phone("100")
    real = h.server.registrar.handle
    calls = {"n": 0}

    def buggy(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the authenticated REGISTER (the 401 is stateless)
            raise ZeroDivisionError("registrar bug")
        return real(*args)

    h.pbx._methods["REGISTER"] = buggy
    assert phone.register().status == 500
    status = h.server.status({})
    assert status["faults"]["count"] == 1
    last = status["faults"]["last"]
    assert last["kind"] == "sip" and "ZeroDivisionError: registrar bug" in last["text"]
    assert phone.register().status == 200  # the next one is served
    h.settle()
    assert h.leftovers() == {"faults": 1}


def test_events_queued_behind_a_failing_one_still_run(h: Harness,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    alice = h.phone("100", transport="tcp")
    bob, carol = h.phone("101"), h.phone("102")
    for p in (alice, bob, carol):
        assert p.register().status == 200
    alice.call("101")
    alice.call("102")
    real = h.pbx._events[ev.TransportFailure]
    seen: list[object] = []

    def first_fails(event: Any, now: float) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("bug in one event")
        real(event, now)

    monkeypatch.setitem(h.pbx._events, ev.TransportFailure, first_fails)
    h.disconnect(alice)  # both INVITE server transactions fail at once
    assert h.faults.count == 1 and len(seen) == 2
    assert len(h.calls.calls) == 1  # the second call was released; the first waits
    h.settle()
    assert h.leftovers() == {"faults": 1}


def test_a_bug_in_a_pbx_timer_is_counted_and_the_next_timers_fire(h: Harness) -> None:
    fired: list[str] = []

    def bug() -> None:
        raise LookupError("timer bug")

    h.pbx.timers.schedule(h.clock.now + 1, bug)
    h.pbx.timers.schedule(h.clock.now + 1, fired.append, "second")
    h.pbx.timers.schedule(h.clock.now + 2, fired.append, "third")
    h.advance(3)
    assert fired == ["second", "third"]
    assert h.faults.by_kind == {"timer": 1}


def test_a_bug_in_an_rtp_handler_is_counted_by_the_media_loop() -> None:
    from minisip.faults import Faults
    faults = Faults()
    io = MediaIO(use_epoll=False, on_fault=faults.record)
    try:
        raise ValueError("handler bug")
    except ValueError as exc:
        io._handler_failed(7, exc)
    assert faults.by_kind == {"media": 1} and io.handler_errors == 1


def test_the_same_fault_again_is_logged_without_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    from minisip.faults import Faults
    faults = Faults()
    for _ in range(3):
        try:
            {}["missing"]  # noqa: B018
        except KeyError as exc:
            faults.record("sip", exc, "peer")
    with_tb = [r for r in caplog.records if r.exc_info]
    assert faults.count == 3 and len(with_tb) == 1
    assert "3 times" in caplog.records[-1].getMessage()
