"""Keeps the read models up to date with the log: batched catch-up, live follow, rebuild.

Each batch is one transaction: lock the views' tracking rows, read the next events, apply them
to every view that has not seen them, move the positions. A crash anywhere loses nothing and
applies nothing twice. Live updates wake on the event store's LISTEN/NOTIFY channel.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg_pool import ConnectionPool

from engine import schema
from engine.app import Stepline
from engine.follower import LogFollower, Running, run_when_woken
from engine.logs import LOGGER_NAME
from projections import ALL_VIEWS, tracking
from projections.view import Recorded, View

log = logging.getLogger(LOGGER_NAME)

BATCH_SIZE = 5_000
ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (position reached, log head)."""


class UnknownView(ValueError):
    pass


@dataclass(frozen=True)
class ViewStatus:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


class Projector:
    def __init__(
        self,
        app: Stepline,
        pool: ConnectionPool,
        views: Sequence[View] = ALL_VIEWS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.app = app
        self.pool = pool
        self.views = {view.name: view for view in views}
        self.batch_size = batch_size
        self._reached: dict[str, int] = {}
        self._advanced = threading.Condition()
        self._running: Running | None = None

    @property
    def following(self) -> bool:
        """Whether a live follower thread is running in this process."""
        return self._running is not None and self._running.alive

    def select(self, names: Sequence[str] | None) -> list[str]:
        if not names:
            return list(self.views)
        unknown = sorted(set(names) - self.views.keys())
        if unknown:
            raise UnknownView(f"no view named {unknown}; the views are {sorted(self.views)}")
        return list(names)

    # ---- start-up -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Create missing views; a view whose layout changed is dropped and replayed. (Only
        the views: a process prepares the whole schema with `engine.schema.prepare`.)"""
        schema.prepare_views(self.pool, self.views.values())

    # ---- catching up --------------------------------------------------------------------

    def catch_up(
        self, names: Sequence[str] | None = None, on_progress: ProgressCallback | None = None
    ) -> int:
        """Apply every event the views have not seen, in large batches. Returns the count."""
        selected = self.select(names)
        applied = 0
        while count := self._apply_next_batch(selected):
            applied += count
            if on_progress is not None:
                on_progress(min(self._reached[n] for n in selected), self.head())
        return applied

    def _apply_next_batch(self, names: list[str]) -> int:
        with self.pool.connection() as conn, conn.transaction():
            positions = tracking.lock_positions(conn, names)
            start = min(positions.values())
            notifications = self.app.recorder.select_notifications(
                start=start, limit=self.batch_size, inclusive_of_start=False
            )
            if not notifications:
                self._remember(positions)  # another process may have moved them
                return 0
            batch = [Recorded(n.id, self.app.mapper.to_domain_event(n)) for n in notifications]  # type: ignore[arg-type]
            for name in names:
                unseen = [r for r in batch if r.position > positions[name]]
                if unseen:
                    self.views[name].apply(conn, unseen)
            tracking.advance(conn, names, batch[-1].position)
        self._remember({name: max(positions[name], batch[-1].position) for name in names})
        return len(batch)

    def _remember(self, reached: dict[str, int]) -> None:
        with self._advanced:
            self._reached.update(reached)
            self._advanced.notify_all()

    # ---- reading positions --------------------------------------------------------------

    def head(self) -> int:
        """The position of the last event in the log (0 for an empty log)."""
        return self.app.recorder.max_notification_id() or 0

    def status(self) -> list[ViewStatus]:
        head = self.head()
        with self.pool.connection() as conn:
            reached = tracking.positions(conn)
        return [ViewStatus(name, reached.get(name, 0), head) for name in self.views]

    def wait_until(self, position: int, timeout: float, names: Sequence[str] | None = None) -> bool:
        """Block until the views have applied the log up to `position` (read-your-writes).

        Needs a live `follow()` in this process. False if the timeout passed first."""
        selected = self.select(names)

        def reached() -> bool:
            return all(self._reached.get(name, 0) >= position for name in selected)

        with self._advanced:
            return self._advanced.wait_for(reached, timeout=timeout)

    # ---- rebuilding ---------------------------------------------------------------------

    def rebuild(
        self, names: Sequence[str] | None = None, on_progress: ProgressCallback | None = None
    ) -> int:
        """Empty the views and replay the whole log into them."""
        selected = self.select(names)
        with self.pool.connection() as conn, conn.transaction():
            tracking.lock_positions(conn, selected)
            for name in selected:
                tracking.truncate_tables(conn, self.views[name])
                tracking.reset(conn, self.views[name])
        self._remember(dict.fromkeys(selected, 0))
        log.info("Rebuilding %s from the log", ", ".join(selected))
        return self.catch_up(selected, on_progress)

    # ---- following the log live ---------------------------------------------------------

    def follow(
        self, follower: LogFollower, then: Sequence[Callable[[], None]] = ()
    ) -> Callable[[], None]:
        """Catch up in a thread of its own whenever the follower wakes (so the follower never
        waits on the views), then call `then`; returns the function that stops it."""
        wake = threading.Event()
        follower.subscribe(wake.set, channel=self.app.recorder.channel_name)  # type: ignore[attr-defined]

        def catch_up_then() -> None:
            self._catch_up_quietly()
            for callback in then:
                callback()

        self._running = run_when_woken("projector", catch_up_then, wake, follower.idle_check_s)
        return self._running.stop

    def _catch_up_quietly(self) -> None:
        """Catch up; a lost database is logged and retried on the next wake."""
        try:
            self.catch_up()
        except (psycopg.Error, PersistenceError):
            log.warning("The projections could not catch up (database unavailable); retrying")

    def start_following(self) -> Callable[[], None]:
        """Follow the log with a follower of its own; returns the function that stops both."""
        follower = LogFollower(self.pool, [self.app.recorder.channel_name])  # type: ignore[attr-defined]
        stop_projecting = self.follow(follower)
        stop_follower = follower.start()

        def stop_following() -> None:
            stop_follower()
            stop_projecting()

        return stop_following
