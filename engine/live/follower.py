"""One LISTEN connection per process that wakes whoever must react to the database.

The event store NOTIFYs when events are appended, the projector's leader when the views
reached a position, and workers when they hand a lease back. Subscribers (the live feed, the
worker) are called in the follower's thread on every notification, and at least every
`idle_check_s` as a fallback for a lost notification or a reconnect; receivers (the
projector, learning positions) are given each notification's payload. Both must return at
once (set an event for their own thread): a slow one would delay every other's wake.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import sql
from psycopg_pool import ConnectionPool

from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)


class LogFollower:
    def __init__(
        self, pool: ConnectionPool, channels: Sequence[str], idle_check_s: float = 1.0
    ) -> None:
        self.pool = pool
        self.channels = list(channels)
        self.idle_check_s = idle_check_s
        self._subscribers: list[tuple[Callable[[], None], str | None]] = []
        self._receivers: list[tuple[Callable[[str], None], str]] = []
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
            for channel in self.channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            try:
                self._wake(None)  # whatever happened while this connection was not listening
                while not stop.is_set():
                    notified = False
                    for notification in conn.notifies(timeout=self.idle_check_s, stop_after=1):
                        self._hand_over(notification.channel, notification.payload)
                        notified = True
                    if not notified:
                        self._wake(None)
            finally:
                if not (conn.closed or conn.broken):
                    conn.execute("UNLISTEN *")

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
