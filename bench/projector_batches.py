"""The live projector's cost per small batch: what catching the views up after every commit
costs, counted in one process.

    python -m bench.projector_batches [--sessions 300] [--traced 30] [--gathered 27]

Appends sessions of the end-to-end job's shape (bench.e2e.JOB: a GET, then two checks on its
answer), each in the three commits the task loop writes it in (its creation; the first step's
start and command; the rest: 12 events), and after every commit catches the views up on one
connection, as the leader does live on each commit's NOTIFY. Prints, per catch-up, the statements
and round trips on that connection (counted from libpq's trace of `--traced` more sessions,
so tracing costs nothing to the CPU measured) and, per session, the CPU of the catch-ups in this
thread and in the PostgreSQL backends of the bench's database (sampled around each catch-up:
the appends are left out), next to the same per session when the views are rebuilt from the
whole log in the projector's large batches, in the same run: the ratio is what small batches
cost more. (Before the projector read the log on its own connection, it read
it on the application's: one statement per batch the trace did not count.)

Uses the server of STEPLINE_DATABASE_URL if set (in a fresh database it drops afterwards), else
the embedded PostgreSQL. Events are stored in clear (no master key): what is timed is the views.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psutil
import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from bench.appends import bench_database
from bench.e2e import JOB, PATH, TEXT
from domain.session import StepSpec, WorkflowSession
from engine.live.projector import Projector
from engine.loop.limits import session_config
from engine.settings import Settings
from engine.store.app import SessionRequest, Stepline
from engine.store.database import eventsourcing_env

WARM_UP = 10
DONE = object()
"""What a session's commits give once all three are written."""
T = TypeVar("T")
BODY = '{"status": 200, "content_type": "application/json", "body": "{\\"slept_ms\\":0}"}'


def first_command(session: WorkflowSession) -> None:
    """The second commit: the first step started and its request issued (durable before it
    runs)."""
    session.start_step(0)
    session.issue_command(
        0, command_id="s0-c0", executor="http", name="request", args={"method": "GET", "url": PATH}
    )


def the_rest(session: WorkflowSession) -> None:
    """The third commit: the request's answer, the two checks and the session's end."""
    session.finish_command(0, command_id="s0-c0", ok=True, output=BODY, duration_ms=3)
    session.complete_step(0, summary=f"{JOB[0]}: ok", evidence=[BODY])
    checks: list[tuple[str, dict[str, Any]]] = [
        ("expect_status", {"code": 200}),
        ("expect_body_contains", {"text": TEXT}),
    ]
    for index, (name, args) in enumerate(checks, start=1):
        session.start_step(index)
        session.record_check(index, executor="http", name=name, args=args, ok=True)
        session.complete_step(index, summary=f"{JOB[index]}: ok")
    session.complete()


def commits_of_a_session(app: Stepline) -> Iterator[None]:
    """Write one session, yielding after each of its three commits."""
    config = session_config(
        Settings(database_url=None), {"executor": "http", "base_url": "http://127.0.0.1:8000"}
    )
    request = SessionRequest("bench", [StepSpec(text) for text in JOB], config)
    session_id: UUID = app.create(request, tenant="acme", actor="bench").id
    yield
    app.change(session_id, first_command)
    yield
    app.change(session_id, the_rest)
    yield


@dataclass
class Cost:
    catch_ups: int = 0
    events: int = 0
    cpu_s: float = 0.0
    database_cpu_s: float = 0.0


