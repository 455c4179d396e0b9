"""TCP and TLS listeners: one task per connection, framed by Content-Length.

Connections are accepted, or opened on demand: ``send`` to a peer we have no
connection with (a provider or trunk over TCP/TLS) dials it in the listener's
nursery and queues the message until the connection is up; a TLS client
verifies the peer's certificate against the system's CAs (``SSL_CERT_FILE``
adds one) for the name ``server_name(peer)`` gives. Each connection reads into a
``StreamFramer`` and hands whole messages up synchronously; writes go through a
bounded queue drained by the connection's own writer task, so a peer that stops
reading cannot block anyone else (its queue fills, and the connection is dropped).

Bounded against hostile peers: one source address holds at most
``MAX_CONNECTIONS_PER_SOURCE`` accepted connections; a TLS handshake, the first
message after a peer connected, and every message once its first byte arrived
must be complete within their deadlines (a whole-message deadline, so a drip of
one byte a second cannot hold half a message forever); an idle connection between
messages is closed after ``IDLE_TIMEOUT`` (phones keep theirs open with CRLF pings
or re-REGISTERs).
A connection that closes or cannot be opened, for whatever reason, is reported
to ``on_closed``: the transactions that needed it fail at once (RFC 3261 17.1.4).
"""
from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..sip.errors import BadMessage
from ..sip.parser import PING, StreamFramer
from ..sip.peer import Peer

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 3600.0  # longer than any registration interval
MESSAGE_TIMEOUT = 10.0  # a message must be whole this long after its first byte
SEND_QUEUE = 256
MAX_CONNECTIONS = 10_000
#: an office NAT puts many phones behind one address: generous, but a bound
MAX_CONNECTIONS_PER_SOURCE = 100

OnMessage = Callable[[bytes, Peer], None]
T = TypeVar("T")


class Connection:
    def __init__(self, stream: trio.abc.Stream | None, peer: Peer,
                 local: tuple[str, int]) -> None:
        self.stream = stream
        self.peer = peer
        self.local = local  #: our address on this connection, for Via and Contact
        #: the peer connected to us (it owes us a message soon); False: we dialed it
        self.inbound = stream is not None
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](SEND_QUEUE)
        self.cancel_scope = trio.CancelScope()

    def send(self, data: bytes) -> bool:
        try:
            self.send_channel.send_nowait(data)
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.cancel_scope.cancel()  # a peer that does not read is dropped
            return False


