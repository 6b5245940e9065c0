"""The Stepline application on a real PostgreSQL event store."""

from __future__ import annotations

import itertools
import threading
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import StoredEvent

from domain.errors import InvalidStateTransition, SessionNotFound, StandardError
from domain.session import SessionStatus, StepSpec, StepStatus, WorkflowSession
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests import workloads


def create(app: Stepline, steps: int = 2, **config: Any) -> UUID:
    return workloads.create_session(
        app,
        name="Login smoke test",
        steps=[StepSpec(f"step {i}", expect="ok" if i == 0 else None) for i in range(steps)],
        tenant="acme",
        actor="alice",
        config=config,
        labels={"suite": "smoke"},
    )


def run_first_step(app: Stepline, session_id: UUID) -> None:
    workloads.start_step(app, session_id, 0)
    workloads.issue_command(
        app, session_id, 0, command_id="c1", executor="http", name="request", args={"path": "/"}
    )
    workloads.finish_command(
        app, session_id, 0, command_id="c1", ok=True, output="200", duration_ms=12
    )
    workloads.complete_step(app, session_id, 0, summary="opened", evidence=["status 200"])


def test_a_session_saved_by_one_process_loads_in_another(app: Stepline, database_url: str) -> None:
    session_id = create(app)
    run_first_step(app, session_id)

    other = Stepline(eventsourcing_env(database_url))
    try:
        session = other.get_session(session_id)
    finally:
        other.close()

    assert session.version == 5
    assert session.status is SessionStatus.RUNNING
    assert session.steps[0].status is StepStatus.COMPLETED
    assert (session.steps[0].summary, session.steps[0].expect) == ("opened", "ok")
    assert (session.tenant, session.labels, session.created_by) == (
        "acme",
        {"suite": "smoke"},
        "alice",
    )


def test_an_unknown_session_is_reported_as_not_found(app: Stepline) -> None:
    missing = uuid4()
    with pytest.raises(SessionNotFound, match=str(missing)):
        app.get_session(missing)
    with pytest.raises(SessionNotFound):
        app.pause(missing)
    with pytest.raises(SessionNotFound):
        app.history(missing)


def test_a_refused_command_writes_nothing(app: Stepline) -> None:
    session_id = create(app)
    with pytest.raises(InvalidStateTransition):
        workloads.start_step(app, session_id, 1)
    assert [type(e).__name__ for e in app.history(session_id)] == ["Created"]


def test_history_lists_every_event_in_order_with_its_actor(app: Stepline) -> None:
    session_id = create(app)
    run_first_step(app, session_id)
    app.pause(session_id, reason="lunch", actor="bob")
    app.cancel(session_id, reason="not needed", actor="carol")

    events = app.history(session_id)

    assert [type(e).__name__ for e in events] == [
        "Created",
        "StepStarted",
        "CommandIssued",
        "CommandFinished",
        "StepCompleted",
        "Paused",
        "Cancelled",
    ]
    assert [e.originator_version for e in events] == list(range(1, 8))
    assert [e.actor for e in events][-2:] == ["bob", "carol"]  # type: ignore[attr-defined]
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(events))
    assert [e.originator_version for e in app.history(session_id, after=5)] == [6, 7]
    assert [e.originator_version for e in app.history(session_id, after=1, limit=2)] == [2, 3]


def test_state_as_of_a_version_is_rebuilt_from_the_log(app: Stepline) -> None:
    session_id = create(app)
    run_first_step(app, session_id)
    app.pause(session_id, actor="bob")
    app.resume(session_id, actor="bob")

    assert app.get_session(session_id, version=1).status is SessionStatus.PENDING
    at_3 = app.get_session(session_id, version=3)
    assert at_3.steps[0].open_commands == ["c1"]
    assert app.get_session(session_id, version=6).status is SessionStatus.PAUSED
    assert app.get_session(session_id, version=7).status is SessionStatus.RUNNING
    with pytest.raises(SessionNotFound, match="has no version 8; the latest is 7"):
        app.get_session(session_id, version=8)


