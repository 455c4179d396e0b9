"""The event bus: the PBX publishes, control-socket subscribers listen.

Theory of operation
-------------------
``publish(topic, event, data)`` is a plain function: the registrar, the call
code and the SIP receive loop call it without awaiting, and it never blocks.
Each subscriber owns a bounded trio memory channel. ``publish`` offers the event
to every subscriber of the topic whose filter matches, with ``send_nowait``:

* room in the channel: the event goes in;
* channel full: the event is counted as dropped, and so is every later event for
  that subscriber until it has read everything queued. Then it receives one
  ``dropped`` event with the count, followed by new events. So a gap shows up
  exactly where it happened, and a slow reader costs the publisher one
  increment.

With no subscriber on a topic ``publish`` is one dict lookup; a hot path that
would have to build ``data`` first can ask ``wants(topic)``.

A filter ``{"user": "100"}`` lets an event through when its data has
``"user": "100"`` or ``"100"`` in its ``"users"`` list (likewise ``call_id`` /
``call_ids``). Events that do not name the key do not pass a filter on it.

``publish`` must be called from the trio thread (every task of ``minisip
serve`` is); from a worker thread use ``trio.from_thread.run_sync(bus.publish,
...)``. Published ``data`` is shared between subscribers: do not mutate it after
publishing.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final

import trio

__all__ = ["DEFAULT_BUFFER", "Event", "EventBus", "Subscriber"]

log = logging.getLogger(__name__)

#: Events a subscriber may have queued before it starts losing them.
DEFAULT_BUFFER: Final = 1024

#: (event, topic, data, ts): a tuple, because the hot path allocates one per publish.
Event = tuple[str, str | None, dict[str, Any], float]


class Subscriber:
    """One listener: a bounded queue, a filter and a drop count.

    Iterate it (``async for event, topic, data, ts in sub``) from one task.
    Use it as a context manager, or call ``close()``, to leave the bus.
    """

    def __init__(
        self,
        bus: EventBus,
        topics: frozenset[str],
        filter: Mapping[str, str] | None,
        buffer: int,
    ) -> None:
        self._bus = bus
        self.topics = topics
        self.filter: tuple[tuple[str, str, str], ...] = tuple(
            (key, key + "s", value) for key, value in (filter or {}).items()
        )
        self._send, self._receive = trio.open_memory_channel[Event](buffer)
        #: Events lost since the reader last caught up (0 = not losing).
        self.dropped = 0
        #: Events lost over the subscriber's life, for `minisip status`.
        self.dropped_total = 0
        self.closed = False

    def matches(self, data: Mapping[str, Any]) -> bool:
        for key, plural, value in self.filter:
            if data.get(key) == value:
                continue
            many = data.get(plural)
            if isinstance(many, list | tuple | set | frozenset) and value in many:
                continue
            return False
        return True

    def _offer(self, item: Event) -> None:
        if self.dropped:
            # Still behind: keep the gap in one place rather than interleaving.
            self.dropped += 1
            self.dropped_total += 1
            return
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped = 1
            self.dropped_total += 1

    def receive_nowait(self) -> Event:
        """The next event, or ``trio.WouldBlock``. A pending drop count is
        reported (as a ``dropped`` event) once the queue is empty."""
        try:
            return self._receive.receive_nowait()
        except trio.WouldBlock:
            if self.dropped:
                count, self.dropped = self.dropped, 0
                return ("dropped", None, {"count": count}, time.time())
            raise

    async def receive(self) -> Event:
        try:
            item = self.receive_nowait()
        except trio.WouldBlock:
            return await self._receive.receive()
        await trio.lowlevel.checkpoint()
        return item

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        if self.closed:
            raise StopAsyncIteration
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            self._send.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        # Only topics with at least one subscriber are keys, so a miss is "nobody".
        self._by_topic: dict[str, list[Subscriber]] = {}

    def wants(self, topic: str) -> bool:
        """Whether anyone listens on ``topic``: skip building the event if not."""
        return topic in self._by_topic

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        """Offer an event to the topic's subscribers. Never blocks, never raises
        for a subscriber's sake."""
        subs = self._by_topic.get(topic)
        if subs is None:
            return
        item: Event = (event, topic, data, time.time())
        for sub in subs:
            if not sub.filter or sub.matches(data):
                sub._offer(item)

    def subscribe(
        self,
        topics: Iterable[str],
        filter: Mapping[str, str] | None = None,
        *,
        buffer: int = DEFAULT_BUFFER,
    ) -> Subscriber:
        """Start listening now: events published after this returns are queued."""
        sub = Subscriber(self, frozenset(topics), filter, buffer)
        for topic in sub.topics:
            # A new list rather than append: publish may be iterating the old one.
            self._by_topic[topic] = [*self._by_topic.get(topic, ()), sub]
        return sub

    def _remove(self, sub: Subscriber) -> None:
        for topic in sub.topics:
            rest = [s for s in self._by_topic.get(topic, ()) if s is not sub]
            if rest:
                self._by_topic[topic] = rest
            else:
                self._by_topic.pop(topic, None)

    def subscriber_count(self) -> int:
        return len({id(s) for subs in self._by_topic.values() for s in subs})
