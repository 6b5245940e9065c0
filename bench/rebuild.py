"""Rebuild throughput of the read models, next to the library's one-transaction-per-event
runner, on the same log in the same run.

    python -m bench.rebuild [--sessions 5000]

Builds a log of sessions x 20 events through the Stepline application, rebuilds all the views
with Stepline's batched projector, then empties them and replays the same log through the
eventsourcing library's ProjectionRunner (each event applied to the same views and its
tracking row in a transaction of its own), and checks both produced the same rows.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from psycopg_pool import ConnectionPool

from bench.appends import bench_database
from domain.errors import StandardError
from domain.session import StepSpec, WorkflowSession
from engine.live.projector import Projector
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from projections import ALL_VIEWS, tracking
from projections.view import Recorded, SessionLog

ERROR = StandardError.of("TASK_LOOP_TIMEOUT", "too slow").to_dict()


def twenty_events(app: Stepline, n: int) -> WorkflowSession:
    """Created + 3 steps of 5 events + a second turn + pause/resume + an ending = 20 events."""
    session = WorkflowSession.create(
        name=f"bench {n}",
        steps=[StepSpec(f"step {i}") for i in range(3)],
        tenant=f"tenant-{n % 7}",
        actor="bench",
        labels={"batch": str(n % 10)},
    )
    for index in range(3):
        session.start_step(index)
        session.record_turn(index, reasoning="r", model="m", prompt_tokens=10)
        if index == 0:
            session.record_turn(index, reasoning="again", model="m", prompt_tokens=10)
        session.issue_command(index, command_id=f"c{index}", executor="http", name="get", args={})
        session.finish_command(index, command_id=f"c{index}", ok=True, output="ok", duration_ms=3)
        if index == 2 and n % 5 == 0:
            session.fail_step(index, error=ERROR, retryable=False)
        else:
            session.complete_step(index, summary="done")
    session.pause("bench", "bench")
    session.resume("bench", "bench")
    if n % 5 == 0:
        session.fail(ERROR)
    elif n % 7 == 0:
        session.cancel("bench", "bench")
    else:
        session.complete()
    return session


def build_log(app: Stepline, sessions: int) -> int:
    for n in range(sessions):
        app.save(twenty_events(app, n))
    return app.recorder.max_notification_id() or 0


class TrackedViews(PostgresTrackingRecorder):
    """Every view plus the library's tracking row, one transaction per event."""

    log: ClassVar[SessionLog | None] = None
    """The log the views read back (the library builds this recorder itself: set by main)."""

    def apply(self, recorded: Recorded, position: Tracking) -> None:
        assert self.log is not None
        with self.datastore.transaction(commit=True) as cursor:
            for view in ALL_VIEWS:
                view.apply(cursor.connection, [recorded], self.log)
            self._insert_tracking(cursor, position)


class ViewsProjection(Projection[TrackedViews]):
    name = "bench_views"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.apply(Recorded(tracking.notification_id, domain_event), tracking)


class TrackingOnly(PostgresTrackingRecorder):
    """No view at all: just the tracking row, one transaction per event — the ceiling of
    the one-transaction-per-event approach, whatever the views do."""

    def apply(self, position: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            self._insert_tracking(cursor, position)


class TrackingOnlyProjection(Projection[TrackingOnly]):
    name = "bench_tracking_only"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.apply(tracking)


def library_rate(
    env: dict[str, str], projection: type[Projection[Any]], view: type[Any], events: int
) -> float:
    """Events/s of the library's ProjectionRunner until it has processed `events` events."""
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=Stepline, projection_class=projection, view_class=view, env=env
    ) as runner:
        runner.wait(events, timeout=3_600)
    return events / (time.perf_counter() - started)


def dump(pool: ConnectionPool) -> list[Any]:
    with pool.connection() as conn:
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
            for view in ALL_VIEWS
            for t in view.tables
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5_000)
    parser.add_argument(
        "--views-sample",
        type=int,
        default=5_000,
        help="events the library runner applies the views to (0: the whole log, and "
        "compare its rows with the projector's)",
    )
    arguments = parser.parse_args()

    with bench_database() as url, ConnectionPool(url, kwargs={"autocommit": True}) as pool:
        env = eventsourcing_env(url)
        app = Stepline(env)
        projector = Projector(app, pool)
        projector.prepare()

        started = time.perf_counter()
        head = build_log(app, arguments.sessions)
        built_s = time.perf_counter() - started
        print(f"log: {head} events, {arguments.sessions} sessions, built in {built_s:.1f} s")

        started = time.perf_counter()
        projector.rebuild()
        ours = head / (time.perf_counter() - started)
        ours_rows = dump(pool)

        ceiling = library_rate(env, TrackingOnlyProjection, TrackingOnly, head)

        with pool.connection() as conn, conn.transaction():
            for view in ALL_VIEWS:
                tracking.truncate_tables(conn, view)
        sample = arguments.views_sample or head
        TrackedViews.log = projector.log
        with_views = library_rate(env, ViewsProjection, TrackedViews, min(sample, head))
        same = dump(pool) == ours_rows if sample >= head else None
        app.close()

    print(f"{'runner, on the same log':<62} {'events/s':>9} {'ratio':>7}")
    rows = [
        (f"Stepline projector: {len(ALL_VIEWS)} views, batches of 5000 per transaction", ours),
        ("eventsourcing ProjectionRunner: no view, 1 txn per event", ceiling),
        (
            f"eventsourcing ProjectionRunner: {len(ALL_VIEWS)} views, 1 txn per event "
            f"({sample} ev.)",
            with_views,
        ),
    ]
    for name, rate in rows:
        print(f"{name:<62} {rate:>9,.0f} {ours / rate:>6.1f}x")
    if same is not None:
        print(f"same rows from both: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
