"""Per-step policies against real targets: a step's own retries, timeout and AI turns over its
workflow's config, `on_failure: continue`, and replays and forks that follow them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest

from api.http.reads import session_page
from domain.session import SessionStatus, StepSpec, StepStatus, WorkflowSession
from domain.step_policy import OnFailure, StepPolicy
from engine.live.projector import Projector
from engine.loop.replay import fork_request, replay_request
from engine.loop.task_loop import TaskLoop
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from projections import session_progress, step_history
from projections.session_index import SessionFilter
from tests import workloads
from tests.conftest import PASSWORD, example_target
from tests.integration.conftest import LoopFactory, drive, event_types, start_session
from tests.scripted_model import ScriptedModel

CONTINUE = OnFailure.CONTINUE


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of the test's own, which its views are built in too."""
    return fresh_app


@pytest.fixture
def fresh_target() -> Iterator[str]:
    """The example app again, with none of its flaky pages asked yet."""
    with example_target().serving(password=PASSWORD) as base_url:
        yield base_url


def flaky(failures: int) -> str:
    """A page of the example app that answers 503 `failures` times, then 200."""
    return f"GET /flaky/{uuid4().hex[:8]}?failures={failures}"


def errors_of(session: WorkflowSession) -> list[str | None]:
    return [step.error["code"] if step.error else None for step in session.steps]


# ---- retries ------------------------------------------------------------------------------


