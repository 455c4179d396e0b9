"""The control wire protocol and the event bus, without sockets."""
from __future__ import annotations

import json
import random

import pytest
import trio
import trio.testing

from minisip.control import api
from minisip.control.events import EventBus
from minisip.sip.errors import BadMessage

BAD_FRAMES = [
    # (frame, id echoed in the error reply, words in the error)
    ("not json", None, "not JSON"),
    ("", None, "not JSON"),
    ("[1, 2]", None, "JSON object"),
    ('"ping"', None, "JSON object"),
    ('{"id": 3}', 3, "missing 'op'"),
    ('{"id": "a", "op": 7}', "a", "'op' must be a string"),
    ('{"id": 4, "op": ""}', 4, "'op' must be"),
    ('{"id": 5, "op": "echo", "args": [1]}', 5, "'args' must be an object"),
    ('{"id": true, "op": "ping"}', None, "'id' must be"),
    ('{"id": [1], "op": "ping"}', None, "'id' must be"),
    ('{"id": 1, "op": "ping", "x": NaN}', None, "not JSON"),
    ("[" * 100_000 + "]" * 100_000, None, "nested too deeply"),
    ('{"id": ' + "9" * 5000 + ', "op": "ping"}', None, "not JSON"),
    (b"\xff\xfe{}", None, "not UTF-8"),
]


@pytest.mark.parametrize(("frame", "rid", "words"), BAD_FRAMES)
def test_bad_request_frames_raise_bad_message_with_the_id_when_readable(
    frame: str | bytes, rid: object, words: str
) -> None:
    with pytest.raises(BadMessage) as info:
        api.parse_request_untrusted(frame)
    assert words in info.value.reason
    assert getattr(info.value, "request_id", None) == rid
    reply = json.loads(api.encode_error(getattr(info.value, "request_id", None), info.value.reason))
    assert reply["ok"] is False and "\n" not in reply["error"]


def test_a_good_request_parses_with_args_defaulting_to_an_empty_object() -> None:
    assert api.parse_request_untrusted('{"id": 1, "op": "status"}') == api.Request(1, "status", {})
    req = api.parse_request_untrusted(b'{"id": "x", "op": "user", "args": {"n": "100"}}')
    assert req == api.Request("x", "user", {"n": "100"})


def test_random_frames_only_ever_raise_bad_message() -> None:
    rng = random.Random(1234)
    seeds = ['{"id": 1, "op": "ping", "args": {"a": [1, 2.5, null, "x"]}}', *[
        f if isinstance(f, str) else f.decode("latin-1") for f, _, _ in BAD_FRAMES[:11]
    ]]
    for _ in range(3000):
        base = bytearray(rng.choice(seeds).encode())
        for _ in range(rng.randint(1, 4)):
            if base and rng.random() < 0.5:
                del base[rng.randrange(len(base))]
            else:
                base.insert(rng.randint(0, len(base)), rng.randrange(256))
        for frame in (bytes(base), bytes(base).decode("utf-8", "replace")):
            try:
                api.parse_request_untrusted(frame)
            except BadMessage:
                pass


SUBSCRIBE_ARGS = [
    ({}, "'topics'"),
    ({"topics": "calls"}, "'topics'"),
    ({"topics": []}, "'topics'"),
    ({"topics": [1]}, "'topics'"),
    ({"topics": ["weather"]}, "unknown topic 'weather'"),
    ({"topics": ["calls"], "filter": []}, "'filter' must be an object"),
    ({"topics": ["calls"], "filter": {"colour": "red"}}, "unknown filter key"),
    ({"topics": ["calls"], "filter": {"user": 100}}, "non-empty string"),
    ({"topics": ["calls"], "extra": 1}, "unknown argument"),
]


@pytest.mark.parametrize(("args", "words"), SUBSCRIBE_ARGS)
def test_bad_subscribe_args_are_named(args: dict, words: str) -> None:
    with pytest.raises(BadMessage, match=words):
        api.parse_subscribe_args_untrusted(args)


