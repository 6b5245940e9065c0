"""The read models on a real PostgreSQL: rows, exactly-once, rebuild, live follow, layout."""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import psycopg
import pytest
from psycopg import Connection, pq
from psycopg_pool import ConnectionPool

from api.http.reads import progress_beside_log
from domain.session import StepSpec, WorkflowSession
from engine.live.follower import LogFollower
from engine.live.leadership import RESERVE_POLLS, Leadership, current_leader
from engine.live.projector import VIEWS_CHANNEL, Projector, UnknownView
from engine.ownership.leases import Leases
from engine.store.app import Stepline
from projections import ALL_VIEWS, session_progress, step_history
from projections.audit_log import AuditFilter, entries
from projections.session_index import SessionFilter, SessionIndexView, id_range, list_sessions
from projections.session_progress import SessionProgressView
from projections.step_history import StepHistoryView
from projections.view import Carried, Recorded, SessionLog
from tests import workloads
from tests.waiting import eventually


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """Views project the whole log: a database of this test's own."""
    return fresh_app


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=4, kwargs={"autocommit": True}
    ) as connections:
        yield connections


@pytest.fixture
def projector(app: Stepline, pool: ConnectionPool) -> Projector:
    runner = Projector(app, pool)
    runner.prepare()
    return runner


