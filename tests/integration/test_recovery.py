"""Recovery: a new runner carries on from the events a stopped or crashed one left."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from uuid import UUID

import httpx
import pytest
from psycopg_pool import ConnectionPool

from domain.session import SessionStatus
from engine.app import Stepline
from engine.projector import Projector
from engine.runner import SessionRunner
from tests.integration.conftest import (
    PASSWORD,
    LoopFactory,
    drive,
    event_types,
    start_session,
)
from tests.scripted_model import ScriptedModel

LOGIN = 'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}'
ADD_TODO = 'POST /todos with {"title": "only once"}'


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of its own: runners here resume every runnable session they find."""
    return fresh_app


@pytest.fixture
def projector(app: Stepline, fresh_database_url: str) -> Iterator[Projector]:
    with ConnectionPool(fresh_database_url, kwargs={"autocommit": True}) as pool:
        runner = Projector(app, pool)
        runner.prepare()
        yield runner


def todo_count(target: str) -> int:
    with httpx.Client(base_url=target) as client:
        client.post("/login", json={"user": "demo", "password": PASSWORD})
        count: int = client.get("/todos").json()["count"]
        return count


def starts_of(app: Stepline, session_id: UUID) -> list[int]:
    return [
        e.step_index  # type: ignore[attr-defined]
        for e in app.history(session_id)
        if type(e).__name__ == "StepStarted"
    ]


def test_a_command_left_without_a_result_is_marked_interrupted_and_decided_again(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, [LOGIN, "GET /todos", "expect json count == 0"], target)
    # What a runner that died mid-command leaves: the command issued, no result recorded.
    app.start_step(session_id, 0)
    app.issue_command(
        session_id, 0, command_id="lost-1", executor="http", name="request", args={"url": "/"}
    )

    runner = SessionRunner(loop, max_sessions=2)
    assert runner.resume_runnable(projector) == [session_id]
    running = runner.submit(session_id)
    assert running is not None
    running.result(timeout=30)
    runner.stop()

    session = app.get_session(session_id)
    assert session.status is SessionStatus.COMPLETED
    finished = [e for e in app.history(session_id) if type(e).__name__ == "CommandFinished"]
    interrupted = finished[0]
    assert (interrupted.command_id, interrupted.ok) == ("lost-1", False)  # type: ignore[attr-defined]
    assert interrupted.error["code"] == "COMMAND_INTERRUPTED"  # type: ignore[attr-defined]
    assert starts_of(app, session_id) == [0, 1, 2]


def test_a_runner_stopped_mid_step_is_continued_by_a_new_one(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    app: Stepline,
    projector: Projector,
) -> None:
    in_step, carry_on = threading.Event(), threading.Event()

    def hold() -> None:
        in_step.set()
        carry_on.wait(timeout=30)

    model.calls("http_request", method="GET", url="/todos")
    model.calls("http_request", method="GET", url="/todos/1", before=hold)
    model.calls("complete_step", summary="the todo is listed")
    loop = make_loop()
    session_id = start_session(loop, [LOGIN, ADD_TODO, "Check the todo is listed"], target)

    first = SessionRunner(loop, max_sessions=1)
    stopped = first.submit(session_id)
    assert stopped is not None
    assert in_step.wait(timeout=30)  # the model is deciding the second turn of step 2
    first.stop(wait=False)
    carry_on.set()
    assert stopped.result(timeout=30) is SessionStatus.RUNNING

    second = SessionRunner(make_loop(), max_sessions=1)
    assert second.resume_runnable(projector) == [session_id]
    resumed = second.submit(session_id)
    assert resumed is not None
    resumed.result(timeout=30)
    second.stop()

    session = app.get_session(session_id)
    assert session.status is SessionStatus.COMPLETED
    assert starts_of(app, session_id) == [0, 1, 2]  # no step ran twice
    assert todo_count(target) == 1
    assert event_types(app, session_id).count("TurnRecorded") == 3
    assert len(model.requests) == 3


def test_sessions_past_their_ttl_expire_and_ended_ones_stay(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector
) -> None:
    loop = make_loop(ai=False)
    waiting = start_session(loop, ["GET /login"], target)
    app.pause(waiting, reason="lunch", actor="bob")
    finished = start_session(loop, ["GET /login"], target)
    drive(loop, finished)
    runner = SessionRunner(loop, max_sessions=1)

    assert runner.expire_overdue(projector, ttl_ms=3_600_000) == []  # nothing is an hour old
    threading.Event().wait(0.01)
    assert runner.expire_overdue(projector, ttl_ms=1) == [waiting]
    runner.stop()

    expired = app.get_session(waiting)
    assert expired.status is SessionStatus.EXPIRED
    assert expired.error is not None
    assert expired.error["code"] == "SESSION_EXPIRED"
    assert app.get_session(finished).status is SessionStatus.COMPLETED
