"""TCP listener limits against hostile peers, on real loopback sockets (deadlines shortened)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from minisip.sip.peer import Peer
from minisip.transport import stream
from minisip.transport.stream import StreamListener

OPTIONS = (b"OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKs1\r\n"
           b"From: <sip:a@pbx>;tag=1\r\nTo: <sip:pbx>\r\nCall-ID: s1\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")


class Server:
    def __init__(self, listener: StreamListener) -> None:
        self.listener = listener
        self.messages: list[tuple[bytes, Peer]] = []

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.listener.port)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setattr(stream, "MESSAGE_TIMEOUT", 0.6)
    monkeypatch.setattr(stream, "MAX_CONNECTIONS_PER_SOURCE", 3)
    listener = StreamListener("127.0.0.1", 0, "tcp")
    await listener.bind()
    srv = Server(listener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, lambda m, p: srv.messages.append((m, p)),
                           lambda: None)
        yield srv
        nursery.cancel_scope.cancel()


async def closed_by_server(s: trio.SocketStream, within: float) -> bool:
    with trio.move_on_after(within):
        try:
            while await s.receive_some(100):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def test_a_slow_drip_is_cut_at_the_whole_message_deadline(server: Server) -> None:
    s = await server.connect()
    start = trio.current_time()

    async def drip() -> None:
        for b in OPTIONS:  # one byte every 0.1 s: each arrives well within any per-read bound
            await s.send_all(bytes([b]))
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drip)
        assert await closed_by_server(s, 5)
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start < 2
    assert server.listener.timed_out == 1 and not server.messages
    assert not server.listener.connections


async def test_a_message_in_pieces_within_the_deadline_is_delivered(server: Server) -> None:
    s = await server.connect()
    for i in range(0, len(OPTIONS), 40):
        await s.send_all(OPTIONS[i:i + 40])
        await trio.sleep(0.05)
    with trio.fail_after(2):
        while not server.messages:
            await trio.sleep(0.01)
    assert server.messages[0][0] == OPTIONS


async def test_idle_after_a_message_is_allowed_silence_before_one_is_not(
        server: Server) -> None:
    talker = await server.connect()
    await talker.send_all(OPTIONS)
    silent = await server.connect()
    assert await closed_by_server(silent, 3)
    assert not await closed_by_server(talker, 1.0)  # past MESSAGE_TIMEOUT, still open
    assert len(server.listener.connections) == 1


async def test_one_source_gets_a_limited_number_of_connections(server: Server) -> None:
    conns = [await server.connect() for _ in range(3)]
    for c in conns:
        await c.send_all(OPTIONS)
    with trio.fail_after(2):
        while len(server.messages) < 3:
            await trio.sleep(0.01)
    extra = await server.connect()
    assert await closed_by_server(extra, 2)
    assert server.listener.rejected == 1
    await conns[0].aclose()
    with trio.fail_after(2):
        while len(server.listener.connections) > 2:
            await trio.sleep(0.01)
    again = await server.connect()
    await again.send_all(OPTIONS)
    with trio.fail_after(2):
        while len(server.messages) < 4:
            await trio.sleep(0.01)