def test_require_arg_checks_presence_and_type() -> None:
    assert api.require_arg({"user": "100"}, "user", str) == "100"
    assert api.require_arg({}, "n", int, default=3) == 3
    with pytest.raises(BadMessage, match="missing argument 'user'"):
        api.require_arg({}, "user", str)
    with pytest.raises(BadMessage, match="must be an integer, not a boolean"):
        api.require_arg({"n": True}, "n", int)


# --- the event bus ------------------------------------------------------------


def test_publish_with_no_subscribers_is_a_no_op_and_wants_says_so() -> None:
    bus = EventBus()
    assert not bus.wants("sip")
    bus.publish("sip", "message", {"x": 1})
    with bus.subscribe(["sip"]):
        assert bus.wants("sip") and not bus.wants("calls")
    assert not bus.wants("sip")
    assert bus.subscriber_count() == 0


async def test_subscriber_gets_events_in_order_through_its_filter() -> None:
    bus = EventBus()
    with bus.subscribe(["calls", "registrations"], {"user": "100"}) as sub:
        bus.publish("calls", "ringing", {"users": ["101", "100"], "call_id": "c1"})
        bus.publish("calls", "ringing", {"users": ["101", "102"], "call_id": "c2"})
        bus.publish("registrations", "registration", {"user": "100"})
        bus.publish("reloads", "reload", {"user": "100"})
        bus.publish("registrations", "unregistration", {"user": "101"})
        got = [sub.receive_nowait()[:3] for _ in range(2)]
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
    assert got == [
        ("ringing", "calls", {"users": ["101", "100"], "call_id": "c1"}),
        ("registration", "registrations", {"user": "100"}),
    ]


async def test_a_full_subscriber_counts_drops_and_reports_them_where_the_gap_is() -> None:
    bus = EventBus()
    with bus.subscribe(["sip"], buffer=3) as sub:
        for n in range(10):
            bus.publish("sip", "message", {"n": n})
        first = [sub.receive_nowait()[2]["n"] for _ in range(2)]
        bus.publish("sip", "message", {"n": 10})  # room now, but still behind: dropped
        rest = [sub.receive_nowait()[:3] for _ in range(2)]
        bus.publish("sip", "message", {"n": 11})
        after = sub.receive_nowait()[2]
    assert first == [0, 1]
    assert rest == [("message", "sip", {"n": 2}), ("dropped", None, {"count": 8})]
    assert after == {"n": 11}
    assert sub.dropped_total == 8


async def test_iterating_a_closed_subscriber_ends() -> None:
    bus = EventBus()
    sub = bus.subscribe(["calls"])
    async with trio.open_nursery() as nursery:
        seen: list[str] = []

        async def reader() -> None:
            async for event, _, _, _ in sub:
                seen.append(event)

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        bus.publish("calls", "answered", {})
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
    assert seen == ["answered"]


def test_importing_the_client_leaves_trio_and_websockets_unloaded() -> None:
    # The CLI imports the client on every start; trio + trio_websocket cost ~120 ms.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, minisip.control.client; "
        "print(sorted(m for m in ('trio', 'trio_websocket', 'wsproto') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_listing_is_pages_under_the_frame_limit_the_last_saying_no_more() -> None:
    from minisip.control.api import MAX_FRAME, encode_rows, parse_frame_untrusted

    assert [json.loads(f) for f in encode_rows(3, [])] == [
        {"id": 3, "ok": True, "more": False, "rows": []}]
    rows = [{"n": n, "text": "é" * 50} for n in range(5000)]
    frames = [parse_frame_untrusted(f) for f in encode_rows("x", rows, page_chars=10_000)]
    assert [f["more"] for f in frames] == [True] * (len(frames) - 1) + [False]
    assert [r for f in frames for r in f["rows"]] == rows
    with pytest.raises(ValueError, match="does not fit"):
        list(encode_rows(1, [{"big": "x" * MAX_FRAME}]))
    with pytest.raises(BadMessage, match="'rows' list"):
        parse_frame_untrusted('{"id": 1, "ok": true, "rows": {}, "more": false}')
