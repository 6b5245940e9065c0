"""The live event feed: new events fanned out by session, woken by the process's follower.

Subscribers are asyncio consumers (the SSE endpoint). Each new event is decoded and encoded
once (by the `encode` the feed was built with, e.g. into an SSE frame), however many
subscribers it has, and a delivery hands everything it read to each event loop in one
`call_soon_threadsafe`, each subscriber's share in one piece: a subscriber wakes once per
delivery, however many events it brought, and takes them all (so a busy loop sends fewer,
larger writes). A subscriber that falls `buffer_size` events behind is told it overflowed and
must resume from the log — a stream never silently skips an event. A subscriber given nothing
for `idle_after_s` is handed `IDLE` (a stream's cue for a heartbeat), so no subscriber needs a
timer of its own. With no subscriber at all the feed reads no events and is not woken by
them: it only moves its position to the log's head, at its idle checks and at most every
`SKIP_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError

from domain.session import ENDING_EVENTS, WorkflowSession
from engine.live.follower import run_when_woken
from engine.logs import LOGGER_NAME
from engine.store.app import Stepline

log = logging.getLogger(LOGGER_NAME)

OVERFLOWED = object()
"""Handed to a subscriber that fell too far behind; the stream should end."""
IDLE = object()
"""Handed to a subscriber that was given nothing for a while."""
SKIP_EVERY_S = 0.5
"""With nobody subscribed, how often the feed moves its position to the log's head (between
times it does nothing: a first subscriber's events are read from the last such position)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Live(Generic[T]):
    """One new event as subscribers receive it: its version, and its encoding."""

    version: int
    encoded: T
    final: bool
    """The session ended with this event: nothing follows."""


class Subscription(Generic[T]):
    """What a subscriber has been handed and not yet taken, kept on its event loop."""

    def __init__(self, session_id: UUID, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.session_id = session_id
        self.loop = loop
        self._size = size
        self._pending: list[Live[T] | object] = []
        self._ready = asyncio.Event()
        self.overflowed = False
        self.handed_at = time.monotonic()
        """When the feed last handed it something (the feed's thread reads and writes it)."""

    def put(self, items: list[Live[T] | object]) -> None:
        """Called on the subscriber's event loop."""
        if self.overflowed:
            return
        if len(self._pending) + len(items) > self._size:
            self.overflowed = True
            self._pending.append(OVERFLOWED)
        else:
            self._pending.extend(items)
        self._ready.set()

    async def take(self) -> list[Live[T] | object]:
        """Everything handed over since the last take; waits until there is something."""
        await self._ready.wait()
        self._ready.clear()
        taken, self._pending = self._pending, []
        return taken


Handover = dict[Subscription[T], list[Live[T] | object]]


class EventFeed(Generic[T]):
    """Delivers new events in a thread of its own, so that slower work the process's follower
    does on the same wake (the views catching up) never delays a stream. Subscribe `wake` to
    the follower."""

    def __init__(
        self,
        app: Stepline,
        encode: Callable[[WorkflowSession.Event], T],
        buffer_size: int = 1_000,
        idle_after_s: float = 15.0,
    ) -> None:
        self.app = app
        self.encode = encode
        self.buffer_size = buffer_size
        self.idle_after_s = idle_after_s
        self._subscribers: dict[UUID, set[Subscription[T]]] = {}
        self._lock = threading.Lock()
        self._position = app.recorder.max_notification_id() or 0
        self._wake = threading.Event()
        self._idle_checked_at = time.monotonic()
        self._waiting: dict[asyncio.AbstractEventLoop, Handover[T]] = {}
        """What each loop was handed and has not yet taken."""
        self._skipped_at = time.monotonic()

    def wake(self) -> None:
        """New events are in the log: deliver them, if anyone is subscribed. With nobody
        subscribed the feed's thread is not woken for them (a wake per commit, for nothing):
        it moves to the log's head on its own at its idle checks. A subscriber reads its
        history after subscribing, so an event committed after that read is announced while
        it is subscribed, and wakes the feed."""
        if self._subscribers:
            self._wake.set()

    @property
    def _idle_check_s(self) -> float:
        return min(1.0, self.idle_after_s / 2)

    def start(self) -> Callable[[], None]:
        """Deliver on every wake (and at least every second, or twice per `idle_after_s`);
        returns the function that stops it."""
        return run_when_woken("feed", self._deliver_new_events, self._wake, self._idle_check_s).stop

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

    def has_subscribers(self) -> bool:
        """Whether anyone is subscribed: while nobody is, the process need not hear of new
        events at all (see `LogFollower.listen_while`)."""
        return bool(self._subscribers)

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subscribers.values())

    def _deliver_new_events(self) -> None:
        """Hand every event appended since the last call to its session's subscribers."""
        try:
            self._deliver()
        except (psycopg.Error, PersistenceError):
            log.warning("The live event feed could not read the log; retrying on the next wake")
        if time.monotonic() - self._idle_checked_at >= self._idle_check_s:
            self._hand_over_idle()

    def _deliver(self) -> None:
        if self._skipped_unread():
            return
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
                    event.originator_version, self.encode(event), isinstance(event, ENDING_EVENTS)
                )
                for subscriber in subscribers:
                    by_loop.setdefault(subscriber.loop, {}).setdefault(subscriber, []).append(live)
            self._send(by_loop)

    def _skipped_unread(self) -> bool:
        """With no subscriber, move to the log's head (or, within `SKIP_EVERY_S` of the last
        move, stay put) without reading the events; whether it did.

        The head is read before the subscribers are looked at: a subscriber that comes after
        reads its history after that, so it holds every event up to the head, and the feed
        hands it every event after."""
        now = time.monotonic()
        if now - self._skipped_at < SKIP_EVERY_S:
            with self._lock:
                return not self._subscribers
        head = self.app.recorder.max_notification_id() or 0
        with self._lock:
            if self._subscribers:
                return False
        self._position = max(self._position, head)
        self._skipped_at = now
        return True

    def _hand_over_idle(self) -> None:
        """`IDLE` to every subscriber handed nothing for `idle_after_s`."""
        now = self._idle_checked_at = time.monotonic()
        with self._lock:
            idle = [
                subscription
                for subscriptions in self._subscribers.values()
                for subscription in subscriptions
                if now - subscription.handed_at >= self.idle_after_s
            ]
        by_loop: dict[asyncio.AbstractEventLoop, Handover[T]] = {}
        for subscription in idle:
            by_loop.setdefault(subscription.loop, {})[subscription] = [IDLE]
        self._send(by_loop)

    def _send(self, by_loop: dict[asyncio.AbstractEventLoop, Handover[T]]) -> None:
        """Hand over on each loop; while a loop has not yet taken what it was handed last
        (it is busy), add to that instead: a busy loop then wakes each subscriber once for
        many deliveries, and writes to it once."""
        now = time.monotonic()
        for loop, handover in by_loop.items():
            for subscription in handover:
                subscription.handed_at = now
            with self._lock:
                waiting = self._waiting.get(loop)
                if waiting is not None:
                    for subscription, items in handover.items():
                        waiting.setdefault(subscription, []).extend(items)
                    continue
                self._waiting[loop] = handover
            loop.call_soon_threadsafe(self._hand_over, loop)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """On `loop`: give each of its subscribers what is waiting for it."""
        with self._lock:
            handover = self._waiting.pop(loop, {})
        for subscription, items in handover.items():
            subscription.put(items)
