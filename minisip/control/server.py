"""The control socket: a websocket server on a Unix domain socket.

Theory of operation
-------------------
``serve_control`` binds ``path`` (mode 0600: only the user running the PBX may
talk to it), then serves each connection in its own nursery: the websocket
reader task, the request loop and, once the client subscribed, one task
pumping events from its ``Subscriber`` to the socket.

Requests on one connection are handled one at a time, in order, so replies come
back in request order; a client wanting parallel requests opens more
connections. Nothing a client does reaches past its connection: unreadable
frames and failing handlers become error replies, and any other failure of a
connection is logged and ends only that connection.

The socket is thin (house rule 9): ``handlers`` (op name -> ``async f(args)``)
decide; this module only translates. A handler signals an expected failure by
raising ``ControlError`` or ``BadMessage`` (the message goes to the client as
is); anything else is a bug, logged with its traceback and answered with one
line.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from minisip.control import api
from minisip.control.api import ControlError, Request
from minisip.control.events import DEFAULT_BUFFER, EventBus, Subscriber
from minisip.sip.errors import BadMessage

__all__ = ["ControlSocketInUse", "Handler", "serve_control"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
OnFault = Callable[[str, BaseException, str], object]

HANDSHAKE_TIMEOUT: Final = 5.0
CLOSE_TIMEOUT: Final = 2.0
#: Longest AF_UNIX path on Linux is 107 bytes plus the NUL.
_MAX_UNIX_PATH: Final = 107


class ControlSocketInUse(RuntimeError):
    """Another live server answers on the socket path: we refuse to steal it."""


async def serve_control(
    path: Path,
    handlers: Mapping[str, Handler],
    bus: EventBus,
    *,
    subscriber_buffer: int = DEFAULT_BUFFER,
    on_fault: OnFault | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API on the Unix socket ``path`` until cancelled.

    ``task_status.started(path)`` is called once clients can connect. Raises
    ``ControlSocketInUse`` if a server already answers there, ``ValueError``
    if ``path`` is too long for a Unix socket or is not a socket file. A handler's
    unexpected exception goes to ``on_fault`` (the server's ``Faults.record``).
    """
    clash = set(handlers) & api.BUILTIN_OPS
    if clash:
        raise ValueError(f"handler names clash with built-in ops: {sorted(clash)}")
    path = Path(path)
    listener, inode = await _bind_unix(path)
    try:
        async with listener, trio.open_nursery() as nursery:
            conn = _ConnectionFactory(handlers, bus, subscriber_buffer, on_fault)
            await nursery.start(trio.serve_listeners, conn.handle_stream, [listener])
            log.info("control socket listening on %s", path)
            task_status.started(path)
    finally:
        _unlink_if_ours(path, inode)