def backends_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def database_backends(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return [pid for (pid,) in rows]


def run(app: Stepline, sessions: int, catch_up: Callable[[], int], backends: list[int]) -> Cost:
    """Write `sessions` sessions, catching the views up after every commit."""
    cost = Cost()
    for _ in range(sessions):
        for _ in commits_of_a_session(app):
            measured(cost, catch_up, backends)
    return cost


def measured(cost: Cost, catch_up: Callable[[], int], backends: list[int]) -> None:
    """One catch-up, its CPU and the database's added to `cost`."""
    database_before = backends_cpu(backends)
    started = time.thread_time()
    applied = catch_up()
    cost.cpu_s += time.thread_time() - started
    cost.database_cpu_s += backends_cpu(backends) - database_before
    cost.catch_ups += 1
    cost.events += applied


def run_gathered(
    app: Stepline, sessions: int, gathered: int, catch_up: Callable[[], int], backends: list[int]
) -> Cost:
    """Write `sessions` sessions as the live leader sees them: before each catch-up, the first
    commit of `gathered` new sessions and the next commit of each one under way (so a session
    spans three catch-ups, as its commits span the leader's gathering time)."""
    cost = Cost()
    under_way: list[Iterator[None]] = []
    started_sessions = 0
    while started_sessions < sessions or under_way:
        under_way = [commits for commits in under_way if next(commits, DONE) is not DONE]
        for _ in range(min(gathered, sessions - started_sessions)):
            commits = commits_of_a_session(app)
            next(commits)
            under_way.append(commits)
            started_sessions += 1
        measured(cost, catch_up, backends)
    return cost


def rebuilt(projector: Projector, backends: list[int]) -> Cost:
    """Rebuild the views from the whole log in the projector's large batches."""
    database_before = backends_cpu(backends)
    started = time.thread_time()
    events = projector.rebuild()
    cpu_s = time.thread_time() - started
    return Cost(0, events, cpu_s, backends_cpu(backends) - database_before)


def traced(conn: psycopg.Connection[Any], work: Callable[[], T]) -> tuple[T, list[str]]:
    """What `work` returns, and the lines of libpq's trace of the connection's messages while
    it ran."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace"
        with path.open("w") as file:
            conn.pgconn.trace(file.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                done = work()
            finally:
                conn.pgconn.untrace()
        return done, path.read_text().splitlines()


def counted(trace: list[str]) -> tuple[int, int]:
    """Statements (each Execute or simple Query the client sends) and round trips (each time
    the client, having sent, reads the server's answer)."""
    statements = round_trips = 0
    sending = False
    for line in trace:
        direction, _, message = line.split("\t")[:3]
        if direction == "F":
            statements += message in ("Execute", "Query")
            sending = True
        elif direction == "B" and sending:
            round_trips += 1
            sending = False
    return statements, round_trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--traced", type=int, default=30, help="sessions whose SQL is counted")
    parser.add_argument(
        "--gathered",
        type=int,
        default=0,
        help="catch up once per this many new sessions, each commit in the next catch-up "
        "(the live leader's batches: ~27 sessions under bench.e2e), not after every commit",
    )
    arguments = parser.parse_args()

    with (
        bench_database() as url,
        ConnectionPool(url, kwargs={"autocommit": True}) as pool,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        app = Stepline(eventsourcing_env(url))
        projector = Projector(app, pool)
        projector.prepare()

        def catch_up() -> int:
            return projector.catch_up(conn=conn)

        def sessions_of(count: int, backends: list[int]) -> Cost:
            if arguments.gathered:
                return run_gathered(app, count, arguments.gathered, catch_up, backends)
            return run(app, count, catch_up, backends)

        sessions_of(WARM_UP, [])
        backends = database_backends(url)
        live = sessions_of(arguments.sessions, backends)
        sample, trace = traced(conn, lambda: sessions_of(arguments.traced, []))
        statements, round_trips = counted(trace)
        rebuild = rebuilt(projector, backends)
        app.close()

    sessions = WARM_UP + arguments.sessions + arguments.traced
    when = (
        f"once per {arguments.gathered} new sessions"
        if arguments.gathered
        else "after every commit"
    )
    print(
        f"{arguments.sessions} sessions of [{', '.join(JOB)}] in 3 commits each, the views "
        f"caught up {when}: {live.events / live.catch_ups:.1f} events, "
        f"{statements / sample.catch_ups:.1f} statements and "
        f"{round_trips / sample.catch_ups:.1f} round trips per catch-up"
    )
    print(f"{'per session':<28}{'caught up live':>15}{'rebuilt':>9}{'ratio':>8}")
    for label, live_s, rebuild_s in (
        ("CPU ms (this thread)", live.cpu_s, rebuild.cpu_s),
        ("db CPU ms (backends)", live.database_cpu_s, rebuild.database_cpu_s),
    ):
        live_ms = live_s / arguments.sessions * 1000
        rebuild_ms = rebuild_s / sessions * 1000
        print(f"{label:<28}{live_ms:>15.2f}{rebuild_ms:>9.2f}{live_ms / rebuild_ms:>7.1f}x")


if __name__ == "__main__":
    main()