def dump(pool: ConnectionPool) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every view, in key order."""
    keys = {
        "session_progress": "session_id",
        "step_history": "session_id, step_index",
        "session_index": "session_id",
        "audit_log": "position",
        "batch_index": "batch_id",
        "ai_usage": "session_id, step_index, day, model",
        "ai_usage_sessions": "session_id",
        "workflow_index": "workflow_id",
        "workflow_versions": "workflow_id, number",
        "analytics_sessions": "session_id",
        "analytics_step_attempts": "session_id, step_index, attempt",
    }
    with pool.connection() as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            for table, key in keys.items()
        }


def progress(pool: ConnectionPool, session_id: UUID) -> session_progress.Progress:
    with pool.connection() as conn:
        row = session_progress.find(conn, session_id)
    assert row is not None
    return row


def steps(pool: ConnectionPool, session_id: UUID) -> list[step_history.StepRow]:
    with pool.connection() as conn:
        return step_history.steps_of(conn, session_id)


# ---- the rows of each view --------------------------------------------------------------


def test_progress_of_a_completed_session(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.completed(app)
    projector.catch_up()

    row = progress(pool, session_id)
    assert (row.status, row.completed_steps, row.total_steps, row.percent) == (
        "completed",
        2,
        2,
        100.0,
    )
    assert (row.current_step_index, row.current_step_text) == (None, None)
    assert row.version == app.get_session(session_id).version
    assert row.started_at is not None
    assert row.finished_at is not None
    assert row.created_at <= row.started_at <= row.finished_at == row.updated_at
    assert row.estimated_remaining_ms == 0


def test_a_read_folds_in_what_the_progress_view_lacks_as_the_view_then_holds_it(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    """`GET /v1/sessions/{id}` reads the progress row beside the events it has not applied and
    folds them in: with no row yet, and with a row some events behind, the answer is the row
    the view holds once it has caught up."""
    behind = workloads.create(app)
    workloads.run_step(app, behind, 0)
    projector.catch_up()
    unseen = workloads.create(app)
    workloads.run_step(app, unseen, 0)
    workloads.run_step(app, behind, 1, commands=2, checks=1)
    workloads.complete_session(app, behind)

    with pool.connection() as conn:
        reads = {i: progress_beside_log(conn, i, app.events_table) for i in (unseen, behind)}
    folded = {i: read.current(app.mapper) for i, read in reads.items()}

    assert reads[behind].row is not None
    assert not reads[behind].caught_up
    assert reads[unseen].row is None  # created after the views caught up
    projector.catch_up()
    assert folded == {i: progress(pool, i) for i in (unseen, behind)}
    assert folded[behind] is not None
    assert folded[behind].status == "completed"


def test_progress_estimates_time_left_from_finished_steps(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app, steps=4)
    workloads.start_step(app, session_id, 0)
    projector.catch_up()
    assert progress(pool, session_id).estimated_remaining_ms is None  # no step finished yet

    workloads.complete_step(app, session_id, 0, summary="done")
    projector.catch_up()
    row = progress(pool, session_id)
    step_ms = steps(pool, session_id)[0].duration_ms
    assert step_ms is not None
    assert (row.current_step_index, row.current_step_text, row.percent) == (1, "step 1", 25.0)
    assert row.estimated_remaining_ms == step_ms * 3


def test_progress_and_steps_of_a_failed_session(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.failed(app)
    projector.catch_up()

    row = progress(pool, session_id)
    assert (row.status, row.completed_steps, row.failed_steps) == ("failed", 1, 1)
    assert row.estimated_remaining_ms is None
    assert [(s.status, s.error_code) for s in steps(pool, session_id)] == [
        ("completed", None),
        ("failed", "VALIDATION_FAILED"),
        ("pending", None),
    ]


def test_a_retried_step_shows_its_attempts_and_no_failure(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.retried(app)
    projector.catch_up()

    first = steps(pool, session_id)[0]
    assert (first.status, first.attempts, first.error_code, first.summary) == (
        "completed",
        2,
        None,
        "did step 0",
    )
    assert (first.turns, first.commands) == (1, 1)
    row = progress(pool, session_id)
    assert (row.status, row.failed_steps, row.completed_steps) == ("completed", 0, 2)


def test_step_history_counts_turns_commands_checks_and_times(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.completed(app)
    projector.catch_up()

    first, second = steps(pool, session_id)
    assert (first.commands, first.checks) == (1, 0)
    assert (second.text, second.status, second.turns, second.commands, second.checks) == (
        "step 1",
        "completed",
        1,
        2,
        1,
    )
    assert second.started_at is not None
    assert second.finished_at is not None
    assert second.duration_ms == int(
        (second.finished_at - second.started_at) / timedelta(milliseconds=1)
    )


def test_skipped_steps_and_a_loops_iterations_show_in_every_view(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    pending = workloads.create_session(
        app,
        name="a loop ahead",
        steps=[StepSpec("first"), *workloads.looping_steps()],
        tenant="acme",
        actor="alice",
        config={"inputs": {"items": ["a", "b"]}},
    )
    session_id = workloads.looped(app)
    projector.catch_up()

    ahead = progress(pool, pending)
    assert (ahead.total_steps, ahead.loops_ahead, ahead.steps_may_grow) == (3, 1, True)
    row = progress(pool, session_id)
    assert (row.status, row.total_steps, row.completed_steps, row.skipped_steps) == (
        "completed", 7, 5, 2
    )  # fmt: skip
    assert (row.percent, row.loops_ahead, row.steps_may_grow) == (100.0, 0, False)
    rows = steps(pool, session_id)
    assert [(r.step_index, r.text, r.status.value) for r in rows] == [
        (0, "step 0", "skipped"),
        (1, "for each item in inputs.items", "completed"),
        (2, "step for a", "completed"),
        (3, "after", "completed"),
        (4, "step for b", "skipped"),
        (5, "after", "completed"),
        (6, "last step", "completed"),
    ]
    assert rows[0].summary == "skipped: if inputs.items == [] was false"
    assert rows[0].condition == "inputs.items == []"
    assert rows[1].summary == "2 iterations"
    assert [(r.origin or {}).get("iteration") for r in rows] == [None, None, 0, 0, 1, 1, None]
    assert rows[4].origin is not None
    assert rows[4].origin["bind"] == {"item": "b"}
    with pool.connection() as conn:
        indexed = conn.execute(
            "SELECT step_count FROM session_index WHERE session_id = %s", (session_id,)
        ).fetchone()
    assert indexed == (7,)
    with pool.connection() as conn:
        (fork,) = list_sessions(conn, SessionFilter(tenant="acme", source_id=session_id))
    forked = steps(pool, fork.session_id)
    assert [r.status.value for r in forked] == [
        "skipped", "completed", "completed", "completed", "skipped", "completed", "completed"
    ]  # fmt: skip
    assert progress(pool, fork.session_id).skipped_steps == 2


def test_pause_and_resume_show_in_progress_and_index(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    paused_id = workloads.paused(app)
    resumed_id = workloads.paused_and_resumed(app)
    projector.catch_up()

    assert progress(pool, paused_id).status == "paused"
    assert progress(pool, resumed_id).status == "running"
    with pool.connection() as conn:
        assert [
            s.session_id for s in list_sessions(conn, SessionFilter("acme", status="paused"))
        ] == [paused_id]
        assert [
            s.session_id for s in list_sessions(conn, SessionFilter("acme", status="running"))
        ] == [resumed_id]


def test_a_waiting_session_shows_what_it_waits_for_until_when_in_every_view(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    waiting_id = workloads.waiting(app)
    waited_id = workloads.waited(app)
    projector.catch_up()

    row = progress(pool, waiting_id)
    assert (row.status, row.waiting_for) == ("waiting", "approval: Ship it?")
    assert row.due_at is not None
    assert progress(pool, waited_id).waiting_for is None
    with pool.connection() as conn:
        [indexed] = list_sessions(conn, SessionFilter("acme", status="waiting"))
        audit = [e.description for e in entries(conn, AuditFilter("acme", waited_id))]
    assert (indexed.session_id, indexed.due_at) == (waiting_id, row.due_at)
    assert steps(pool, waiting_id)[0].status == "waiting"
    asked, answered = steps(pool, waited_id)[0].did
    assert asked.startswith("wait for approval: Ship it? until ")
    assert answered == "approved by bob: fine"
    assert "approval of step 0 approved: fine" in audit
    assert "received signal paid" in audit
    assert "signal of step 1 signalled" in audit


def test_a_step_running_when_its_session_ends_takes_the_ending(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    cancelled_id = workloads.cancelled(app)
    expired_id = workloads.expired(app)
    projector.catch_up()

    assert [s.status for s in steps(pool, cancelled_id)] == ["completed", "cancelled"]
    assert [s.status for s in steps(pool, expired_id)] == ["expired", "pending"]
    assert progress(pool, cancelled_id).status == "cancelled"
    assert progress(pool, expired_id).status == "expired"


def test_a_failed_or_expired_session_says_why_in_its_progress(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    failed_id = workloads.failed(app)
    expired_id = workloads.expired(app)
    completed_id = workloads.completed(app)
    projector.catch_up()

    failed = progress(pool, failed_id)
    assert (failed.error_code, failed.error_message) == ("VALIDATION_FAILED", "no such page")
    assert progress(pool, expired_id).error_code == "SESSION_EXPIRED"
    assert progress(pool, completed_id).error_code is None


def test_a_paused_step_reads_paused_with_its_clock_stopped_at_the_pause(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.paused(app)
    projector.catch_up()

    step = steps(pool, session_id)[0]
    started, paused = (
        e.timestamp
        for e in app.history(session_id)
        if isinstance(e, WorkflowSession.StepStarted | WorkflowSession.Paused)
    )
    assert step.status == "paused"
    assert step.duration_ms == int((paused - started) / timedelta(milliseconds=1))

    app.resume(session_id, reason="go on", actor="bob")
    projector.catch_up()
    assert (steps(pool, session_id)[0].status, steps(pool, session_id)[0].duration_ms) == (
        "running",
        None,
    )
    app.cancel(session_id, reason="enough", actor="bob")
    projector.catch_up()
    assert steps(pool, session_id)[0].status == "cancelled"


def test_a_step_paused_when_its_session_ends_takes_the_ending_and_keeps_its_clock(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app)
    workloads.start_step(app, session_id, 0)
    app.pause(session_id, actor="bob")
    projector.catch_up()
    paused_ms = steps(pool, session_id)[0].duration_ms

    app.cancel(session_id, reason="not needed", actor="carol")
    projector.catch_up()

    assert (steps(pool, session_id)[0].status, steps(pool, session_id)[0].duration_ms) == (
        "cancelled",
        paused_ms,
    )


def test_step_history_says_what_each_command_and_check_of_the_last_attempt_did(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app, steps=1, max_attempts=2)
    workloads.start_step(app, session_id, 0)
    workloads.issue_command(
        app, session_id, 0, command_id="a", executor="http", name="request", args={}
    )
    workloads.finish_command(app, session_id, 0, command_id="a", ok=False, duration_ms=1)
    workloads.fail_step(app, session_id, 0, workloads.TIMEOUT)
    workloads.start_step(app, session_id, 0)
    commands = [
        ("request", {"method": "post", "url": "/todos"}, '{"status": 201, "body": "{}"}'),
        ("save_json", {"path": "id", "name": "todo_id"}, '{"saved": "todo_id", "value": 7}'),
        ("click", {"target": "Sign in"}, '{"url": "/home"}'),
    ]
    for n, (name, args, output) in enumerate(commands):
        workloads.issue_command(
            app, session_id, 0, command_id=f"c{n}", executor="http", name=name, args=args
        )
        workloads.finish_command(
            app, session_id, 0, command_id=f"c{n}", ok=True, output=output, duration_ms=5
        )
    app.change(
        session_id,
        lambda s: s.record_check(
            0, executor="http", name="expect_status", args={"code": 201}, ok=True
        ),
    )
    projector.catch_up()

    assert steps(pool, session_id)[0].did == [
        "POST /todos → 201",
        "saved todo_id = 7",
        'click "Sign in": ok',
        "expect status 201: passed",
    ]


def test_sessions_are_found_by_the_start_of_their_id_within_their_tenant(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    mine = [workloads.create(app) for _ in range(3)]
    theirs = workloads.pending(app)
    projector.catch_up()

    with pool.connection() as conn:
        for session_id in mine:
            found = list_sessions(conn, SessionFilter("acme", id_prefix=str(session_id)[:8]))
            assert [s.session_id for s in found] == [session_id]
        assert list_sessions(conn, SessionFilter("acme", id_prefix=str(theirs)[:13])) == []
        full = list_sessions(conn, SessionFilter("globex", id_prefix=str(theirs).upper()))
    assert [s.session_id for s in full] == [theirs]
    for bad in ("abc", "abcdefgh1", "zzzz", str(theirs) + "0"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            id_range(bad)


def test_the_audit_log_reads_newest_first_and_without_the_events_of_steps(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.cancelled(app)
    projector.catch_up()

    with pool.connection() as conn:
        everything = entries(conn, AuditFilter(session_id=session_id))
        newest = entries(conn, AuditFilter(session_id=session_id), 3, newest_first=True)
        older = entries(
            conn, AuditFilter(session_id=session_id), newest_first=True, before=newest[-1].position
        )
        session_level = entries(conn, AuditFilter(session_id=session_id, per_step=False))

    assert newest + older == everything[::-1]
    assert [e.event_type for e in session_level] == ["Created", "Cancelled"]


def test_the_audit_log_has_every_event_with_actor_and_description(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.cancelled(app)
    projector.catch_up()

    with pool.connection() as conn:
        trail = entries(conn, AuditFilter(session_id=session_id))
        by_carol = entries(conn, AuditFilter(tenant="acme", actor="carol"))
    history = app.history(session_id)
    assert [e.event_type for e in trail] == [type(e).__name__ for e in history]
    assert [e.position for e in trail] == sorted(e.position for e in trail)
    assert {e.tenant for e in trail} == {"acme"}
    assert trail[0].description == 'created "2-step workflow" with 2 steps'
    assert [(e.event_type, e.description) for e in by_carol] == [
        ("Cancelled", "cancelled: not needed")
    ]


def test_the_audit_log_describes_a_check_and_its_verdict(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.completed(app)
    projector.catch_up()

    with pool.connection() as conn:
        checks = entries(conn, AuditFilter(session_id=session_id, event_type="Checked"))
    assert [(e.actor, e.description) for e in checks] == [
        ("stepline", "checked http.expect_status in step 1: passed")
    ]


def test_sessions_are_listed_by_tenant_status_label_and_page(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    made = [workloads.create(app, labels={"suite": "smoke", "n": str(i)}) for i in range(5)]
    other_tenant = workloads.pending(app)
    projector.catch_up()

    with pool.connection() as conn:
        first_page = list_sessions(conn, SessionFilter("acme"), limit=3)
        last = first_page[-1]
        second_page = list_sessions(
            conn, SessionFilter("acme"), limit=3, after=(last.created_at, last.session_id)
        )
        labelled = list_sessions(conn, SessionFilter("acme", labels={"n": "3"}))
        nightly = list_sessions(conn, SessionFilter("globex", labels={"suite": "nightly"}))
        none_before = list_sessions(
            conn, SessionFilter("acme", created_before=first_page[-1].created_at)
        )

    assert [s.session_id for s in first_page + second_page] == made[::-1]
    assert [s.session_id for s in labelled] == [made[3]]
    assert [s.session_id for s in nightly] == [other_tenant]
    assert {s.session_id for s in none_before} == set(made[:2])


def test_an_event_carrying_nul_does_not_stop_the_views(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app)
    workloads.start_step(app, session_id, 0)
    # e.g. echoed binary
    workloads.complete_step(app, session_id, 0, summary="the output was a\x00b")

    projector.catch_up()

    assert steps(pool, session_id)[0].summary == "the output was ab"
    assert {s.lag for s in projector.status()} == {0}


# ---- exactly once -----------------------------------------------------------------------


class CrashingView:
    """A view that fails on the nth event it is given: a crash after the other views wrote."""

    name: ClassVar[str] = "crashing"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, crash_at_position: int) -> None:
        self.crash_at_position = crash_at_position

    def create(self, conn: Connection[Any]) -> None:
        pass

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        if any(r.position == self.crash_at_position for r in batch):
            raise RuntimeError("crash between the view write and the tracking write")


def test_a_crash_mid_batch_leaves_neither_rows_nor_position(
    app: Stepline, pool: ConnectionPool
) -> None:
    session_id = workloads.completed(app)
    head = app.recorder.max_notification_id()
    assert head is not None
    crashing = Projector(app, pool, views=[SessionProgressView(), CrashingView(head)], batch_size=4)
    crashing.prepare()

    with pytest.raises(RuntimeError, match="crash"):
        crashing.catch_up()

    reached = {s.name: s.position for s in crashing.status()}
    assert reached["session_progress"] == reached["crashing"] < head
    row_before = progress(pool, session_id)
    assert row_before.version == reached["session_progress"]  # rows match the position exactly

    recovered = Projector(app, pool, views=[SessionProgressView()], batch_size=4)
    recovered.catch_up()
    assert progress(pool, session_id).status == "completed"


def test_applying_the_same_events_twice_changes_nothing(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    workloads.retried(app)
    workloads.cancelled(app)
    projector.catch_up()
    once = dump(pool)

    batch = [
        Recorded(n.id, app.mapper.to_domain_event(n))  # type: ignore[arg-type]
        for n in app.recorder.select_notifications(start=None, limit=10_000)
    ]
    with pool.connection() as conn, conn.transaction():
        for view in ALL_VIEWS:
            view.apply(conn, batch, projector.log)
            view.apply(conn, batch[len(batch) // 2 :], projector.log)

    assert dump(pool) == once


def test_two_runners_on_one_database_apply_each_event_once(
    app: Stepline, pool: ConnectionPool
) -> None:
    for make in workloads.EVERY_KIND.values():
        make(app)
    leader, fallback = Projector(app, pool, batch_size=7), Projector(app, pool, batch_size=5)
    leader.prepare()
    stop = leader.start_leading("leader")
    try:
        fallback.catch_up()  # as a read does when the leader is slow, while the leader works
        assert leader.wait_until(app.recorder.max_notification_id() or 0, timeout=30)
    finally:
        stop()

    rows = dump(pool)
    assert [row[0] for row in rows["audit_log"]] == [
        n.id for n in app.recorder.select_notifications(start=None, limit=10_000)
    ]


# ---- rows carried from one batch to the next ---------------------------------------------


def statements_of(conn: Connection[Any], work: Callable[[], object]) -> list[str]:
    """The text of each statement `work` sends on `conn` (none prepared), from libpq's trace."""
    conn.prepare_threshold = None
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace"
        with path.open("w") as file:
            conn.pgconn.trace(file.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                work()
            finally:
                conn.pgconn.untrace()
        messages = [line.split("\t") for line in path.read_text().splitlines()]
    return [m[3] for m in messages if m[0] == "F" and m[2] in ("Parse", "Query")]


def reads_of(table: str, statements: list[str]) -> list[str]:
    return [s for s in statements if f'FROM "{table}" WHERE session_id = ANY' in s]


CARRIED = (
    "session_progress",
    "step_history",
    "session_index",
    "analytics_sessions",
    "analytics_step_attempts",
    "ai_usage_sessions",
    "webhook_subscriptions",
    "learning_sessions",
)
"""The tables whose rows a projector carries from a batch to the next."""


def test_a_batch_takes_the_rows_its_last_batch_wrote_without_reading_them_back(
    app: Stepline, projector: Projector, fresh_database_url: str, pool: ConnectionPool
) -> None:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        session_id = workloads.create(app)
        created = statements_of(conn, lambda: projector.catch_up(conn=conn))
        workloads.run_step(app, session_id, 0)
        ran = statements_of(conn, lambda: projector.catch_up(conn=conn))

    assert created
    assert ran
    for table in CARRIED:
        # Created in its batch: no row to read; then written by the batch before: carried.
        assert not reads_of(table, created + ran), table
    assert progress(pool, session_id).completed_steps == 1
    assert [row.status for row in steps(pool, session_id)] == ["completed", "pending"]


def test_rows_are_read_again_once_another_runner_moved_the_views(
    app: Stepline, projector: Projector, pool: ConnectionPool, fresh_database_url: str
) -> None:
    other = Projector(app, pool)
    session_id = workloads.create(app)
    projector.catch_up()
    workloads.run_step(app, session_id, 0)
    other.catch_up()  # the rows `projector` carries are behind the table now
    workloads.run_step(app, session_id, 1)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        after = statements_of(conn, lambda: projector.catch_up(conn=conn))

    assert all(reads_of(table, after) for table in CARRIED)
    live = dump(pool)
    projector.rebuild()
    assert dump(pool) == live
    assert progress(pool, session_id).completed_steps == 2


def test_a_second_look_at_a_carried_table_within_a_batch_finds_what_the_batch_wrote(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    """A view that reads a carried table twice in one batch gets, the second time, the rows
    as the batch has written them since, not as the last batch left them."""
    session_id = workloads.create(app)
    projector.catch_up()
    table = SessionProgressView.rows
    views = [SessionProgressView()]
    positions = {"session_progress": 1}  # as the last batch left them: the rows are good
    carried = Carried()
    with pool.connection() as conn, conn.transaction(force_rollback=True):
        with carried.applying(views, positions, []):
            [row] = table.load_for_sessions(conn, [session_id])
            table.upsert(conn, [replace(row, completed_steps=1)])
        carried.committed(positions)
        with carried.applying(views, positions, []):
            [first] = table.load_for_sessions(conn, [session_id])  # carried over
            table.upsert(conn, [replace(first, completed_steps=2)])
            [second] = table.load_for_sessions(conn, [session_id])

    assert first.completed_steps == 1
    assert second.completed_steps == 2


def test_rows_carried_over_hold_a_row_written_in_place_of_one_read_and_a_new_one_once(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    """Of a table with several rows a session, the next batch is given the rows as the last
    one wrote them: a row it read and changed in place, one it replaced with another
    object, one it added, and one it did not touch, each once, as the table holds them."""
    session_id = workloads.create(app, steps=3)
    projector.catch_up()
    table = StepHistoryView.rows
    views = [StepHistoryView()]
    positions = {"step_history": 1}
    carried = Carried()
    with pool.connection() as conn, conn.transaction(force_rollback=True):
        with carried.applying(views, positions, []):
            first, second, *others = table.load_for_sessions(conn, [session_id])
            first.turns = 7  # changed where it lies
            table.upsert(conn, [first, replace(second, summary="replaced")])
            table.upsert(conn, [replace(second, step_index=9, summary="added")])
        carried.committed(positions)
        with carried.applying(views, positions, []):
            kept = table.load_for_sessions(conn, [session_id])
        stored = table.read_sessions(conn, [session_id])

    assert others  # a row not written, carried as it was read
    assert sorted(kept, key=lambda r: r.step_index) == sorted(stored, key=lambda r: r.step_index)
    assert [r.step_index for r in kept].count(second.step_index) == 1
    assert {r.step_index: r.summary for r in kept}[9] == "added"
    assert {r.step_index: r.turns for r in kept}[first.step_index] == 7


class CrashingOnce(CrashingView):
    """Fails the first batch holding its position, after the views before it changed rows."""

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        if self.crash_at_position:
            crashing, self.crash_at_position = self.crash_at_position, 0
            if any(r.position == crashing for r in batch):
                raise RuntimeError("crash between the view write and the tracking write")


def test_a_batch_that_failed_leaves_no_row_it_changed_to_the_next(
    app: Stepline, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app)
    views = [SessionProgressView(), StepHistoryView(), SessionIndexView()]
    runner = Projector(app, pool, views=[*views, CrashingOnce(0)])
    runner.prepare()
    runner.catch_up()  # the session's rows carried
    workloads.run_step(app, session_id, 0)
    runner.views["crashing"] = CrashingOnce(app.recorder.max_notification_id() or 0)

    with pytest.raises(RuntimeError, match="crash"):
        runner.catch_up()  # the views folded step 0 into the rows they carried, then it failed
    workloads.run_step(app, session_id, 1)
    runner.catch_up()

    live = dump(pool)
    Projector(app, pool, views=views).rebuild()
    assert dump(pool) == live
    assert progress(pool, session_id).completed_steps == 2
    assert [row.attempts for row in steps(pool, session_id)] == [1, 1]


# ---- rebuild ----------------------------------------------------------------------------


def test_a_rebuilt_view_equals_the_incrementally_built_one(
    app: Stepline, pool: ConnectionPool
) -> None:
    incremental = Projector(app, pool, batch_size=3)
    incremental.prepare()
    for round_ in range(3):
        for make in workloads.EVERY_KIND.values():
            make(app)
            if round_ != 1:
                incremental.catch_up()  # small, uneven batches while the log grows
    incremental.catch_up()
    built_live = dump(pool)
    assert len(built_live["audit_log"]) == app.recorder.max_notification_id()
    assert len(built_live["workflow_versions"]) == 4  # 2, then the second again each round

    replayed = Projector(app, pool).rebuild()

    assert replayed == len(built_live["audit_log"])
    assert dump(pool) == built_live


def test_rebuilding_one_view_leaves_the_others_alone(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    workloads.completed(app)
    projector.catch_up()
    with pool.connection() as conn:
        conn.execute("DELETE FROM session_index")
        conn.execute("UPDATE audit_log SET description = 'tampered'")

    projector.rebuild(["session_index"])

    rows = dump(pool)
    assert len(rows["session_index"]) == 1
    assert {row[-1] for row in rows["audit_log"]} == {"tampered"}


def test_an_unknown_view_name_is_refused(projector: Projector) -> None:
    with pytest.raises(UnknownView, match="the views are"):
        projector.rebuild(["sessions"])


# ---- live, read-your-writes and lag -----------------------------------------------------


def test_a_leading_projector_shows_a_write_to_whoever_waits_for_it(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    stop = projector.start_leading("leader")
    try:
        session_id = workloads.create(app)
        written_at = projector.head()
        assert projector.wait_until(written_at, timeout=10)
        assert progress(pool, session_id).status == "pending"

        workloads.start_step(app, session_id, 0)
        assert projector.wait_until(projector.head(), timeout=10, names=["session_progress"])
        assert progress(pool, session_id).status == "running"
    finally:
        stop()


@pytest.fixture
def hearing(app: Stepline, pool: ConnectionPool) -> Iterator[Projector]:
    """A process's projector that does not stand for the lead: it hears the leader's
    positions through its follower, as every `serve` and `worker` does."""
    reader = Projector(app, pool)
    follower = LogFollower(pool, [VIEWS_CHANNEL])
    reader.hear(follower)
    stop = follower.start()
    yield reader
    stop()


def leader_of(pool: ConnectionPool) -> str | None:
    with pool.connection() as conn:
        leader = current_leader(conn)
    return None if leader is None else leader.holder


def test_a_process_that_does_not_lead_reads_its_writes_once_the_leader_says_so(
    app: Stepline, projector: Projector, hearing: Projector, pool: ConnectionPool
) -> None:
    stop = projector.start_leading("leader")
    try:
        eventually(lambda: projector.leading, "the only candidate leads")
        session_id = workloads.create(app)

        assert hearing.wait_until(hearing.head(), timeout=60)

        assert progress(pool, session_id).status == "pending"
        assert hearing.applied_here == 0  # the leader applied it: this process only waited
        eventually(lambda: projector.applied_here > 0, "the leader counted what it applied")
    finally:
        stop()


def test_the_others_hear_when_the_views_applied_a_change_of_status(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app)
    projector.catch_up()
    heard: list[int] = []
    worker = Projector(app, pool)
    follower = LogFollower(pool, [VIEWS_CHANNEL])
    worker.hear(follower, on_status_change=[lambda: heard.append(worker.head())])
    with ExitStack() as running:
        running.callback(follower.start())
        running.callback(projector.start_leading("leader"))
        workloads.start_step(app, session_id, 0)  # the driver's own progress: nobody else need look
        assert worker.wait_until(worker.head(), timeout=60)
        assert heard == []

        app.pause(session_id)  # a worker driving it must stop

        eventually(lambda: heard, "the others heard of the pause")


def test_with_no_leader_a_read_catches_the_views_up_itself(
    app: Stepline, projector: Projector, hearing: Projector, pool: ConnectionPool
) -> None:
    session_id = workloads.create(app)

    assert hearing.wait_until(hearing.head(), timeout=60)

    assert progress(pool, session_id).status == "pending"
    assert hearing.applied_here > 0


def test_a_command_line_read_waits_for_the_leader_without_a_follower(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    stop = projector.start_leading("leader")
    try:
        eventually(lambda: projector.leading, "the only candidate leads")
        session_id = workloads.create(app)
        command_line = Projector(app, pool)  # no follower: it listens for the wait itself

        assert command_line.wait_until(command_line.head(), timeout=60)

        assert progress(pool, session_id).status == "pending"
        assert command_line.applied_here == 0
    finally:
        stop()


def test_one_candidate_leads_and_another_takes_over_when_it_stops(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    first, second = Projector(app, pool), Projector(app, pool)
    with ExitStack() as standing:
        stop_first = first.start_leading("first")
        standing.callback(stop_first)
        eventually(lambda: leader_of(pool) == "first", "the first candidate leads")
        standing.callback(second.start_leading("second"))
        assert leader_of(pool) == "first"
        assert not second.leading

        stop_first()

        # The lead is recorded just before the candidate says it leads: wait for both.
        eventually(
            lambda: leader_of(pool) == "second" and second.leading,
            "the second candidate took the lead",
        )
        assert not first.leading
        session_id = workloads.create(app)
        eventually(lambda: projector.status()[0].lag == 0, "the new leader applied the log")
        assert progress(pool, session_id).status == "pending"


def test_a_candidate_in_reserve_tries_for_the_lead_only_after_polls_without_a_leader(
    app: Stepline, projector: Projector
) -> None:
    channel = app.recorder.channel_name  # type: ignore[attr-defined]
    api_only = Leadership(projector, "api", channel, reserve=True)
    no_further = threading.Event()
    no_further.set()  # take the lock, then hand it back at once

    attempts = [api_only.stand_once(no_further) for _ in range(RESERVE_POLLS)]

    assert attempts == [False] * (RESERVE_POLLS - 1) + [True]


def test_a_candidate_in_reserve_leaves_the_lead_to_the_one_holding_it(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    channel = app.recorder.channel_name  # type: ignore[attr-defined]
    api_only = Leadership(Projector(app, pool), "api", channel, reserve=True)
    no_further = threading.Event()
    no_further.set()
    stop = projector.start_leading("worker")
    try:
        eventually(lambda: leader_of(pool) == "worker", "the worker leads")

        attempts = [api_only.stand_once(no_further) for _ in range(RESERVE_POLLS + 1)]

        assert not any(attempts)
        assert leader_of(pool) == "worker"
    finally:
        stop()


def test_a_candidate_in_reserve_hands_the_lead_to_a_worker_that_starts_later(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    api_only, worker = Projector(app, pool), Projector(app, pool)
    with ExitStack() as standing:
        standing.callback(api_only.start_leading("api", reserve=True))
        eventually(lambda: leader_of(pool) == "api", "the API process leads, nobody else being up")

        Leases(pool, lease_s=15).register("host:1:worker:abc", "worker", concurrency=1)
        standing.callback(worker.start_leading("worker"))

        eventually(lambda: leader_of(pool) == "worker", "the worker took the lead over")


# ---- layout versions --------------------------------------------------------------------


class SessionIndexNext(SessionIndexView):
    version: ClassVar[int] = SessionIndexView.version + 1


def test_a_view_whose_layout_changed_rebuilds_itself_at_start_up(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    workloads.completed(app)
    workloads.pending(app)
    projector.catch_up()
    before = dump(pool)["session_index"]
    with pool.connection() as conn:
        conn.execute("UPDATE session_index SET name = 'stale layout'")

    upgraded = Projector(app, pool, views=[SessionIndexNext()])
    upgraded.prepare()
    assert {s.name: s.position for s in upgraded.status()} == {"session_index": 0}
    upgraded.catch_up()

    assert dump(pool)["session_index"] == before
    with pool.connection() as conn:
        layout = conn.execute(
            "SELECT layout_version FROM projection_tracking WHERE view = 'session_index'"
        ).fetchone()
    assert layout == (SessionIndexView.version + 1,)


def test_what_is_committed_while_the_leader_gathers_is_applied_after_it_unasked(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    """The leader does not listen to new events while it gathers, yet the commits of that
    time are applied when it ends, and those after it wake it as before: nobody asks."""
    channel = app.recorder.channel_name  # type: ignore[attr-defined]
    # No idle check within the wait: only a notification can wake the leader.
    leadership = Leadership(projector, "leader", channel, gather_s=0.5, idle_check_s=10)
    stop = leadership.start()
    try:
        eventually(lambda: leadership.leading, "the only candidate leads")
        for _ in range(3):  # the first wakes it; the others fall within its gathering
            created = [workloads.create(app) for _ in range(3)]
            eventually(
                lambda: {s.lag for s in projector.status()} == {0},
                "the views applied every commit, none of them asked for",
                within_s=8,  # before the idle check, with room for a loaded machine
            )
    finally:
        stop()

    assert progress(pool, created[-1]).status == "pending"


def test_under_load_the_leader_applies_what_its_gathering_time_brought_in_one_batch(
    app: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    channel = app.recorder.channel_name  # type: ignore[attr-defined]
    # Six commits well within one gathering: a loaded machine may take a second or two for
    # them, and a third batch is no fault. wait_until below ends the gathering at once (only
    # stopping waits for the idle leader's next one to end).
    leadership = Leadership(projector, "leader", channel, gather_s=5.0)
    with pool.connection() as listener:
        listener.execute(f"LISTEN {VIEWS_CHANNEL}")
        stop = leadership.start()
        try:
            eventually(lambda: leadership.leading, "the only candidate leads")
            created = [workloads.create(app) for _ in range(6)]  # six commits, well within 5 s
            assert projector.wait_until(projector.head(), timeout=30)
            batches = list(listener.notifies(timeout=0.5))
        finally:
            stop()

    assert [progress(pool, session_id).status for session_id in created] == ["pending"] * 6
    assert len(batches) <= 2  # the first commit at once, the rest together
