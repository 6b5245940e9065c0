"""Keeps the read models up to date with the log: batched catch-up, live follow, rebuild.

Each batch is one transaction: lock the views' tracking rows, read the next events, apply them
to every view that has not seen them, move the positions, and NOTIFY `VIEWS_CHANNEL` with the
position applied. A crash anywhere loses nothing and applies nothing twice.

Live, one process of the deployment catches up: the leader (`engine.live.leadership`). Every other
process learns the positions it reaches from that channel (`hear`), and a request that must
read its own writes waits for the position it needs (`wait_until`) instead of catching up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from domain.session import WorkflowSession
from engine.live.follower import LogFollower
from engine.live.leadership import Leadership, someone_leads, want_views
from engine.logs import LOGGER_NAME
from engine.store import schema
from engine.store.app import Stepline
from projections import ALL_VIEWS, tracking
from projections.view import Batch, Carried, Recorded, SessionLog, View, decoded, rendered

log = logging.getLogger(LOGGER_NAME)

BATCH_SIZE = 5_000
VIEWS_CHANNEL = "stepline_views"
"""NOTIFY channel: views reached a position; the payload says which views, where, and
whether a session's status changed on the way (`STATUS_CHANGES`)."""
STATUS_CHANGES = (
    WorkflowSession.Created,
    WorkflowSession.Paused,
    WorkflowSession.Resumed,
    WorkflowSession.Cancelled,
    WorkflowSession.Expired,
    WorkflowSession.WaitStarted,
    WorkflowSession.WaitEnded,
    WorkflowSession.SignalReceived,
    WorkflowSession.Completed,
    WorkflowSession.Failed,
)
"""Events after which workers look again: a session to claim (new, resumed, its wait over or
its signal in), one to stop driving, or a webhook the views queued (a session reached a status
a webhook names). Other events come from a session's own driver; waking every worker on them
would only cost."""
ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (position reached, log head)."""
READ_YOUR_WRITES_S = 2.0
"""How long a read waits for the leader to reach the position it needs before it catches the
views up itself (a leader that died a moment ago, or one far behind)."""
Waiting = Callable[[Callable[[], bool], float], bool]
"""Waits until the predicate holds or the timeout passes; whether it holds."""


_NEXT_EVENTS = """
SELECT notification_id, originator_id, originator_version, topic, state FROM {events}
WHERE notification_id > %s ORDER BY notification_id LIMIT %s
"""


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
        self._next_events = rendered(
            sql.SQL(_NEXT_EVENTS).format(events=sql.Identifier(app.events_table))
        )
        self.log = SessionLog(app.events_table, app.mapper)
        """The log as the views read a session's earlier events back."""
        self._reached: dict[str, int] = {}
        self._advanced = threading.Condition()
        self._heard = False
        self._on_status_change: Sequence[Callable[[], None]] = ()
        self._leadership: Leadership | None = None
        self.applied_here = 0
        """Events this process has applied to the views (the leader's work, or a fallback)."""
        self._carried = Carried()
        """The rows this projector's last batch wrote, for its next (`projections.view`)."""
        self._carrying = threading.Lock()

    @property
    def following(self) -> bool:
        """Whether this process stands for the lead (or holds it): the views stay live."""
        return self._leadership is not None and self._leadership.alive

    @property
    def leading(self) -> bool:
        """Whether this process is the deployment's projector now."""
        return self._leadership is not None and self._leadership.leading

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
        the views: a process prepares the whole schema with `engine.store.schema.prepare`.)"""
        schema.prepare_views(self.pool, self.views.values())

    # ---- catching up --------------------------------------------------------------------

    def catch_up(
        self,
        names: Sequence[str] | None = None,
        on_progress: ProgressCallback | None = None,
        conn: Connection[Any] | None = None,
    ) -> int:
        """Apply every event the views have not seen, in large batches (on `conn` if given,
        else on the pool's connections). Returns the count."""
        selected = self.select(names)
        applied = 0
        while count := self._apply_next_batch(selected, conn):
            applied += count
            if on_progress is not None:
                on_progress(min(self._reached[n] for n in selected), self.head())
            if count < self.batch_size:
                break  # the head of the log when it was read: no transaction to find nothing
        with self._advanced:
            self.applied_here += applied
        return applied

    def _apply_next_batch(self, names: list[str], conn: Connection[Any] | None) -> int:
        # The rows carried from batch to batch are this thread's while it applies one: a
        # batch on another thread meanwhile (a read catching up) goes without.
        carrying = self._carrying.acquire(blocking=False)
        try:
            return self._apply_batch(names, conn, self._carried if carrying else None)
        finally:
            if carrying:
                self._carrying.release()

    def _apply_batch(
        self, names: list[str], conn: Connection[Any] | None, carried: Carried | None
    ) -> int:
        with self._connection(conn) as used, used.transaction():
            positions = tracking.lock_positions(used, names)
            batch = self._read_after(used, min(positions.values()))
            if not batch:
                self._remember(positions)  # another process may have moved them
                return 0
            views = [self.views[name] for name in names]
            with (
                carried.applying(views, positions, batch) if carried is not None else nullcontext()
            ):
                self._apply_views(used, names, positions, batch)
            reached = batch[-1].position
            changed = any(isinstance(r.event, STATUS_CHANGES) for r in batch)
            payload = json.dumps({"position": reached, "views": names, "status_changed": changed})
            tracking.advance_and_notify(used, names, reached, VIEWS_CHANNEL, payload)
        now = {name: max(positions[name], reached) for name in names}
        if carried is not None:
            carried.committed(now)
        self._remember(now)
        return len(batch)

    def _apply_views(
        self,
        conn: Connection[Any],
        names: list[str],
        positions: dict[str, int],
        batch: list[Recorded],
    ) -> None:
        first = batch[0].position
        whole = Batch(batch)
        for name in names:
            seen = positions[name]
            # Usually every view is where the batch starts: it gets the batch as it is.
            unseen = whole if seen < first else Batch(r for r in batch if r.position > seen)
            if unseen:
                self.views[name].apply(conn, unseen, self.log)

    def _read_after(self, conn: Connection[Any], position: int) -> list[Recorded]:
        """The next batch of the log after `position`, read in the batch's transaction (on its
        connection: no second connection, no statement composed again for each batch)."""
        rows = conn.execute(self._next_events, (position, self.batch_size)).fetchall()
        return decoded(self.app.mapper, rows)

    @contextmanager
    def _connection(self, given: Connection[Any] | None) -> Iterator[Connection[Any]]:
        if given is not None:
            yield given
            return
        with self.pool.connection() as conn:
            yield conn

    def _remember(self, reached: dict[str, int]) -> None:
        with self._advanced:
            self._reached.update(reached)
            self._advanced.notify_all()

    def _learn(self, reached: dict[str, int]) -> None:
        """Positions read elsewhere (a notification, the tracking table): never backwards."""
        with self._advanced:
            for name, position in reached.items():
                self._reached[name] = max(self._reached.get(name, 0), position)
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

    def hear(
        self, follower: LogFollower, on_status_change: Sequence[Callable[[], None]] = ()
    ) -> None:
        """Learn the positions the leader reaches from `follower`'s notifications, and call
        `on_status_change` when the views applied one of `STATUS_CHANGES` (subscribe before
        the follower starts)."""
        follower.receive(self._heard_of, channel=VIEWS_CHANNEL)
        self._on_status_change = on_status_change
        self._heard = True

    def _heard_of(self, payload: str) -> None:
        advanced = json.loads(payload)
        self._learn(dict.fromkeys(advanced["views"], int(advanced["position"])))
        if advanced.get("status_changed"):
            for callback in self._on_status_change:
                callback()

    def wait_until(self, position: int, timeout: float, names: Sequence[str] | None = None) -> bool:
        """Block until the views have applied the log up to `position` (read-your-writes).

        Woken by the leader's notifications. When no process leads, or the leader has not got
        there within `timeout`, this process catches up itself, so nothing waits for ever.
        False only if the log has not reached `position` at all."""
        selected = self.select(names)

        def reached() -> bool:
            return all(self._reached.get(name, 0) >= position for name in selected)

        if reached():
            return True
        with self._listening() as wait:
            with self.pool.connection() as conn:
                self._learn(tracking.positions(conn))
                leader = someone_leads(conn)
                if leader and not reached():
                    want_views(conn)
            if reached() or (leader and wait(reached, timeout)):
                return True
        if leader:
            log.warning(
                "The views' leader had not reached %d after %g s: catching up here",
                position,
                timeout,
            )
        self.catch_up(selected)
        return reached()

    @contextmanager
    def _listening(self) -> Iterator[Waiting]:
        """How to wait for the leader's notifications: the process's follower hears them
        (`hear`), or, in a process without one (a CLI command), a connection listens for the
        length of the wait."""
        if self._heard:
            yield self._wait_for_follower
            return
        with self.pool.connection() as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(VIEWS_CHANNEL)))
            try:
                yield lambda done, timeout: self._wait_on(conn, done, timeout)
            finally:
                if not (conn.closed or conn.broken):
                    conn.execute("UNLISTEN *")

    def _wait_for_follower(self, done: Callable[[], bool], timeout: float) -> bool:
        with self._advanced:
            return self._advanced.wait_for(done, timeout=timeout)

    def _wait_on(self, conn: Connection[Any], done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and (left := deadline - time.monotonic()) > 0:
            for notification in conn.notifies(timeout=left, stop_after=1):
                self._heard_of(notification.payload)
        return done()

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

    # ---- leading ------------------------------------------------------------------------

    def start_leading(self, identity: str, reserve: bool = False) -> Callable[[], None]:
        """Stand for the deployment's lead (see `engine.live.leadership`; in `reserve`, only when
        nobody else has held it for a while), catching the views up while this process holds
        it; returns the function that stops (and hands it over)."""
        channel = self.app.recorder.channel_name  # type: ignore[attr-defined]
        self._leadership = Leadership(self, identity, channel, reserve=reserve)
        return self._leadership.start()
