"""The task loop against real targets: the example web app and the scripted model server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from domain.session import SessionStatus, StepSpec, StepStatus, WorkflowSession
from engine.store.app import Stepline
from tests.conftest import PASSWORD
from tests.integration.conftest import (
    LoopFactory,
    drive,
    event_types,
    script_sign_in,
    start_session,
)
from tests.scripted_model import ScriptedModel
from tests.waiting import eventually

TODO_WORKFLOW = [
    "GET /login",
    "expect status 200",
    'expect body contains "Sign in"',
    'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}',
    'POST /todos with {"title": "write the docs"}',
    "expect status 201",
    "save json id as todo_id",
    "GET /todos/{{vars.todo_id}}",
    'expect json title == "write the docs"',
    "GET /todos",
    "expect json count == 1",
]


# ---- step definitions against the example app -------------------------------------------


def test_a_workflow_of_step_definitions_runs_to_completion(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, list(TODO_WORKFLOW), base_url=target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert [s.status for s in session.steps] == [StepStatus.COMPLETED] * len(TODO_WORKFLOW)
    types = event_types(loop.app, session_id)
    checks = [step for step in TODO_WORKFLOW if step.startswith("expect ")]
    assert types.count("Checked") == len(checks) == 5  # each check one event, not a pair
    commands = len(TODO_WORKFLOW) - len(checks)
    assert types.count("CommandIssued") == types.count("CommandFinished") == commands
    assert types[-1] == "Completed"


def test_a_check_is_recorded_as_one_event_after_the_command_it_checks(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = [StepSpec("GET /login", expect="expect status 200"), StepSpec("expect status 404")]
    session_id = start_session(loop, steps, target)

    drive(loop, session_id)

    history = loop.app.history(session_id)
    assert [type(e).__name__ for e in history] == [
        "Created",
        "StepStarted",
        "CommandIssued",
        "CommandFinished",
        "Checked",
        "StepCompleted",
        "StepStarted",
        "Checked",
        "StepFailed",
        "Failed",
    ]
    passed, failed = (e for e in history if isinstance(e, WorkflowSession.Checked))
    assert (passed.step_index, passed.executor, passed.name, passed.args) == (
        0,
        "http",
        "expect_status",
        {"code": 200},
    )
    assert (passed.ok, passed.error) == (True, None)
    assert (failed.step_index, failed.ok) == (1, False)
    assert failed.error is not None
    assert failed.error["message"] == "expected status 404, got 200"


def test_a_failed_expectation_fails_the_step_and_the_session(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["GET /login", "expect status 404", "GET /login"], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    failed = session.steps[1]
    assert failed.status is StepStatus.FAILED
    assert failed.error is not None
    assert (failed.error["code"], failed.error["message"]) == (
        "EXPECTATION_FAILED",
        "expected status 404, got 200",
    )
    assert session.steps[2].status is StepStatus.PENDING


def test_a_retryable_failure_is_retried_up_to_max_attempts(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["GET /todos", "expect status 200"], target, max_attempts=3)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED  # /todos needs a login: 401 every time
    assert session.steps[1].attempts == 3
    assert event_types(loop.app, session_id).count("StepFailed") == 3


def test_a_step_with_a_definition_as_its_expectation_checks_it(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    login = 'POST /login with {"user": "demo", "password": "wrong"}'
    session_id = start_session(loop, [StepSpec(login, expect="expect status 200")], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert session.steps[0].error is not None
    assert session.steps[0].error["message"] == "expected status 200, got 401"


def test_a_step_no_definition_matches_fails_saying_how_to_configure_ai(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["Sign in as the demo user"], target)

    session = drive(loop, session_id)

    error = session.steps[0].error
    assert error is not None
    assert error["code"] == "NO_AI_PROVIDER"
    assert "STEPLINE_AI_MODEL" in error["message"]
    assert "STEPLINE_AI_API_KEY" in error["message"]


def test_a_misspelt_step_without_a_model_says_what_was_meant_and_is_tried_once(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["GTE /login"], target, max_attempts=3)

    session = drive(loop, session_id)

    error = session.steps[0].error
    assert error is not None
    assert error["code"] == "NO_AI_PROVIDER"
    assert error["message"].startswith(
        "no step definition matches 'GTE /login' (did you mean \"GET /login\"?)"
    )
    assert error["suggested_action"].startswith('Write it as "GET /login"; or')
    failures = [
        e for e in loop.app.history(session_id) if isinstance(e, WorkflowSession.StepFailed)
    ]
    assert len(failures) == 1  # not retryable: one attempt of three allowed
    assert session.steps[0].attempts == 1


def test_an_unquoted_target_in_an_expect_without_a_model_is_shown_quoted(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, [StepSpec("GET /login", expect="click Sign in")], target)

    session = drive(loop, session_id)

    error = session.steps[0].error
    assert error is not None
    assert '(targets are quoted: click "Sign in")' in error["message"]
    assert error["details"]["written"] == 'click "Sign in"'


def test_user_definitions_from_a_module_are_tried_first(
    make_loop: LoopFactory, target: str, tmp_path: Path
) -> None:
    module = tmp_path / "my_steps.py"
    module.write_text(
        "from engine.executors import Command\n"
        "def register(definitions):\n"
        "    definitions.add(r'sign in as (?P<user>\\w+)', lambda m: [Command('http', 'request',"
        " {'method': 'POST', 'url': '/login', 'body': {'user': m['user'],"
        " 'password': '{{secrets.DEMO_PASSWORD}}'}})])\n"
    )
    loop = make_loop(ai=False)
    session_id = start_session(
        loop, ["Sign in as demo", "expect status 200"], target, definitions=str(module)
    )

    assert drive(loop, session_id).status is SessionStatus.COMPLETED


def test_a_definitions_module_that_cannot_load_fails_the_session(
    make_loop: LoopFactory, target: str, tmp_path: Path
) -> None:
    loop = make_loop(ai=False)
    missing = str(tmp_path / "nowhere.py")
    session_id = start_session(loop, ["GET /login"], target, definitions=missing)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert session.error is not None
    assert session.error["code"] == "VALIDATION_FAILED"
    assert "cannot load step definitions" in session.error["message"]


def test_bad_json_in_a_step_fails_it_with_a_clear_error(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["POST /todos with {title: x}"], target)

    error = drive(loop, session_id).steps[0].error

    assert error is not None
    assert error["code"] == "VALIDATION_FAILED"
    assert "not valid JSON" in error["message"]


# ---- the AI path through the scripted model ---------------------------------------------


def test_a_multi_turn_ai_step_completes_after_checking_its_expectation(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    script_sign_in(model)
    model.calls("complete_step", summary="signed in", evidence=["200"], expect_met=True)
    loop = make_loop()
    step = StepSpec("Sign in as the demo user", expect="the response sets a session cookie")
    session_id = start_session(loop, [step], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert (session.steps[0].summary, session.steps[0].evidence) == ("signed in", ["200"])
    assert session.steps[0].turns == 3
    assert "expect_met" in str(model.requests[0]["tools"])
    assert "the response sets a session cookie" in model.prompt(0)
    assert '"status": 200' in model.prompt(2)  # the login result was shown to the model
    turns = [e for e in loop.app.history(session_id) if type(e).__name__ == "TurnRecorded"]
    assert [(t.reasoning, t.model, t.prompt_tokens) for t in turns][:2] == [  # type: ignore[attr-defined]
        ("open the form", "scripted-model", 20),
        ("sign in", "scripted-model", 20),
    ]


def test_completing_without_meeting_the_expectation_is_asked_again(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="done?", expect_met=False)
    model.calls("fail_step", reason="no cookie was set")
    loop = make_loop()
    session_id = start_session(loop, [StepSpec("Sign in", expect="a cookie is set")], target)

    session = drive(loop, session_id)

    assert "The step may complete only if this holds: a cookie is set" in model.prompt(1)
    error = session.steps[0].error
    assert error is not None
    assert (error["code"], error["message"]) == ("STEP_FAILED", "no cookie was set")
    assert session.status is SessionStatus.FAILED


def test_the_last_allowed_turn_offers_only_complete_and_fail(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for page in ("/login", "/todos", "/missing"):
        model.calls("http_request", method="GET", url=page)
    loop = make_loop(max_turns_per_step=3)
    session_id = start_session(loop, ["Look around"], target)

    session = drive(loop, session_id)

    assert model.tool_names(0) == {"http_request", "complete_step", "fail_step"}
    assert model.tool_names(2) == {"complete_step", "fail_step"}
    error = session.steps[0].error
    assert error is not None
    assert error["code"] == "MODEL_UNKNOWN_TOOL"  # its last reply called a tool not offered
    assert error["details"]["limit"] == "max_turns_per_step"
    assert event_types(loop.app, session_id).count("CommandIssued") == 2


def test_a_rate_limited_request_is_retried_and_succeeds(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.fails(429, "slow down", headers={"retry-after-ms": "10"})
    model.calls("complete_step", summary="done after a retry")
    loop = make_loop()
    session_id = start_session(loop, ["Say hello"], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert len(model.requests) == 2


def test_the_token_budget_stops_the_step(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("http_request", method="GET", url="/login", tokens=(60, 10))
    model.calls("http_request", method="GET", url="/todos", tokens=(60, 10))
    loop = make_loop(token_budget=100)
    session_id = start_session(loop, ["Look around"], target)

    session = drive(loop, session_id)

    error = session.steps[0].error
    assert error is not None
    assert error["code"] == "TOKEN_BUDGET_EXCEEDED"
    assert session.tokens_used == 140
    assert event_types(loop.app, session_id).count("CommandIssued") == 1


def test_repeating_the_same_command_is_detected_as_a_loop(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for _ in range(3):
        model.calls("http_request", method="GET", url="/login")
    loop = make_loop(max_repeated_commands=3)
    session_id = start_session(loop, ["Look around"], target)

    error = drive(loop, session_id).steps[0].error

    assert error is not None
    assert error["code"] == "LOOP_DETECTED"
    assert event_types(loop.app, session_id).count("CommandIssued") == 2


def test_a_pause_during_a_turn_stops_before_the_next_command(
    make_loop: LoopFactory, target: str, model: ScriptedModel, app: Stepline
) -> None:
    loop = make_loop()
    session_id = start_session(loop, ["Look around"], target)
    model.calls("http_request", method="GET", url="/login")
    model.calls(
        "http_request",
        method="GET",
        url="/todos",
        before=lambda: app.pause(session_id, reason="let me look", actor="bob"),
    )

    paused = drive(loop, session_id)

    assert paused.status is SessionStatus.PAUSED
    types = event_types(app, session_id)
    assert types.count("CommandIssued") == 1
    assert types[-1] == "Paused"

    model.calls("complete_step", summary="looked around")
    app.resume(session_id, actor="bob")
    resumed = drive(loop, session_id)
    assert resumed.status is SessionStatus.COMPLETED
    assert event_types(app, session_id).count("CommandIssued") == 1


def test_a_cancel_while_the_model_thinks_ends_the_run(
    make_loop: LoopFactory, target: str, model: ScriptedModel, app: Stepline
) -> None:
    loop = make_loop()
    session_id = start_session(loop, ["Look around", "GET /login"], target)
    model.calls(
        "http_request",
        method="GET",
        url="/login",
        before=lambda: app.cancel(session_id, reason="wrong target", actor="bob"),
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.CANCELLED
    assert "CommandIssued" not in event_types(app, session_id)


def test_the_session_times_out_as_a_whole(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["GET /login"], target, workflow_timeout_ms=1)
    eventually(
        lambda: (
            datetime.now(UTC) - loop.app.get_session(session_id).created_on
            > timedelta(milliseconds=1)
        ),
        "the session is older than its 1 ms timeout",
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert session.error is not None
    assert session.error["code"] == "TASK_LOOP_TIMEOUT"


def test_the_target_really_saw_the_login(target: str) -> None:
    with httpx.Client(base_url=target) as client:
        refused = client.post("/login", json={"user": "demo", "password": "nope"})
        accepted = client.post("/login", json={"user": "demo", "password": PASSWORD})
    assert (refused.status_code, accepted.status_code) == (401, 200)
    assert "session" in accepted.cookies