def test_a_step_with_its_own_retries_completes_where_the_config_allows_none(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    retried = [StepSpec(flaky(failures=2), policy=StepPolicy(retries=3)), StepSpec("GET /login")]
    not_retried = [StepSpec(flaky(failures=2)), StepSpec("GET /login")]
    with_retries = start_session(loop, retried, target, max_attempts=1)
    without = start_session(loop, not_retried, target, max_attempts=1)

    session, control = drive(loop, with_retries), drive(loop, without)

    assert session.status is SessionStatus.COMPLETED
    assert session.steps[0].attempts == 3  # two 503s, then 200
    assert event_types(loop.app, with_retries).count("StepFailed") == 2
    assert control.status is SessionStatus.FAILED  # the same workflow without the policy
    assert control.steps[0].attempts == 1
    assert errors_of(control) == ["HTTP_STATUS_ERROR", None]


def test_a_steps_own_retries_apply_to_it_only(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    steps = [
        StepSpec(flaky(failures=1), policy=StepPolicy(retries=1)),
        StepSpec(flaky(failures=1)),
    ]
    session_id = start_session(loop, steps, target, max_attempts=1)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert [step.attempts for step in session.steps] == [2, 1]
    assert [step.status for step in session.steps] == [StepStatus.COMPLETED, StepStatus.FAILED]


# ---- timeout and turns --------------------------------------------------------------------


def test_a_steps_own_timeout_fails_only_that_step_with_the_timeouts_code(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    slow = "GET /slow?ms=300"  # its check comes after the 300 ms answer: past a 100 ms timeout
    steps = [
        StepSpec(slow, expect="expect status 200"),
        StepSpec(slow, expect="expect status 200", policy=StepPolicy(timeout_ms=100)),
    ]
    session_id = start_session(loop, steps, target)

    session = drive(loop, session_id)

    assert [step.status for step in session.steps] == [StepStatus.COMPLETED, StepStatus.FAILED]
    error = session.steps[1].error
    assert error is not None
    assert error["code"] == "TASK_LOOP_TIMEOUT"
    assert error["details"]["limit"] == "timeout_ms"
    assert error["message"] == "the step ran longer than its timeout_ms, 100 ms"
    assert session.status is SessionStatus.FAILED


def test_max_turns_bounds_an_ai_steps_turns_below_the_configs(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for page in ("/login", "/todos", "/missing"):
        model.calls("http_request", method="GET", url=page)
    loop = make_loop()  # the config's max_turns_per_step: the default, 10
    steps = [StepSpec("Look around", policy=StepPolicy(max_turns=2)), StepSpec("Look again")]
    session_id = start_session(loop, steps, target)

    session = drive(loop, session_id)

    assert session.steps[0].turns == 2
    assert len(model.requests) == 2
    assert model.tool_names(1) == {"complete_step", "fail_step"}  # its last allowed turn
    error = session.steps[0].error
    assert error is not None
    assert error["details"]["limit"] == "max_turns"
    assert session.status is SessionStatus.FAILED


# ---- on_failure: continue -----------------------------------------------------------------


def test_on_failure_continue_records_the_failure_and_goes_on_to_the_next_step(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = [
        StepSpec("GET /login"),
        StepSpec(flaky(failures=9), policy=StepPolicy(on_failure=CONTINUE)),
        StepSpec("GET /login"),
    ]
    session_id = start_session(loop, steps, target, max_attempts=1)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert [step.status for step in session.steps] == [
        StepStatus.COMPLETED,
        StepStatus.FAILED,
        StepStatus.COMPLETED,
    ]
    assert errors_of(session) == [None, "HTTP_STATUS_ERROR", None]
    assert session.outcome == (
        "2 of 3 steps completed; step 1 failed and the session went on (on_failure: continue)"
    )
    types = event_types(loop.app, session_id)
    continued = types.index("ContinuedAfterFailure")
    assert types.index("StepFailed") < continued < types.index("Completed")


def test_a_continued_failure_shows_in_progress_step_history_and_the_session_list(
    make_loop: LoopFactory, target: str, projector: Projector
) -> None:
    loop = make_loop(ai=False)
    steps = [
        StepSpec(flaky(failures=9), policy=StepPolicy(retries=1, on_failure=CONTINUE)),
        StepSpec("GET /login"),
    ]
    session_id = start_session(loop, steps, target, max_attempts=1)
    drive(loop, session_id)

    projector.catch_up()
    with projector.pool.connection() as conn:
        progress = session_progress.find(conn, session_id)
        history = step_history.steps_of(conn, session_id)
        listed = session_page(conn, SessionFilter(tenant="acme"), limit=10).items

    assert progress is not None
    assert (progress.status, progress.completed_steps, progress.failed_steps) == ("completed", 1, 1)
    assert (progress.continued_steps, progress.percent) == (1, 100.0)
    assert [row.continued for row in history] == [True, False]
    assert [row.status for row in history] == ["failed", "completed"]
    assert history[0].policy == {"retries": 1, "on_failure": "continue"}
    assert (history[0].attempts, history[0].error_code) == (2, "HTTP_STATUS_ERROR")
    [summary] = listed
    assert (summary.status, summary.completed_steps, summary.failed_steps) == ("completed", 1, 1)


# ---- replay and fork ------------------------------------------------------------------------


def source_session(loop: TaskLoop, target: str) -> UUID:
    """A completed session: its first step retried under its own retries, its second failed
    and gone on past (on_failure: continue), its third completed."""
    steps = [
        StepSpec(flaky(failures=2), policy=StepPolicy(retries=3, retry_backoff_ms=0)),
        StepSpec(flaky(failures=99), policy=StepPolicy(on_failure=CONTINUE)),
        StepSpec("GET /login"),
    ]
    session_id = start_session(loop, steps, target, max_attempts=1)
    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    return session_id


def test_a_replay_follows_the_policies_of_its_sources_steps(
    make_loop: LoopFactory, target: str, fresh_target: str
) -> None:
    loop = make_loop(ai=False)
    source = loop.app.get_session(source_session(loop, target))
    request = replay_request(source, strict=False, base_url=fresh_target)
    replay_id = loop.app.create(request, tenant="acme", actor="alice").id

    replay = drive(loop, replay_id)

    assert [step.policy for step in replay.steps] == [step.policy for step in source.steps]
    # Against a target whose flaky page fails again, the first step is tried again as its
    # retries allow, and the second is gone on past as its on_failure says.
    assert replay.status is SessionStatus.COMPLETED
    assert replay.steps[0].status is StepStatus.COMPLETED
    assert replay.steps[0].attempts > 1
    assert [step.status for step in replay.steps[1:]] == [StepStatus.FAILED, StepStatus.COMPLETED]
    assert "ContinuedAfterFailure" in event_types(loop.app, replay_id)


def test_a_fork_follows_the_policies_of_the_steps_it_runs(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source_id = source_session(loop, target)
    source = loop.app.get_session(source_id)
    request = fork_request(source, loop.app.history(source_id), from_step=1)
    fork_id = loop.app.create(request, tenant="acme", actor="alice").id

    fork = drive(loop, fork_id)

    assert [step.policy for step in fork.steps] == [step.policy for step in source.steps]
    assert fork.status is SessionStatus.COMPLETED
    assert [step.status for step in fork.steps] == [
        StepStatus.COMPLETED,  # carried over
        StepStatus.FAILED,  # failed again, and gone on past
        StepStatus.COMPLETED,
    ]


# ---- old logs -------------------------------------------------------------------------------


def test_a_session_created_before_step_policies_loads_with_none(
    app: Stepline, fresh_database_url: str
) -> None:
    session_id = workloads.create(app, steps=1)
    with psycopg.connect(fresh_database_url) as conn:
        found = conn.execute(CREATED_STATE, (session_id,)).fetchone()
        assert found is not None
        created = json.loads(bytes(found[0]))
        created["class_version"] = 3  # as Created was recorded before steps had a policy
        created["steps"] = [{"text": "step 0", "expect": None}]
        conn.execute(
            "UPDATE stepline_events SET state = %s WHERE originator_id = %s "
            "AND originator_version = 1",
            (json.dumps(created).encode(), session_id),
        )

    reopened = Stepline(eventsourcing_env(fresh_database_url))  # nothing of it cached
    try:
        loaded = reopened.get_session(session_id)
        (event,) = reopened.history(session_id)
    finally:
        reopened.close()

    assert loaded.steps[0].policy == StepPolicy()
    assert isinstance(event, WorkflowSession.Created)
    assert event.steps == [{"text": "step 0", "expect": None, "policy": {}}]


CREATED_STATE = (
    "SELECT state FROM stepline_events WHERE originator_id = %s AND originator_version = 1"
)
