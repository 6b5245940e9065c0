"""Replay a recorded session with no model call, fork it from a step, and count its tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.errors import InvalidWorkflow
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.ai.token_budget import TokenBudget
from engine.live.projector import Projector
from engine.loop.limits import session_config
from engine.loop.replay import fork_request, replay_request
from engine.loop.step_attempt import definition_key
from engine.loop.task_loop import TaskLoop
from engine.ownership.executor_state import ExecutorStates
from engine.store.app import Stepline
from projections import ai_usage, session_index
from tests import workloads
from tests.conftest import PASSWORD, example_target
from tests.integration.conftest import (
    LoopFactory,
    drive,
    event_types,
    kept_states,
    script_sign_in,
    start_session,
)
from tests.scripted_model import ScriptedModel

LOGIN = 'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}'


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of the test's own, which its views are built in too."""
    return fresh_app


@pytest.fixture
def states(projector: Projector) -> ExecutorStates:
    return kept_states(projector.pool)


@pytest.fixture
def other_target() -> Iterator[str]:
    """The example app again, where the demo user's password is another: the world changed."""
    with example_target().serving(password="changed-" + PASSWORD) as base_url:
        yield base_url


def replay(loop: TaskLoop, source: UUID, strict: bool = False, base_url: str | None = None) -> UUID:
    request = replay_request(loop.app.get_session(source), strict=strict, base_url=base_url)
    return loop.app.create(request, tenant="acme", actor="alice").id


def commands(app: Stepline, session_id: UUID) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.executor, e.name, e.args)
        for e in app.history(session_id)
        if isinstance(e, WorkflowSession.CommandIssued)
    ]


def todos(target: str, password: str = PASSWORD) -> list[str]:
    with httpx.Client(base_url=target) as client:
        client.post("/login", json={"user": "demo", "password": password}).raise_for_status()
        return [todo["title"] for todo in client.get("/todos").json()["items"]]


def of_tenant(loop: TaskLoop, tenant: str, steps: list[StepSpec], target: str) -> UUID:
    return workloads.create_session(
        loop.app,
        name="usage",
        steps=steps,
        tenant=tenant,
        actor="alice",
        config=session_config(loop.settings, {"executor": "http", "base_url": target}),
    )


def record_ai_run(loop: TaskLoop, model: ScriptedModel, target: str, tenant: str = "acme") -> UUID:
    """Two AI steps (sign in; add a todo) and a check, run live against the scripted model."""
    script_sign_in(model)
    model.calls("complete_step", summary="signed in", evidence=["200"])
    model.calls("http_request", method="POST", url="/todos", body={"title": "replay me"})
    model.calls("complete_step", summary="added", evidence=["201"])
    steps = [
        StepSpec("Sign in as the demo user"),
        StepSpec("Add a todo called 'replay me'"),
        StepSpec("expect status 201"),
    ]
    source = of_tenant(loop, tenant, steps, target)
    assert drive(loop, source).status is SessionStatus.COMPLETED
    return source


# ---- replay -------------------------------------------------------------------------------


