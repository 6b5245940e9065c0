"""The live event feed: one LISTEN connection per process, new events fanned out by session.

Subscribers are asyncio consumers (the SSE endpoint); the feed runs in a thread and hands each
event over with `call_soon_threadsafe`. A subscriber that falls `buffer_size` events behind is
told it overflowed and must resume from the log — a stream never silently skips an event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import sql
from psycopg_pool import ConnectionPool

from domain.session import WorkflowSession
from engine.app import Stepline
from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

OVERFLOWED = object()
"""Put on a subscriber's queue when it fell too far behind; the stream should end."""


class Subscription:
    def __init__(self, session_id: UUID, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=size + 1)
        self._loop = loop
        self._size = size
        self.overflowed = False

    def push(self, event: WorkflowSession.Event) -> None:
        """Called from the feed thread."""
        self._loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: object) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self._size:
            self.overflowed = True
            self.queue.put_nowait(OVERFLOWED)
            return
        self.queue.put_nowait(event)


class EventFeed:
    def __init__(self, app: Stepline, pool: ConnectionPool, buffer_size: int = 1_000) -> None:
        self.app = app
        self.pool = pool
        self.buffer_size = buffer_size
        self._subscribers: dict[UUID, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._position = 0
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, session_id: UUID) -> Subscription:
        subscription = Subscription(session_id, asyncio.get_running_loop(), self.buffer_size)
        with self._lock:
            self._subscribers.setdefault(session_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.session_id, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(subscription.session_id, None)

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subscribers.values())

    # ---- the feed thread ----------------------------------------------------------------

    def start(self) -> Callable[[], None]:
        """Follow the log in a background thread; returns the function that stops it."""
        self._position = self.app.recorder.max_notification_id() or 0
        stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stop,), name="feed", daemon=True)
        self._thread.start()

        def stop_feed() -> None:
            stop.set()
            if self._thread is not None:
                self._thread.join(timeout=10)

        return stop_feed

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._listen(stop)
            except (psycopg.Error, PersistenceError):
                log.exception("The live event feed lost the database; retrying")
                stop.wait(1.0)

    def _listen(self, stop: threading.Event) -> None:
        channel = self.app.recorder.channel_name  # type: ignore[attr-defined]
        with self.pool.connection() as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            try:
                while not stop.is_set():
                    self._deliver_new_events()
                    for _ in conn.notifies(timeout=1.0, stop_after=1):
                        pass
            finally:
                conn.execute("UNLISTEN *")

    def _deliver_new_events(self) -> None:
        while True:
            notifications = self.app.recorder.select_notifications(
                start=self._position, limit=500, inclusive_of_start=False
            )
            if not notifications:
                return
            for notification in notifications:
                self._position = notification.id
                with self._lock:
                    subscribers = list(
                        self._subscribers.get(cast(UUID, notification.originator_id), ())
                    )
                if subscribers:
                    event = self.app.mapper.to_domain_event(notification)
                    for subscriber in subscribers:
                        subscriber.push(event)  # type: ignore[arg-type]
