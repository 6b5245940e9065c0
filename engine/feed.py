"""The live event feed: new events fanned out by session, woken by the process's follower.

Subscribers are asyncio consumers (the SSE endpoint). Each new event is decoded and encoded
once (by the `encode` the feed was built with, e.g. into an SSE frame), however many
subscribers it has, and a delivery hands everything it read to each event loop in one
`call_soon_threadsafe`. A subscriber that falls `buffer_size` events behind is told it
overflowed and must resume from the log — a stream never silently skips an event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError

from domain.session import WorkflowSession
from engine.app import Stepline
from engine.follower import run_when_woken
from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

OVERFLOWED = object()
"""Put on a subscriber's queue when it fell too far behind; the stream should end."""

T = TypeVar("T")


@dataclass(frozen=True)
class Live(Generic[T]):
    """One new event as subscribers receive it: its version, and its encoding."""

    version: int
    encoded: T
    final: bool
    """The session ended with this event: nothing follows."""


ENDINGS = (
    WorkflowSession.Completed,
    WorkflowSession.Failed,
    WorkflowSession.Cancelled,
    WorkflowSession.Expired,
)


class Subscription(Generic[T]):
    def __init__(self, session_id: UUID, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[Live[T] | object] = asyncio.Queue(maxsize=size + 1)
        self.loop = loop
        self._size = size
        self.overflowed = False

    def put(self, item: Live[T]) -> None:
        """Called on the subscriber's event loop."""
        if self.overflowed:
            return
        if self.queue.qsize() >= self._size:
            self.overflowed = True
            self.queue.put_nowait(OVERFLOWED)
            return
        self.queue.put_nowait(item)


Handover = list[tuple[Subscription[T], Live[T]]]


def _hand_over(items: Handover[T]) -> None:
    for subscription, item in items:
        subscription.put(item)


class EventFeed(Generic[T]):
    """Delivers new events in a thread of its own, so that slower work the process's follower
    does on the same wake (the views catching up) never delays a stream. Subscribe `wake` to
    the follower."""

    def __init__(
        self,
        app: Stepline,
        encode: Callable[[WorkflowSession.Event], T],
        buffer_size: int = 1_000,
    ) -> None:
        self.app = app
        self.encode = encode
        self.buffer_size = buffer_size
        self._subscribers: dict[UUID, set[Subscription[T]]] = {}
        self._lock = threading.Lock()
        self._position = app.recorder.max_notification_id() or 0
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Callable[[], None]:
        """Deliver on every wake (and every second); returns the function that stops it."""
        return run_when_woken("feed", self._deliver_new_events, self._wake, every_s=1.0).stop

    def subscribe(self, session_id: UUID) -> Subscription[T]:
        subscription = Subscription[T](session_id, asyncio.get_running_loop(), self.buffer_size)
        with self._lock:
            self._subscribers.setdefault(session_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[T]) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.session_id, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(subscription.session_id, None)

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subscribers.values())

    def _deliver_new_events(self) -> None:
        """Hand every event appended since the last call to its session's subscribers."""
        try:
            self._deliver()
        except (psycopg.Error, PersistenceError):
            log.warning("The live event feed could not read the log; retrying on the next wake")

    def _deliver(self) -> None:
        while True:
            notifications = self.app.recorder.select_notifications(
                start=self._position, limit=500, inclusive_of_start=False
            )
            if not notifications:
                return
            by_loop: dict[asyncio.AbstractEventLoop, Handover[T]] = {}
            for notification in notifications:
                self._position = notification.id
                with self._lock:
                    subscribers = list(
                        self._subscribers.get(cast(UUID, notification.originator_id), ())
                    )
                if not subscribers:
                    continue
                event = cast(WorkflowSession.Event, self.app.mapper.to_domain_event(notification))
                live = Live(
                    event.originator_version, self.encode(event), isinstance(event, ENDINGS)
                )
                for subscriber in subscribers:
                    by_loop.setdefault(subscriber.loop, []).append((subscriber, live))
            for loop, items in by_loop.items():
                loop.call_soon_threadsafe(_hand_over, items)