def test_a_replay_of_an_ai_run_calls_no_model_and_sends_the_same_commands(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop()
    source = record_ai_run(loop, model, target)
    asked = len(model.requests)
    assert asked == 5

    replayed = replay(loop, source)
    session = drive(loop, replayed)

    assert session.status is SessionStatus.COMPLETED
    assert len(model.requests) == asked  # not one request to the model server
    assert commands(loop.app, replayed) == commands(loop.app, source)
    assert todos(target) == ["replay me", "replay me"]  # the commands reached the target again
    history = loop.app.history(replayed)
    assert "TurnRecorded" not in event_types(loop.app, replayed)
    assert session.tokens_used == 0
    created = history[0]
    assert isinstance(created, WorkflowSession.Created)
    assert created.replay_of == {"session_id": str(source), "strict": False}
    marks = [e for e in history if isinstance(e, WorkflowSession.StepReplayed)]
    assert [(m.step_index, m.turns_saved, m.tokens_saved, m.actions) for m in marks] == [
        (0, 3, 75, 2),
        (1, 2, 50, 1),
        (2, 0, 0, 1),
    ]
    assert {m.source_session_id for m in marks} == {str(source)}
    assert [s.summary for s in session.steps] == ["signed in", "added", "expect status 201: ok"]


def test_a_strict_replay_fails_the_step_where_the_target_answers_otherwise(
    make_loop: LoopFactory, target: str, other_target: str
) -> None:
    loop = make_loop(ai=False)
    source = start_session(loop, ["GET /login", LOGIN, "GET /todos"], target)
    assert drive(loop, source).status is SessionStatus.COMPLETED

    replayed = replay(loop, source, strict=True, base_url=other_target)
    session = drive(loop, replayed)

    assert session.status is SessionStatus.FAILED
    error = session.steps[1].error
    assert error is not None
    assert error["code"] == "REPLAY_DIVERGED"
    assert "http.request" in error["message"]
    assert "/login" in error["message"]
    assert error["details"]["command"]["args"]["url"] == "/login"
    assert (error["details"]["expected"], error["details"]["got"]) == (
        {"ok": True, "status": 200},
        {"ok": False, "status": 401},  # a 401 fails the request (HTTP_STATUS_ERROR)
    )
    diverged = [
        e for e in loop.app.history(replayed) if isinstance(e, WorkflowSession.ReplayDiverged)
    ]
    assert [(d.step_index, d.name, d.strict) for d in diverged] == [(1, "request", True)]
    assert event_types(loop.app, replayed).count("StepReplayed") == 1  # step 0 only


def test_a_replay_carries_on_with_the_model_from_where_the_world_changed(
    make_loop: LoopFactory, target: str, other_target: str, model: ScriptedModel
) -> None:
    loop = make_loop()
    source = record_ai_run(loop, model, target)
    asked = len(model.requests)
    new_password = "changed-" + PASSWORD
    model.calls(
        "http_request",
        reasoning="the password changed",
        method="POST",
        url="/login",
        body={"user": "demo", "password": new_password},
    )
    model.calls("complete_step", summary="signed in with the new password", evidence=["200"])

    replayed = replay(loop, source, base_url=other_target)
    session = drive(loop, replayed)

    assert session.status is SessionStatus.COMPLETED
    assert len(model.requests) == asked + 2  # only the step that diverged asked the model
    assert "where the record had" in model.prompt(asked)  # the model was told what changed
    types = event_types(loop.app, replayed)
    assert types.count("ReplayDiverged") == 1
    assert types.count("StepReplayed") == 2  # steps 1 and 2, replayed after the live step 0
    assert session.steps[0].summary == "signed in with the new password"
    assert todos(other_target, new_password) == ["replay me"]  # step 1 replayed, signed in


# ---- fork ---------------------------------------------------------------------------------

FORKED_WORKFLOW = [
    LOGIN,
    StepSpec('POST /todos with {"title": "first"}', expect="expect status 201"),
    "save json id as todo_id",
    'POST /effects with {"name": "side effect"}',
    StepSpec("GET /todos/{{vars.todo_id}}", expect='expect json title == "first"'),
]


def test_a_fork_runs_from_its_step_with_what_the_steps_before_it_saved(
    make_loop: LoopFactory, target: str, states: ExecutorStates, projector: Projector
) -> None:
    loop = make_loop(ai=False, states=states)
    source = start_session(loop, list(FORKED_WORKFLOW), target)
    assert drive(loop, source).status is SessionStatus.COMPLETED
    effects_before = len(httpx.get(f"{target}/effects").json()["applied"])

    tail = [StepSpec("GET /todos/{{vars.todo_id}}", expect='expect json title == "first"')]
    request = fork_request(
        loop.app.get_session(source), loop.app.history(source), from_step=4, steps=tail
    )
    forked = loop.app.create(request, tenant="acme", actor="alice").id
    session = drive(loop, forked)

    assert session.status is SessionStatus.COMPLETED
    assert todos(target) == ["first"]  # step 1 was not run again
    assert len(httpx.get(f"{target}/effects").json()["applied"]) == effects_before
    issued = commands(loop.app, forked)
    assert [args["url"] for _, _, args in issued] == ["/todos/{{vars.todo_id}}"]  # step 4 only
    created = loop.app.history(forked)[0]
    assert isinstance(created, WorkflowSession.Created)
    assert created.forked_from is not None
    assert created.forked_from["step"] == 4
    source_session = loop.app.get_session(source)
    assert [s.summary for s in session.steps[:4]] == [s.summary for s in source_session.steps[:4]]

    projector.catch_up()
    with projector.pool.connection() as conn:
        line = session_index.lineage(conn, "acme", forked)
        other_tenant = session_index.lineage(conn, "globex", forked)
    assert {(row.session_id, row.origin, row.source_id) for row in line} == {
        (source, "new", None),
        (forked, "fork", source),
    }
    assert other_tenant == []


def test_a_fork_refuses_a_step_its_source_did_not_reach(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source = start_session(loop, ["GET /login", "expect status 404", "GET /todos"], target)
    assert drive(loop, source).status is SessionStatus.FAILED

    with pytest.raises(InvalidWorkflow, match="step 1 of the source is not completed"):
        fork_request(loop.app.get_session(source), loop.app.history(source), from_step=2)
    request = fork_request(loop.app.get_session(source), loop.app.history(source), from_step=1)
    assert [step["summary"] for step in request.carried_over] == ["GET /login: ok"]


# ---- usage --------------------------------------------------------------------------------


def test_usage_equals_the_turns_recorded_and_survives_a_rebuild(
    make_loop: LoopFactory, target: str, model: ScriptedModel, projector: Projector
) -> None:
    loop = make_loop()
    tenant = "acme"
    source = record_ai_run(loop, model, target, tenant)
    replayed = replay(loop, source)
    drive(loop, replayed)
    projector.catch_up()

    turns = [e for e in loop.app.history(source) if isinstance(e, WorkflowSession.TurnRecorded)]
    with projector.pool.connection() as conn:
        rows = ai_usage.of_session(conn, source)
        replay_rows = ai_usage.of_session(conn, replayed)
        by_day = ai_usage.of_tenant(conn, tenant, None, None)
    assert sum(r.prompt_tokens for r in rows) == sum(t.prompt_tokens for t in turns) == 100
    assert sum(r.completion_tokens for r in rows) == sum(t.completion_tokens for t in turns)
    assert [(r.step_index, r.turns) for r in rows] == [(0, 3), (1, 2)]
    assert replay_rows == []
    assert [(d.sessions, d.turns, d.prompt_tokens) for d in by_day] == [(1, 5, 100)]

    projector.rebuild()
    with projector.pool.connection() as conn:
        assert ai_usage.of_session(conn, source) == rows


def test_a_tenant_over_its_daily_tokens_is_paused_and_another_tenant_is_not(
    make_loop: LoopFactory, target: str, model: ScriptedModel, projector: Projector
) -> None:
    budget = TokenBudget(projector.pool, daily_tokens=50)
    loop = make_loop()
    loop.token_budget = budget
    tenant = "acme"
    record_ai_run(loop, model, target, tenant)  # 125 tokens today
    projector.catch_up()

    script_sign_in(model)
    model.calls("complete_step", summary="signed in")
    over = of_tenant(loop, tenant, [StepSpec("Sign in as the demo user")], target)
    session = drive(loop, over)

    assert session.status is SessionStatus.PAUSED
    paused = loop.app.history(over)[-1]
    assert isinstance(paused, WorkflowSession.Paused)
    assert paused.reason.startswith(f"TENANT_DAILY_TOKENS_EXCEEDED: tenant {tenant} used 125 ")
    assert "TurnRecorded" not in event_types(loop.app, over)

    other = of_tenant(loop, "globex", [StepSpec("Sign in as the demo user")], target)
    assert drive(loop, other).status is SessionStatus.COMPLETED  # its own budget is untouched

    loop.app.resume(over, reason="still over", actor="alice")
    assert drive(loop, over).status is SessionStatus.PAUSED  # the budget still holds it
    budget.daily_tokens = 1_000  # raised: a resume carries on
    script_sign_in(model)
    model.calls("complete_step", summary="signed in")
    loop.app.resume(over, reason="budget raised", actor="alice")
    assert drive(loop, over).status is SessionStatus.COMPLETED


def test_a_replayed_command_its_owner_died_in_is_sent_again_under_the_same_key(
    make_loop: LoopFactory, app: Stepline, target: str
) -> None:
    loop = make_loop(ai=False)
    effect = 'POST /effects with {"name": "replayed once"}'
    source = start_session(loop, [effect], target)
    assert drive(loop, source).status is SessionStatus.COMPLETED
    replayed = replay(loop, source)
    key = definition_key(replayed, 0, 1, 0, kind="r")
    # The replay's owner sent the recorded request, then died before recording its result.
    workloads.start_step(app, replayed, 0)
    (_, _, args) = commands(app, source)[0]
    workloads.issue_command(
        app,
        replayed,
        0,
        command_id="lost-1",
        executor="http",
        name="request",
        args=args,
        idempotency_key=key,
    )
    httpx.post(f"{target}/effects", json=args["body"], headers={"Idempotency-Key": key})

    session = drive(loop, replayed)

    assert session.status is SessionStatus.COMPLETED
    seen = httpx.get(f"{target}/effects").json()
    assert [d["key"] for d in seen["delivered"] if d["key"] == key] == [key, key]
    assert [e["key"] for e in seen["applied"]].count(key) == 1  # applied once
    reissued = [e for e in app.history(replayed) if isinstance(e, WorkflowSession.CommandIssued)]
    assert [e.idempotency_key for e in reissued] == [key, key]
    assert event_types(app, replayed).count("StepReplayed") == 1