async def _bind_unix(path: Path) -> tuple[trio.SocketListener, int]:
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ValueError(f"control socket path longer than {_MAX_UNIX_PATH} bytes: {path}")
    await _remove_stale(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        # bind() creates the file with 0777 & ~umask: narrow the umask so the
        # socket is never reachable by others, not even between bind and chmod.
        # (umask is per-process; this window is one system call long.)
        old = os.umask(0o177)
        try:
            await sock.bind(os.fspath(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock), inode


async def _remove_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ValueError(f"{path} exists and is not a socket; not replacing it")
    try:
        with trio.fail_after(1.0):
            stream = await trio.open_unix_socket(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale control socket %s", path)
        path.unlink(missing_ok=True)
        return
    except trio.TooSlowError:
        # Backlog full: someone is there, just busy.
        raise ControlSocketInUse(f"a server is already listening on {path}") from None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)
            return
        raise
    await stream.aclose()
    raise ControlSocketInUse(f"a server is already listening on {path}")


def _unlink_if_ours(path: Path, inode: int) -> None:
    # A newer server may have replaced the file meanwhile: leave its socket be.
    try:
        if os.lstat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


class _ConnectionFactory:
    def __init__(self, handlers: Mapping[str, Handler], bus: EventBus, buffer: int,
                 on_fault: OnFault | None = None) -> None:
        self.handlers = handlers
        self.bus = bus
        self.buffer = buffer
        self.on_fault = on_fault

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        # serve_listeners lets a handler's exception kill the whole server:
        # stop everything but cancellation here.
        try:
            await self._handle_stream(stream)
        except Exception:
            log.exception("control connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:
            ws: WebSocketConnection | None = None
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                request = await wrap_server_stream(nursery, stream, max_message_size=api.MAX_FRAME)
                ws = await request.accept()
            if ws is None:
                log.debug("control client did not finish the websocket handshake")
                nursery.cancel_scope.cancel()
                return
            session = _Session(self, ws, nursery)
            try:
                await session.run()
            finally:
                session.unsubscribe()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose()
                nursery.cancel_scope.cancel()


def _pages(req: Request, result: api.Rows) -> Iterator[str]:
    try:
        yield from api.encode_rows(req.id, result.rows)
    except (TypeError, ValueError) as exc:
        log.error("control op %r returned a row with no JSON form: %s", req.op, exc)
        yield api.encode_error(req.id, f"{req.op} failed: a row is not JSON: {exc}")


class _Session:
    """One client connection: reads requests, answers them, pumps events."""

    def __init__(
        self, factory: _ConnectionFactory, ws: WebSocketConnection, nursery: trio.Nursery
    ) -> None:
        self.handlers = factory.handlers
        self.bus = factory.bus
        self.buffer = factory.buffer
        self.on_fault = factory.on_fault
        self.ws = ws
        self.nursery = nursery
        self.subscriber: Subscriber | None = None
        #: A subscriber whose pump starts once the subscribe reply is sent.
        self.unpumped: Subscriber | None = None

    async def run(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                return
            try:
                for reply in await self.answer(message):
                    await self.ws.send_message(reply)
            except ConnectionClosed:
                return
            if self.unpumped is not None:
                # Start pumping only after the subscribe reply went out, so the
                # client sees the reply first; events meanwhile wait in the queue.
                self.nursery.start_soon(self.pump, self.unpumped)
                self.unpumped = None

    async def answer(self, message: str | bytes) -> Iterator[str]:
        """The reply frames: one, or a listing's pages (encoded as they are sent)."""
        try:
            req = api.parse_request_untrusted(message)
        except api.BadRequest as exc:
            return iter([api.encode_error(exc.request_id, exc.reason)])
        except BadMessage as exc:
            return iter([api.encode_error(None, exc.reason)])
        try:
            result = await self.dispatch(req)
        except (ControlError, BadMessage) as exc:
            return iter([api.encode_error(req.id, str(exc))])
        except Exception as exc:  # the control request's error boundary
            if self.on_fault is not None:
                self.on_fault("control", exc, f"op {req.op}")
            else:
                log.exception("control op %r failed", req.op)
            return iter([api.encode_error(req.id,
                                          f"{req.op} failed: {type(exc).__name__}: {exc}")])
        if isinstance(result, api.Rows):
            return _pages(req, result)
        try:
            return iter([api.encode_result(req.id, result)])
        except (TypeError, ValueError) as exc:
            log.error("control op %r returned a result with no JSON form: %s", req.op, exc)
            return iter([api.encode_error(req.id, f"{req.op} failed: result is not JSON: {exc}")])

    async def dispatch(self, req: Request) -> Any:
        if req.op == "ping":
            return "pong"
        if req.op == "subscribe":
            return self.subscribe(api.parse_subscribe_args_untrusted(req.args))
        if req.op == "unsubscribe":
            return {"unsubscribed": self.unsubscribe()}
        handler = self.handlers.get(req.op)
        if handler is None:
            raise ControlError(f"unknown op {req.op!r}")
        return await handler(req.args)

    def subscribe(self, sub: api.Subscription) -> dict[str, Any]:
        # One subscription per connection: a new subscribe replaces the old.
        self.unsubscribe()
        self.subscriber = self.bus.subscribe(sub.topics, sub.filter, buffer=self.buffer)
        self.unpumped = self.subscriber
        return {"topics": sorted(sub.topics), "filter": sub.filter}

    def unsubscribe(self) -> bool:
        # Closing (not cancelling) the pump: a send cancelled halfway would leave
        # half a frame on the socket. So an event already being sent may still
        # arrive after the unsubscribe reply.
        if self.subscriber is None:
            return False
        self.subscriber.close()
        self.subscriber = self.unpumped = None
        return True

    async def pump(self, sub: Subscriber) -> None:
        try:
            async for event, topic, data, ts in sub:
                try:
                    frame = api.encode_event(event, topic, data, ts)
                except (TypeError, ValueError) as exc:
                    log.error("event %s/%s has no JSON form: %s", topic, event, exc)
                    continue
                await self.ws.send_message(frame)
        except ConnectionClosed:
            pass
