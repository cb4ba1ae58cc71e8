"""In-process event bus for the live feed: publishers never block, each subscriber has a bounded queue.

    with bus.subscribe() as sub:
        message = sub.get(timeout=1.0)     # {"type": "call", "data": {...}} or None

A subscriber that does not keep up loses messages (counted in `dropped`), never slows the publisher. A
subscriber may say which event types it wants (`subscribe(wants=...)`); `publish_lazy` builds an event's data
only when some subscriber wants it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenlens.records import CallRecord, SettledFacts

log = logging.getLogger(__name__)

Message = dict[str, Any]


class Subscription:
    """One subscriber's bounded queue of `{"type", "data"}` messages."""

    def __init__(self, bus: EventBus, max_queue: int, wants: Callable[[str], bool] | None = None) -> None:
        self._bus = bus
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=max_queue)
        self.wants = wants  # which event types it is sent (None: all); asked at each publish
        self.dropped = 0
        self.closed = False

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when none arrived within `timeout` seconds (0: do not wait)."""
        try:
            if timeout is not None and timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _offer(self, message: Message) -> bool:
        try:
            self._queue.put_nowait(message)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def qsize(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Fan-out of events to subscribers. Thread-safe; `publish` never blocks."""

    def __init__(self, max_queue: int = 1000) -> None:
        self.max_queue = max_queue
        self._subscribers: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()
        self.published = 0
        self.dropped = 0
        # called after each subscribe and unsubscribe (the gateway's `tokenlens.settlement.FeedFlag`)
        self.on_subscribers: Callable[[], None] | None = None

    def publish(self, type: str, data: dict[str, Any]) -> None:
        """Send `{"type": type, "data": data}` to every subscriber that wants it; a full one loses it."""
        self.published += 1
        receivers = self._receivers(type)
        if receivers:
            self._send(receivers, {"type": type, "data": data})

    def publish_lazy(self, type: str, make: Callable[[], dict[str, Any]]) -> None:
        """`publish(type, make())`, calling `make` only when a subscriber wants the event."""
        self.published += 1
        receivers = self._receivers(type)
        if receivers:
            self._send(receivers, {"type": type, "data": make()})

    def wanted(self, type: str) -> bool:
        """Whether any subscriber wants events of this type now."""
        return bool(self._receivers(type))

    def _receivers(self, type: str) -> list[Subscription]:
        # An immutable snapshot: no lock needed to read it.
        return [sub for sub in self._subscribers if sub.wants is None or sub.wants(type)]

    def _send(self, receivers: list[Subscription], message: Message) -> None:
        for sub in receivers:
            if not sub._offer(message):
                with self._lock:
                    self.dropped += 1

    def subscribe(self, wants: Callable[[str], bool] | None = None) -> Subscription:
        """A new subscription, to every event type or to those `wants` accepts (asked at each publish)."""
        sub = Subscription(self, self.max_queue, wants)
        with self._lock:
            self._subscribers = (*self._subscribers, sub)
        self._changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a subscription (idempotent)."""
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)
            sub.closed = True
        self._changed()

    def _changed(self) -> None:
        if self.on_subscribers is not None:
            try:
                self.on_subscribers()
            except Exception:
                log.exception("subscriber change hook failed")

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


RecordListener = Callable[[Sequence["SettledFacts"]], None]


class RecordFanout:
    """What the record writer's thread calls with each committed batch: every record listener in order (an
    exception in one is logged and the others still run), then each record on the live feed (`call`, or
    `block` for a blocked call). The listeners are set once, by `tokenlens.runtime.build_runtime`."""

    def __init__(self, bus: EventBus, listeners: Sequence[RecordListener] = ()) -> None:
        self.bus = bus
        self.listeners: tuple[RecordListener, ...] = tuple(listeners)

    def __call__(self, records: Sequence[CallRecord]) -> None:
        for listener in self.listeners:
            try:
                listener(records)
            except Exception:
                log.exception("record listener %r failed", listener)
        publish = self.bus.publish_lazy  # the record's dict is built only for a subscriber that wants it
        for record in records:
            publish("block" if record.outcome == "blocked" else "call", record.to_dict)