class StreamListener:
    """A TCP or TLS listener (``ssl_context`` set) on one address."""

    def __init__(self, host: str, port: int, transport: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.transport = host, port, transport
        self.ssl_context = ssl_context
        self.connections: dict[Peer, Connection] = {}
        self._per_source: dict[str, int] = {}  #: accepted connections per address
        self.accepted = 0
        self.rejected = 0
        self.timed_out = 0  #: closed because a message did not complete in time
        self.dialed = 0
        self.sock: trio.socket.SocketType | None = None
        #: the name a TLS peer's certificate must carry (its host name in the config)
        self.server_name: Callable[[Peer], str | None] = lambda peer: None
        self._nursery: trio.Nursery | None = None
        self._handlers: tuple[OnMessage, Callable[[], None]] | None = None
        self.on_closed: Callable[[Peer], None] | None = None

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    async def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((self.host, self.port))
        sock.listen(512)
        self.sock = sock
        self.port = sock.getsockname()[1]

    def send(self, data: bytes, peer: Peer) -> bool:
        conn = self.connections.get(peer) or self._dial(peer)
        return conn.send(data) if conn is not None else False

    def _dial(self, peer: Peer) -> Connection | None:
        """A new outgoing connection to ``peer``, connecting in the background."""
        if self._nursery is None or self._handlers is None or peer.transport != self.transport \
                or len(self.connections) >= MAX_CONNECTIONS or (":" in peer.host) != (
                    ":" in self.host):
            return None
        conn = Connection(None, peer, (self.host, self.port))
        self.connections[peer] = conn
        self.dialed += 1
        self._nursery.start_soon(self._connect, conn, *self._handlers)
        return conn

    async def _connect(self, conn: Connection, on_message: OnMessage,
                       on_batch_end: Callable[[], None]) -> None:
        peer = conn.peer
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                tcp = await trio.open_tcp_stream(peer.host, peer.port)
        except (OSError, trio.TooSlowError) as exc:
            log.info("%s: cannot connect: %s", peer, exc)
            self.connections.pop(peer, None)
            conn.send_channel.close()
            if self.on_closed is not None:  # refused: what waited for it fails now
                self.on_closed(peer)
            return
        # Via and Contact name our listening port: new requests come to it, not here.
        conn.local = (tcp.socket.getsockname()[0], self.port)
        stream: trio.abc.Stream = tcp
        if self.transport == "tls":
            stream = trio.SSLStream(tcp, ssl.create_default_context(),
                                    server_hostname=self.server_name(peer) or peer.host)
        await self._run(conn, stream, on_message, on_batch_end)

    def local_for(self, peer: Peer) -> tuple[str, int] | None:
        conn = self.connections.get(peer)  # (a connection still dialing: not known yet)
        return conn.local if conn is not None and conn.stream is not None else None

    async def serve(self, on_message: OnMessage, on_batch_end: Callable[[], None],
                    on_closed: Callable[[Peer], None] | None = None) -> None:
        assert self.sock is not None
        self.on_closed = on_closed
        listener = trio.SocketListener(self.sock)
        async with trio.open_nursery() as nursery:
            self._nursery, self._handlers = nursery, (on_message, on_batch_end)
            async with listener:
                while True:
                    stream = await listener.accept()
                    if len(self.connections) >= MAX_CONNECTIONS:
                        self.rejected += 1
                        await trio.aclose_forcefully(stream)
                        continue
                    self.accepted += 1
                    nursery.start_soon(self._handle, stream, on_message, on_batch_end)

    async def _handle(self, tcp: trio.SocketStream, on_message: OnMessage,
                      on_batch_end: Callable[[], None]) -> None:
        try:
            host, port = tcp.socket.getpeername()[:2]
            local = tcp.socket.getsockname()[:2]
        except OSError:
            await trio.aclose_forcefully(tcp)
            return
        if self._per_source.get(host, 0) >= MAX_CONNECTIONS_PER_SOURCE:
            self.rejected += 1
            await trio.aclose_forcefully(tcp)
            return
        self._per_source[host] = self._per_source.get(host, 0) + 1
        peer = Peer(self.transport, host, port)
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            stream = trio.SSLStream(tcp, self.ssl_context, server_side=True)
        conn = Connection(stream, peer, local)
        self.connections[peer] = conn
        try:
            await self._run(conn, stream, on_message, on_batch_end)
        finally:
            n = self._per_source.pop(host) - 1
            if n:
                self._per_source[host] = n

    async def _run(self, conn: Connection, stream: trio.abc.Stream, on_message: OnMessage,
                   on_batch_end: Callable[[], None]) -> None:
        """Handshake (TLS), then read and write ``conn`` until either side ends it."""
        conn.stream = stream
        peer = conn.peer
        try:
            with conn.cancel_scope:
                if isinstance(stream, trio.SSLStream):
                    done = False
                    with trio.move_on_after(HANDSHAKE_TIMEOUT):
                        done = await _guard(stream.do_handshake(), False) is None
                    if not done:
                        return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn)
                    await self._reader(conn, on_message, on_batch_end)
                    nursery.cancel_scope.cancel()
        except Exception:  # one connection's trouble never stops the listener
            log.exception("%s: connection failed", peer)
        finally:
            current = self.connections.get(peer) is conn
            if current:
                del self.connections[peer]
            conn.send_channel.close()
            if current and self.on_closed is not None:
                self.on_closed(peer)
            await trio.aclose_forcefully(stream)

    async def _reader(self, conn: Connection, on_message: OnMessage,
                      on_batch_end: Callable[[], None]) -> None:
        framer = StreamFramer()
        stream = conn.stream
        assert stream is not None
        # A peer connects to send something: its first message is due at once (a
        # connection we dialed waits for answers like an idle one). Later, idle time
        # between messages is allowed for long; half a message is not.
        waiting_for_message = conn.inbound
        deadline = trio.current_time() + (MESSAGE_TIMEOUT if conn.inbound else IDLE_TIMEOUT)
        while True:
            data = None
            with trio.move_on_at(deadline):
                data = await _guard(stream.receive_some(65536))
            if data is None:
                if waiting_for_message:
                    self.timed_out += 1
                    log.info("%s: closing, no whole message within %g s", conn.peer,
                             MESSAGE_TIMEOUT)
                return
            if not data:
                return
            started = framer.pending
            framer.feed(data)
            whole = 0
            try:
                while (msg := framer.next_message()) is not None:
                    whole += 1
                    if msg is PING:
                        conn.send(b"\r\n")  # RFC 5626 pong
                    else:
                        on_message(msg, conn.peer)
            except BadMessage as exc:  # framing is lost: nothing more to read here
                log.info("%s: closing, %s", conn.peer, exc.reason)
                return
            finally:
                on_batch_end()
            now = trio.current_time()
            if not framer.pending:
                if whole:
                    deadline, waiting_for_message = now + IDLE_TIMEOUT, False
            elif whole or not started:  # a new message began in these bytes
                deadline, waiting_for_message = now + MESSAGE_TIMEOUT, True

    async def _writer(self, conn: Connection) -> None:
        stream = conn.stream
        assert stream is not None
        async for data in conn.receive_channel:
            if await _guard(stream.send_all(data), False) is False:
                conn.cancel_scope.cancel()
                return


_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


async def _guard(op: Awaitable[T], failed: T = b"") -> T:  # type: ignore[assignment]
    """Await a stream operation; a peer that broke the connection gives ``failed``."""
    try:
        return await op
    except _BROKEN:
        return failed
