"""Event appends through the Stepline application, next to raw psycopg inserts, in one run.

    python -m bench.appends [--count N]

Uses the server of STEPLINE_DATABASE_URL if set (in a fresh database it drops afterwards),
else the embedded PostgreSQL in a temporary directory. Prints operations per second and the
ratio of each to raw single-row insert commits on the same server.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from uuid import UUID, uuid4

import psycopg

from domain.session import StepSpec, WorkflowSession
from engine.store.app import Stepline
from engine.store.database import (
    embedded_postgres,
    eventsourcing_env,
    temporary_database,
)
from engine.store.schema import prepare_database
from tests import workloads

STEPS_PER_SESSION = 20
STATE = b'{"step_index":0,"reasoning":"' + b"x" * 160 + b'","model":"m"}'


@contextmanager
def bench_database() -> Iterator[str]:
    with ExitStack() as stack:
        server = os.environ.get("STEPLINE_DATABASE_URL")
        if server is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            server = stack.enter_context(embedded_postgres(data_dir))
        url = stack.enter_context(temporary_database(server, "stepline_bench"))
        prepare_database(url)
        yield url


def timed(count: int, operation: Callable[[int], object]) -> float:
    """Operations per second of `operation(i)` for i in range(count)."""
    started = time.perf_counter()
    for i in range(count):
        operation(i)
    return count / (time.perf_counter() - started)


def raw_inserts(url: str, count: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_events (id bigserial PRIMARY KEY, originator_id uuid NOT NULL, "
            "originator_version int NOT NULL, topic text NOT NULL, state bytea NOT NULL, "
            "UNIQUE (originator_id, originator_version))"
        )
        originator = uuid4()
        return timed(
            count,
            lambda i: conn.execute(
                "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
                "VALUES (%s, %s, %s, %s)",
                (originator, i + 1, "domain.session:WorkflowSession.TurnRecorded", STATE),
            ),
        )


def raw_locked_notified_inserts(url: str, count: int) -> float:
    """The same insert in the library's transaction shape: table lock, NOTIFY, commit."""
    with psycopg.connect(url, autocommit=True) as conn:
        originator = uuid4()

        def insert(i: int) -> None:
            with conn.pipeline() as pipeline, conn.transaction():
                conn.execute("LOCK TABLE raw_events IN EXCLUSIVE MODE")
                conn.execute("NOTIFY raw_events")
                conn.execute(
                    "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
                    "VALUES (%s, %s, %s, %s) RETURNING id",
                    (originator, i + 1, "domain.session:WorkflowSession.TurnRecorded", STATE),
                )
                pipeline.sync()

        return timed(count, insert)


def new_session(app: Stepline, steps: int = 1) -> UUID:
    return workloads.create_session(
        app,
        name="bench",
        steps=[StepSpec(f"step {i}") for i in range(steps)],
        tenant="t",
        actor="a",
    )


def one_event_per_command(app: Stepline, count: int) -> float:
    """The real path: each command loads the session (snapshot + tail), decides, saves."""
    session_id = new_session(app)
    workloads.start_step(app, session_id, 0)
    return timed(
        count, lambda _: workloads.record_turn(app, session_id, 0, reasoning="x" * 160, model="m")
    )


def one_event_per_save(app: Stepline, count: int) -> float:
    """The append alone: the aggregate stays in memory, each event is saved on its own."""
    session: WorkflowSession = app.get_session(new_session(app))
    session.start_step(0)
    app.save(session)

    def append(_: int) -> None:
        session.record_turn(0, reasoning="x" * 160, model="m")
        app.save(session)

    return timed(count, append)


def step_cycle_per_command(app: Stepline, count: int) -> float:
    """StepStarted, CommandIssued, CommandFinished, StepCompleted in one load-decide-save,
    through workflows of STEPS_PER_SESSION steps."""
    sessions = [new_session(app, STEPS_PER_SESSION) for _ in range(count // STEPS_PER_SESSION + 1)]

    def cycle(session: WorkflowSession, index: int) -> None:
        session.start_step(index)
        session.issue_command(index, command_id=f"c{index}", executor="shell", name="noop", args={})
        session.finish_command(index, command_id=f"c{index}", ok=True, output="")
        session.complete_step(index, summary="done")

    def one(i: int) -> None:
        which, index = divmod(i, STEPS_PER_SESSION)
        app.change(sessions[which], lambda s: cycle(s, index))

    return timed(count, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2_000, help="operations per measurement")
    count = parser.parse_args().count

    with bench_database() as url:
        app = Stepline(eventsourcing_env(url))
        try:
            new_session(app)  # create the tables before timing
            raw = raw_inserts(url, count)
            rows = [
                ("raw psycopg insert, one row per commit", raw, 1),
                (
                    "raw, with table lock + NOTIFY (library SQL)",
                    raw_locked_notified_inserts(url, count),
                    1,
                ),
                ("Stepline command, 1 event (load+save)", one_event_per_command(app, count), 1),
                ("Stepline save, 1 event (no load)", one_event_per_save(app, count), 1),
                ("Stepline command, 4-event step cycle", step_cycle_per_command(app, count), 4),
            ]
        finally:
            app.close()

    print(f"{count} operations each, same PostgreSQL, one run")
    print(f"{'measurement':<42} {'ops/s':>9} {'events/s':>9} {'vs raw commits':>15}")
    for name, ops, events_per_op in rows:
        print(f"{name:<42} {ops:>9.0f} {ops * events_per_op:>9.0f} {ops / raw:>14.2f}x")


if __name__ == "__main__":
    main()
