"""Client side of the control socket, for the CLI and tests.

Importing this module is cheap on purpose (no trio, no trio-websocket at import
time): ``minisip --help`` and ``minisip user list`` must start fast, and only the
commands that talk to a running server pay for the websocket stack.

``connect`` keeps one connection open for many requests; ``request`` opens one
per call; ``call`` is ``request`` for synchronous code (the Typer CLI).
``subscribe`` is an async context manager rather than an async generator: the
websocket needs a background reader task, and a nursery must not be held open
across an async generator's ``yield`` (trio forbids it, ruff's ASYNC rules
flag it). It also means the subscription is in place when the ``async with``
body starts, so nothing published from then on is missed::

    async with subscribe(path, ["calls"], {"user": "100"}) as events:
        async for frame in events:
            ...
"""
from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minisip.control.api import (
    ControlError,
    encode_request,
    parse_frame_untrusted,
)
from minisip.sip.errors import BadMessage

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

__all__ = [
    "ControlConnection",
    "ControlError",
    "ControlTimeout",
    "ServerNotRunning",
    "StaleSocket",
    "call",
    "connect",
    "request",
    "subscribe",
]


class ServerNotRunning(ControlError):
    """Nothing listens on the control socket (file missing or connection refused)."""


class StaleSocket(ServerNotRunning):
    """The socket file is there but nothing listens: a server died without removing it."""


class ControlTimeout(ControlError):
    """The server did not answer in time."""


class ControlConnection:
    """One open control connection. Use from one task at a time.

    Event frames that arrive while waiting for a reply are kept, in order,
    for ``next_event``.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._next_id = 1
        self._events: collections.deque[dict[str, Any]] = collections.deque()

    async def request(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result (a listing's rows joined in one
        list); ``ControlError`` on an error reply."""
        rid = self._next_id
        self._next_id += 1
        await self._send(encode_request(rid, op, args))
        rows: list[Any] = []
        while True:
            frame = await self._receive()
            if "event" in frame:
                self._events.append(frame)
                continue
            if frame.get("id") != rid:
                # An error reply to something we did not send (id null): the
                # server could not read our frame at all.
                if frame.get("id") is None and not frame["ok"]:
                    raise ControlError(frame["error"])
                continue
            if not frame["ok"]:
                raise ControlError(frame["error"])
            if "rows" not in frame:
                return frame.get("result")
            rows += frame["rows"]  # a listing: pages until "more" is false
            if not frame["more"]:
                return rows

    async def subscribe(
        self, topics: Iterable[str], filter: dict[str, str] | None = None
    ) -> Any:
        args: dict[str, Any] = {"topics": list(topics)}
        if filter:
            args["filter"] = filter
        return await self.request("subscribe", args)

    async def next_event(self) -> dict[str, Any]:
        """The next event frame (``{"event", "topic", "data", "ts"}``)."""
        if self._events:
            return self._events.popleft()
        while True:
            frame = await self._receive()
            if "event" in frame:
                return frame

    def __aiter__(self) -> ControlConnection:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.next_event()

    async def _send(self, text: str) -> None:
        from trio_websocket import ConnectionClosed

        try:
            await self._ws.send_message(text)
        except ConnectionClosed:
            raise ControlError("the server closed the control connection") from None

    async def _receive(self) -> dict[str, Any]:
        from trio_websocket import ConnectionClosed

        try:
            message = await self._ws.get_message()
        except ConnectionClosed:
            raise ControlError("the server closed the control connection") from None
        try:
            return parse_frame_untrusted(message)
        except BadMessage as exc:
            raise ControlError(f"unreadable frame from the server: {exc.reason}") from None


@contextlib.asynccontextmanager
async def connect(path: Path | str) -> AsyncIterator[ControlConnection]:
    """Open a control connection to the server listening on ``path``."""
    import trio
    from trio_websocket import HandshakeError, wrap_client_stream

    path = os.fspath(path)
    try:
        stream = await trio.open_unix_socket(path)
    except FileNotFoundError:
        raise ServerNotRunning(f"no minisip server is listening on {path}") from None
    except ConnectionRefusedError:
        raise StaleSocket(f"no minisip server is running: {path} is left from one that "
                          f"did not stop cleanly (the next `minisip serve` replaces it)"
                          ) from None
    except PermissionError:
        raise ControlError(f"permission denied on {path} (run as the server's user)") from None
    except OSError as exc:
        raise ServerNotRunning(f"cannot connect to {path}: {exc.strerror or exc}") from None
    try:
        async with stream, trio.open_nursery() as nursery:
            try:
                ws = await wrap_client_stream(nursery, stream, "localhost", "/control")
            except HandshakeError as exc:
                raise ControlError(f"websocket handshake with {path} failed: {exc}") from None
            try:
                yield ControlConnection(ws)
            except BaseException:
                # Cancelled or failed: the reader task may be cancelled too, so
                # no close handshake could complete. Just drop the connection.
                await trio.aclose_forcefully(stream)
                raise
            else:
                with trio.move_on_after(1.0):
                    await ws.aclose()
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery only holds the websocket reader, which handles its own
        # errors: a group here wraps the caller's one exception. Hand it back
        # bare, so callers can write `except ControlError`.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def request(
    path: Path | str, op: str, args: dict[str, Any] | None = None, *, timeout: float = 5.0
) -> Any:
    """One request on a fresh connection. Raises ``ControlError`` on an error
    reply, ``ServerNotRunning``, or ``ControlTimeout`` after ``timeout`` seconds."""
    import trio

    try:
        with trio.fail_after(timeout):
            async with connect(path) as conn:
                return await conn.request(op, args)
    except trio.TooSlowError:
        where = os.fspath(path)
        raise ControlTimeout(f"no answer to {op!r} from {where} in {timeout:g} s") from None


@contextlib.asynccontextmanager
async def subscribe(
    path: Path | str, topics: Iterable[str], filter: dict[str, str] | None = None
) -> AsyncIterator[ControlConnection]:
    """Subscribe, then iterate the yielded connection for event frames.

    The subscription is acknowledged before the body runs.
    """
    async with connect(path) as conn:
        await conn.subscribe(topics, filter)
        yield conn


def call(
    path: Path | str, op: str, args: dict[str, Any] | None = None, timeout: float = 5.0
) -> Any:
    """``request`` for synchronous callers (runs its own trio loop)."""
    import functools

    import trio

    return trio.run(functools.partial(request, path, op, args, timeout=timeout))