def test_a_failed_step_records_the_standard_error(app: Stepline) -> None:
    session_id = create(app, max_attempts=2)
    workloads.start_step(app, session_id, 0)
    workloads.fail_step(app, session_id, 0, StandardError.of("TASK_LOOP_TIMEOUT", "took 120 s"))

    failed = app.history(session_id)[-1]
    assert type(failed).__name__ == "StepFailed"
    assert failed.error["code"] == "TASK_LOOP_TIMEOUT"  # type: ignore[attr-defined]
    assert failed.error["category"] == "EXECUTION"  # type: ignore[attr-defined]
    assert failed.retryable is True  # type: ignore[attr-defined]
    assert workloads.start_step(app, session_id, 0) == 2


def _racing(
    app: Stepline, session_id: UUID, winner: Any, loser: Any
) -> tuple[list[int], BaseException | None]:
    """Both decisions load the same version; the winner saves first, the loser then saves.

    Returns how many times the loser's decision ran, and what the loser raised if anything.
    """
    both_loaded = threading.Barrier(2)
    winner_saved = threading.Event()
    loser_calls: list[int] = []
    loser_error: list[BaseException] = []

    def winner_decision(session: WorkflowSession) -> None:
        both_loaded.wait(timeout=10)
        winner(session)

    def loser_decision(session: WorkflowSession) -> None:
        loser_calls.append(session.version)
        if len(loser_calls) == 1:
            both_loaded.wait(timeout=10)
            assert winner_saved.wait(timeout=10)
        loser(session)

    def run_winner() -> None:
        app.change(session_id, winner_decision)
        winner_saved.set()

    def run_loser() -> None:
        try:
            app.change(session_id, loser_decision)
        except BaseException as error:  # handed to the test thread to assert on
            loser_error.append(error)

    threads = [threading.Thread(target=run_winner), threading.Thread(target=run_loser)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return loser_calls, (loser_error[0] if loser_error else None)


def test_a_command_that_loses_a_race_reloads_and_decides_again(app: Stepline) -> None:
    session_id = create(app)
    workloads.start_step(app, session_id, 0)
    workloads.issue_command(
        app, session_id, 0, command_id="c1", executor="http", name="get", args={}
    )

    loser_calls, error = _racing(
        app,
        session_id,
        winner=lambda s: s.pause("a person paused", "bob"),
        loser=lambda s: s.finish_command(0, command_id="c1", ok=True, output="200"),
    )

    assert error is None
    assert loser_calls == [3, 4]  # decided on version 3, lost, decided again on version 4
    events = app.history(session_id)
    assert [type(e).__name__ for e in events][-2:] == ["Paused", "CommandFinished"]
    assert app.get_session(session_id).status is SessionStatus.PAUSED


def test_a_command_that_loses_a_race_never_overwrites_the_winner(app: Stepline) -> None:
    session_id = create(app)

    loser_calls, error = _racing(
        app,
        session_id,
        winner=lambda s: s.cancel("stop", "bob"),
        loser=lambda s: s.start_step(0),
    )

    assert loser_calls == [1, 2]
    assert isinstance(error, InvalidStateTransition)
    assert "session is cancelled" in str(error)
    assert [type(e).__name__ for e in app.history(session_id)] == ["Created", "Cancelled"]


def test_a_10000_event_session_loads_from_its_latest_snapshot(
    app: Stepline, database_url: str
) -> None:
    session_id = create(app, steps=1)
    session = app.get_session(session_id)
    session.start_step(0)
    while session.version < 10_000:
        session.record_turn(0, reasoning="thinking", model="m", prompt_tokens=1)
        if len(session.pending_events) == 500:
            app.save(session)
    app.save(session)

    assert app.snapshots is not None
    snapshots = list(app.snapshots.get(session_id))
    assert [s.originator_version for s in snapshots] == list(range(100, 10_001, 100))

    fresh = Stepline(eventsourcing_env(database_url))  # nothing cached: it must load
    try:
        loaded = fresh.get_session(session_id)
    finally:
        fresh.close()
    replayed = project_aggregate(None, app.events.get(session_id))
    assert loaded.version == replayed.version == 10_000
    assert vars(loaded) == vars(replayed)
    assert loaded.steps[0].turns == 9_998
    assert loaded.tokens_used == 9_998


def test_the_snapshot_interval_is_a_setting(database_url: str) -> None:
    app = Stepline(eventsourcing_env(database_url), snapshot_interval=3)
    try:
        session_id = create(app)
        run_first_step(app, session_id)
        assert app.snapshots is not None
        assert [s.originator_version for s in app.snapshots.get(session_id)] == [3]
    finally:
        app.close()


def test_a_created_event_of_version_1_still_loads(app: Stepline) -> None:
    session_id = uuid4()
    v1_state = app.mapper.transcoder.encode(
        {
            "timestamp": WorkflowSession.Event.create_timestamp(),
            "originator_topic": "domain.session:WorkflowSession",
            "name": "written before expect criteria existed",
            "steps": ["Open the login page", "Sign in"],
            "config": {},
            "tenant": "acme",
            "labels": {},
            "actor": "alice",
        }
    )
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=session_id,
                originator_version=1,
                topic="domain.session:WorkflowSession.Created",
                state=v1_state,
            )
        ]
    )

    session = app.get_session(session_id)

    assert [(s.text, s.expect) for s in session.steps] == [
        ("Open the login page", None),
        ("Sign in", None),
    ]
    workloads.start_step(app, session_id, 0)
    assert app.get_session(session_id).status is SessionStatus.RUNNING


