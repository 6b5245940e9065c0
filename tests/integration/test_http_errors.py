"""Nothing passes that did not happen: a request answered 4xx/5xx fails its step, unless an
`expect status` judges the answer (the step's own expect, or the step after it), or the
workflow records such answers as results (`config.http_errors: record`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.loop.replay import replay_request
from engine.workflows.file import load_workflow
from tests.integration.conftest import LoopFactory, drive, start_session
from tests.scripted_model import ScriptedModel

MISSING = "GET /nowhere"
"""The example app has no such page: it answers 404."""


def test_a_request_answered_404_fails_its_step_naming_method_url_and_status(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)

    session = drive(loop, start_session(loop, ["GET /login", MISSING, "GET /login"], target))

    assert session.status is SessionStatus.FAILED
    error = session.steps[1].error or {}
    assert error.get("code") == "HTTP_STATUS_ERROR"
    assert error["message"] == "GET /nowhere answered 404 Not Found"
    assert error["details"] == {"method": "GET", "url": "/nowhere", "status": 404}
    assert "expect status" in error["suggested_action"]
    assert session.steps[2].status.value == "pending"


@pytest.mark.parametrize("check", ["expect status 404", "expect status 4xx"])
def test_an_expect_status_after_the_request_judges_its_error_answer(
    make_loop: LoopFactory, target: str, check: str
) -> None:
    loop = make_loop(ai=False)

    session = drive(loop, start_session(loop, [MISSING, check], target))

    assert session.status is SessionStatus.COMPLETED, session.steps
    finished = [e for e in loop.app.history(session.id) if isinstance(e, WorkflowSession.Checked)]
    assert [(c.name, c.ok) for c in finished] == [("expect_status", True)]


def test_the_steps_own_expect_status_judges_its_error_answer(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = [StepSpec(MISSING, expect="expect status 4xx"), StepSpec("GET /login")]

    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.COMPLETED


def test_an_expect_status_that_does_not_hold_fails_the_check_not_the_request(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)

    session = drive(loop, start_session(loop, [MISSING, "expect status 5xx"], target))

    assert session.status is SessionStatus.FAILED
    assert session.steps[0].status.value == "completed"
    error = session.steps[1].error or {}
    assert (error.get("code"), error.get("message")) == (
        "EXPECTATION_FAILED",
        "expected status 5xx, got 404",
    )


def test_http_errors_record_keeps_an_error_answer_as_the_steps_result(
    make_loop: LoopFactory, target: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "old.yaml"
    workflow.write_text(f"name: old\nsteps: ['{MISSING}']\nconfig: {{http_errors: record}}\n")
    config = load_workflow(workflow).config.model_dump(exclude_none=True)
    loop = make_loop(ai=False)

    session = drive(loop, start_session(loop, [MISSING], target, **config))

    assert session.status is SessionStatus.COMPLETED
    finished = [
        e for e in loop.app.history(session.id) if isinstance(e, WorkflowSession.CommandFinished)
    ]
    assert [(f.ok, json.loads(f.output)["status"]) for f in finished] == [(True, 404)]


def test_a_replay_of_a_judged_error_answer_does_not_diverge(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source = start_session(loop, [MISSING, "expect status 404"], target)
    assert drive(loop, source).status is SessionStatus.COMPLETED
    request = replay_request(loop.app.get_session(source), strict=True)
    replayed = loop.app.create(request, tenant="acme", actor="alice").id

    session = drive(loop, replayed)

    assert session.status is SessionStatus.COMPLETED, session.steps


def test_the_model_sees_an_error_answer_as_a_failure_and_may_not_complete_on_it_silently(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("http_request", method="GET", url="/nowhere")
    model.calls("complete_step", summary="looked")
    model.calls("complete_step", summary="the page is gone, as it should be", expected_status=404)
    loop = make_loop()

    session = drive(loop, start_session(loop, ["Check that /nowhere is gone"], target))

    assert session.status is SessionStatus.COMPLETED
    assert session.steps[0].turns == 3
    assert "FAILED (HTTP_STATUS_ERROR)" in model.prompt(1)
    assert "complete_step with expected_status=404" in model.prompt(2)
    assert "expected_status" in str(model.requests[1]["tools"])
    assert "expected_status" not in str(model.requests[0]["tools"])
