"""One LISTEN connection per process that wakes whoever must react to the database.

The event store NOTIFYs when events are appended, the projector's leader when the views
reached a position, and workers when they hand a lease back. Subscribers (the live feed, the
worker) are called in the follower's thread on every notification, and at least every
`idle_check_s` as a fallback for a lost notification or a reconnect; receivers (the
projector, learning positions) are given each notification's payload. Both must return at
once (set an event for their own thread): a slow one would delay every other's wake.

A channel may be listened to only while it is wanted (`listen_while`: new events, while
someone streams them): every notification wakes this thread, and one nobody wants costs it
for nothing, on every commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import sql
from psycopg_pool import ConnectionPool

from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

LOOK_AGAIN_CHANNEL = "stepline_follower_look_again"
"""NOTIFY channel: a channel listened to only while wanted may be wanted now (`look_again`)."""


class LogFollower:
    def __init__(
        self, pool: ConnectionPool, channels: Sequence[str], idle_check_s: float = 1.0
    ) -> None:
        self.pool = pool
        self.channels = list(channels)
        self.idle_check_s = idle_check_s
        self._subscribers: list[tuple[Callable[[], None], str | None]] = []
        self._receivers: list[tuple[Callable[[str], None], str]] = []
        self._while: dict[str, Callable[[], bool]] = {}
        self._listening: set[str] = set()
        """The channels of `_while` the connection listens to now."""
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, callback: Callable[[], None], channel: str | None = None) -> None:
        """Call `callback` on every notification (or only `channel`'s) and on every idle
        check, in subscription order. Subscribe before `start`."""
        self._subscribers.append((callback, channel))

    def receive(self, callback: Callable[[str], None], channel: str) -> None:
        """Call `callback` with the payload of every notification on `channel` (not on idle
        checks). Subscribe before `start`."""
        self._receivers.append((callback, channel))

    def listen_while(self, channel: str, wanted: Callable[[], bool]) -> None:
        """Listen to `channel` only while `wanted()`, looked at on every wake; when it may
        have become wanted, `look_again` says so at once. On listening again its subscribers
        are woken: whatever was committed while nobody listened. Call before `start`."""
        self._while[channel] = wanted

    def look_again(self) -> None:
        """Have the follower look at once whether a `listen_while` channel is wanted now (a
        NOTIFY to itself; a round trip, so only when it does not listen to one yet)."""
        if set(self._while) <= self._listening:
            return
        with self.pool.connection() as conn:
            conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(LOOK_AGAIN_CHANNEL)))

    def start(self) -> Callable[[], None]:
        """Follow in a background thread; returns the function that stops it."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name="follower", daemon=True)
        thread.start()
        self._thread = thread

        def stop_following() -> None:
            stop.set()
            thread.join(timeout=10)

        return stop_following

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._listen(stop)
            except (psycopg.Error, PersistenceError):
                log.warning("Lost the database connection while following; reconnecting")
                stop.wait(self.idle_check_s)

    def _listen(self, stop: threading.Event) -> None:
        with self.pool.connection() as conn:
            self._listening.clear()
            for channel in self._static_channels():
                _listen_to(conn, channel)
            try:
                self._listen_as_wanted(conn)
                self._wake(None)  # whatever happened while this connection was not listening
                while not stop.is_set():
                    notified = False
                    for notification in conn.notifies(timeout=self.idle_check_s, stop_after=1):
                        self._hand_over(notification.channel, notification.payload)
                        notified = True
                    if not notified:
                        self._wake(None)
                    self._listen_as_wanted(conn)
            finally:
                self._listening.clear()
                if not (conn.closed or conn.broken):
                    conn.execute("UNLISTEN *")

    def _static_channels(self) -> list[str]:
        channels = [c for c in self.channels if c not in self._while]
        return [*channels, LOOK_AGAIN_CHANNEL] if self._while else channels

    def _listen_as_wanted(self, conn: psycopg.Connection[Any]) -> None:
        """Listen to each `listen_while` channel that is wanted and stop listening to each
        that is not; a channel listened to again wakes its subscribers."""
        for channel, wanted in self._while.items():
            if channel in self._listening and not wanted():
                conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                self._listening.discard(channel)
            # Asked again after an UNLISTEN: wanted meanwhile, `look_again` may have seen the
            # channel listened to and sent nothing.
            if channel not in self._listening and wanted():
                _listen_to(conn, channel)
                self._listening.add(channel)
                self._wake(channel)

    def _hand_over(self, channel: str, payload: str) -> None:
        for callback, wanted in self._receivers:
            if wanted != channel:
                continue
            try:
                callback(payload)
            except Exception:  # one receiver's bug must not stop every other's wake-ups
                log.exception("A receiver of %s failed on a notification", channel)
        self._wake(channel)

    def _wake(self, channel: str | None) -> None:
        """Wake the subscribers of `channel`; None (an idle check) wakes every one."""
        for callback, wanted in self._subscribers:
            if channel is None or wanted is None or wanted == channel:
                callback()


def _listen_to(conn: psycopg.Connection[Any], channel: str) -> None:
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


@dataclass(frozen=True)
class Running:
    """A background thread and the function that stops it."""

    thread: threading.Thread
    stop: Callable[[], None]

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


def run_when_woken(
    name: str, work: Callable[[], None], wake: threading.Event, every_s: float
) -> Running:
    """Run `work` in a thread of its own whenever `wake` is set, and at least every
    `every_s`, until stopped."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            wake.wait(every_s)
            wake.clear()
            if not stop.is_set():
                work()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def stop_running() -> None:
        stop.set()
        wake.set()
        thread.join(timeout=10)

    return Running(thread, stop_running)