def write_as_version_1(app: Stepline, session_id: UUID, event_name: str, **fields: Any) -> None:
    """Append an event of `event_name` as an older release wrote it: version 1, these fields."""
    state = app.mapper.transcoder.encode(
        {
            "timestamp": WorkflowSession.Event.create_timestamp(),
            "originator_topic": "domain.session:WorkflowSession",
            "actor": "stepline",
            **fields,
        }
    )
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=session_id,
                originator_version=app.get_session(session_id).version + 1,
                topic=f"domain.session:WorkflowSession.{event_name}",
                state=state,
            )
        ]
    )


def test_a_command_issued_event_of_version_1_gets_its_command_id_as_idempotency_key(
    app: Stepline,
) -> None:
    session_id = create(app)
    workloads.start_step(app, session_id, 0)
    write_as_version_1(
        app,
        session_id,
        "CommandIssued",
        step_index=0,
        command_id="written-before-keys",
        executor="http",
        name="request",
        args={"method": "GET", "url": "/"},
    )

    issued = app.history(session_id)[-1]

    assert isinstance(issued, WorkflowSession.CommandIssued)
    assert issued.idempotency_key == "written-before-keys"
    assert app.get_session(session_id).steps[0].open_commands == ["written-before-keys"]


def test_a_command_finished_event_of_version_1_has_no_artifacts(app: Stepline) -> None:
    session_id = create(app)
    workloads.start_step(app, session_id, 0)
    workloads.issue_command(
        app, session_id, 0, command_id="c1", executor="http", name="request", args={"url": "/"}
    )
    write_as_version_1(
        app,
        session_id,
        "CommandFinished",
        step_index=0,
        command_id="c1",
        ok=True,
        output="{}",
        duration_ms=3,
        error=None,
    )

    finished = app.history(session_id)[-1]

    assert isinstance(finished, WorkflowSession.CommandFinished)
    assert (finished.ok, finished.artifacts) == (True, [])
    assert app.get_session(session_id).steps[0].open_commands == []
