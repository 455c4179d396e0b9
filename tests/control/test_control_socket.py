"""A real control server on a Unix socket, talked to by the real client."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from minisip.control import client
from minisip.control.api import MAX_FRAME, ControlError, Rows
from minisip.control.events import EventBus
from minisip.control.server import ControlSocketInUse, serve_control


async def echo(args: dict[str, Any]) -> Any:
    return args


async def explode(args: dict[str, Any]) -> Any:
    raise RuntimeError("disk on fire\nsecond line")


async def refuse(args: dict[str, Any]) -> Any:
    raise ControlError("no such user 999")


async def sleepy(args: dict[str, Any]) -> Any:
    await trio.sleep(args.get("seconds", 0))
    return "awake"


async def listing(args: dict[str, Any]) -> Any:
    # Rows of about 100 characters: `count` of them outgrow one frame many times over.
    return Rows([{"n": n, "pad": "x" * 80} for n in range(args.get("count", 0))])


async def bad_listing(args: dict[str, Any]) -> Any:
    return Rows([{"n": 1}, {"n": object()}])


HANDLERS = {"echo": echo, "explode": explode, "refuse": refuse, "sleepy": sleepy,
            "listing": listing, "bad_listing": bad_listing}


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    # AF_UNIX paths stop at 107 bytes; long test names can push tmp_path past it.
    if len(os.fsencode(tmp_path / "ctl.sock")) <= 100:
        yield tmp_path / "ctl.sock"
        return
    short = Path(tempfile.mkdtemp(prefix="msctl", dir="/tmp"))
    try:
        yield short / "ctl.sock"
    finally:
        shutil.rmtree(short, ignore_errors=True)


class Server:
    def __init__(self, path: Path, bus: EventBus) -> None:
        self.path = path
        self.bus = bus


@pytest.fixture
async def server(nursery: trio.Nursery, sock_path: Path) -> Server:
    bus = EventBus()
    await nursery.start(partial(serve_control, sock_path, HANDLERS, bus, subscriber_buffer=8))
    return Server(sock_path, bus)


@contextlib.asynccontextmanager
async def raw_websocket(path: Path) -> AsyncIterator[WebSocketConnection]:
    """A websocket with no client library on top, to send frames the client never would."""
    stream = await trio.open_unix_socket(os.fspath(path))
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, "localhost", "/")
        yield ws
        await ws.aclose()


async def test_request_returns_the_handler_result(server: Server) -> None:
    with trio.fail_after(5):
        assert await client.request(server.path, "echo", {"a": [1, "b"]}) == {"a": [1, "b"]}
        assert await client.request(server.path, "ping") == "pong"


async def test_one_connection_carries_many_requests_in_order(server: Server) -> None:
    with trio.fail_after(5):
        async with client.connect(server.path) as conn:
            for n in range(20):
                assert await conn.request("echo", {"n": n}) == {"n": n}


BAD_FRAMES = [
    ("not json", None, "not JSON"),
    ("[1]", None, "must be a JSON object"),
    ('{"id": 3}', 3, "missing 'op'"),
    ('{"id": 4, "op": "nope"}', 4, "unknown op 'nope'"),
    ('{"id": 5, "op": "echo", "args": "x"}', 5, "'args' must be an object"),
    ('{"id": 6, "op": "subscribe", "args": {"topics": ["weather"]}}', 6, "unknown topic"),
    (b"\xff binary", None, "not UTF-8"),
]


async def test_malformed_frames_get_error_replies_and_the_connection_keeps_working(
    server: Server,
) -> None:
    with trio.fail_after(5):
        async with raw_websocket(server.path) as ws:
            for frame, rid, words in BAD_FRAMES:
                await ws.send_message(frame)
                reply = json.loads(await ws.get_message())
                assert reply["id"] == rid and reply["ok"] is False
                assert words in reply["error"]
                await ws.send_message('{"id": 99, "op": "ping"}')
                pong = json.loads(await ws.get_message())
                assert pong == {"id": 99, "ok": True, "result": "pong"}
        assert await client.request(server.path, "ping") == "pong"


async def test_a_handler_exception_becomes_a_one_line_error_and_is_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5), caplog.at_level(logging.ERROR, "minisip.control"):
        async with client.connect(server.path) as conn:
            with pytest.raises(ControlError) as info:
                await conn.request("explode")
            assert info.value.message == "explode failed: RuntimeError: disk on fire second line"
            with pytest.raises(ControlError, match="^no such user 999$"):
                await conn.request("refuse")
            assert await conn.request("ping") == "pong"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "explode" in tracebacks[0].getMessage()


async def test_the_socket_is_only_for_its_owner(server: Server) -> None:
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_a_stale_socket_file_is_replaced(sock_path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.fspath(sock_path))  # a file nobody listens on: a crashed server's
    dead.close()
    with trio.fail_after(5):
        with pytest.raises(client.ServerNotRunning):
            await client.request(sock_path, "ping")
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock_path, HANDLERS, EventBus())
            assert await client.request(sock_path, "ping") == "pong"
            nursery.cancel_scope.cancel()


async def test_a_second_server_on_a_live_path_is_refused(server: Server) -> None:
    with trio.fail_after(5):
        with pytest.raises(ControlSocketInUse, match="already listening"):
            await serve_control(server.path, HANDLERS, EventBus())
        assert await client.request(server.path, "ping") == "pong"


async def test_a_regular_file_at_the_path_is_not_clobbered(sock_path: Path) -> None:
    sock_path.write_text("precious")
    with trio.fail_after(5), pytest.raises(ValueError, match="not a socket"):
        await serve_control(sock_path, HANDLERS, EventBus())
    assert sock_path.read_text() == "precious"


async def test_the_socket_file_is_removed_on_shutdown(sock_path: Path) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock_path, HANDLERS, EventBus())
            async with client.connect(sock_path) as conn:
                assert await conn.request("ping") == "pong"
                nursery.cancel_scope.cancel()
        assert not sock_path.exists()


async def test_a_client_that_never_handshakes_does_not_stall_others(server: Server) -> None:
    with trio.fail_after(5):
        junk = await trio.open_unix_socket(os.fspath(server.path))
        await junk.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        silent = await trio.open_unix_socket(os.fspath(server.path))
        assert await client.request(server.path, "ping") == "pong"
        await junk.aclose()
        await silent.aclose()


async def test_nothing_listening_is_server_not_running(sock_path: Path) -> None:
    with trio.fail_after(5):
        with pytest.raises(client.ServerNotRunning, match="no minisip server"):
            await client.request(sock_path, "ping")


async def test_a_slow_handler_times_out_on_the_client(server: Server) -> None:
    with trio.fail_after(5), pytest.raises(client.ControlTimeout, match="no answer to 'sleepy'"):
        await client.request(server.path, "sleepy", {"seconds": 10}, timeout=0.2)


async def test_subscribers_get_events_published_after_subscribing_through_their_filter(
    server: Server,
) -> None:
    bus = server.bus
    with trio.fail_after(5):
        bus.publish("registrations", "registration", {"user": "100"})  # before: not seen
        async with (
            client.subscribe(server.path, ["registrations", "calls"], {"user": "100"}) as by_user,
            client.subscribe(server.path, ["calls"], {"call_id": "c2"}) as by_call,
        ):
            bus.publish("registrations", "registration", {"user": "101"})
            bus.publish("registrations", "registration", {"user": "100", "expires": 3600})
            bus.publish("calls", "ringing", {"call_id": "c1", "users": ["100", "102"]})
            bus.publish("calls", "ringing", {"call_id": "c2", "users": ["101", "102"]})
            bus.publish("reloads", "reload", {"user": "100"})
            bus.publish("calls", "hangup", {"call_id": "c1", "users": ["100", "102"]})
            got_user = [await by_user.next_event() for _ in range(3)]
            got_call = await by_call.next_event()
    assert [(e["event"], e["topic"], e["data"]) for e in got_user] == [
        ("registration", "registrations", {"user": "100", "expires": 3600}),
        ("ringing", "calls", {"call_id": "c1", "users": ["100", "102"]}),
        ("hangup", "calls", {"call_id": "c1", "users": ["100", "102"]}),
    ]
    assert isinstance(got_user[0]["ts"], float)
    assert got_call["data"]["call_id"] == "c2"


async def test_unsubscribe_stops_events_and_frees_the_bus(server: Server) -> None:
    with trio.fail_after(5):
        async with client.subscribe(server.path, ["calls"]) as conn:
            assert server.bus.wants("calls")
            assert await conn.request("unsubscribe") == {"unsubscribed": True}
            assert not server.bus.wants("calls")
        async with client.subscribe(server.path, ["calls"]):
            pass
        await trio.testing.wait_all_tasks_blocked()
        assert server.bus.subscriber_count() == 0  # closing the connection unsubscribes


async def test_a_slow_subscriber_never_blocks_publish_and_learns_how_many_it_lost(
    server: Server,
) -> None:
    with trio.fail_after(5):
        async with client.subscribe(server.path, ["sip"]) as conn:
            # No checkpoint in this loop: the server's pump cannot run, as with a
            # reader far slower than the SIP traffic. The buffer holds 8.
            for n in range(100):
                server.bus.publish("sip", "message", {"n": n})
            got = []
            while not got or got[-1]["event"] != "dropped":
                got.append(await conn.next_event())
            server.bus.publish("sip", "message", {"n": 100})
            after = await conn.next_event()
    # 8 queued, plus one handed straight to the pump if it was already waiting.
    delivered = [e["data"]["n"] for e in got[:-1]]
    assert delivered == list(range(len(delivered))) and len(delivered) in (8, 9)
    assert got[-1]["data"] == {"count": 100 - len(delivered)}
    assert after["data"] == {"n": 100}


def test_call_works_from_plain_synchronous_code(sock_path: Path) -> None:
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def run_server() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                state["stop"] = nursery.cancel_scope
                state["token"] = trio.lowlevel.current_trio_token()
                await nursery.start(serve_control, sock_path, HANDLERS, EventBus())
                ready.set()

    thread = threading.Thread(target=trio.run, args=(run_server,), daemon=True)
    thread.start()
    try:
        assert ready.wait(5)
        assert client.call(sock_path, "echo", {"x": 1}) == {"x": 1}
        with pytest.raises(ControlError, match="unknown op"):
            client.call(sock_path, "nope")
    finally:
        trio.from_thread.run_sync(state["stop"].cancel, trio_token=state["token"])
        thread.join(5)
    with pytest.raises(client.ServerNotRunning):
        client.call(sock_path, "ping", timeout=1)


async def test_a_listing_larger_than_a_frame_arrives_whole_in_pages(server: Server) -> None:
    count = 3 * MAX_FRAME // 100  # about three frames' worth, sent as a dozen pages
    with trio.fail_after(10):
        async with client.connect(server.path) as conn:
            rows = await conn.request("listing", {"count": count})
            assert [r["n"] for r in rows] == list(range(count))
            assert await conn.request("listing", {"count": 0}) == []
            assert await conn.request("echo", {"after": 1}) == {"after": 1}  # still in step


async def test_listing_pages_stay_under_the_frame_limit_on_the_wire(server: Server) -> None:
    with trio.fail_after(10):
        async with raw_websocket(server.path) as ws:
            await ws.send_message(json.dumps({"id": 7, "op": "listing",
                                              "args": {"count": 10_000}}))
            frames = []
            while True:
                frame = json.loads(await ws.get_message())
                frames.append(frame)
                if not frame["more"]:
                    break
    assert len(frames) > 10 and all(f["id"] == 7 and f["ok"] for f in frames)
    assert sum(len(f["rows"]) for f in frames) == 10_000
    assert max(len(json.dumps(f)) for f in frames) < MAX_FRAME // 2


async def test_a_row_with_no_json_form_ends_the_listing_with_an_error(server: Server) -> None:
    with trio.fail_after(5):
        async with client.connect(server.path) as conn:
            with pytest.raises(ControlError, match="not JSON"):
                await conn.request("bad_listing")
            assert await conn.request("ping") == "pong"


async def test_a_handler_exception_is_a_fault_the_server_counts(nursery: trio.Nursery,
                                                                sock_path: Path) -> None:
    from minisip.faults import Faults
    faults = Faults()
    await nursery.start(partial(serve_control, sock_path, HANDLERS, EventBus(),
                                on_fault=faults.record))
    with trio.fail_after(5):
        with pytest.raises(ControlError):
            await client.request(sock_path, "explode")
        assert await client.request(sock_path, "ping") == "pong"
    assert faults.count == 1 and faults.by_kind == {"control": 1}
    assert faults.last is not None and "disk on fire" in faults.last.text
