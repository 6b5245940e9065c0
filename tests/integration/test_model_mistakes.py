"""The AI path against the mistakes real models make, and against a provider that fails.

The model is the scripted OpenAI-compatible server on loopback; the real `openai` client talks
to it, and the task loop drives real sessions in a real event store.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from domain.session import SessionStatus, StepStatus, WorkflowSession
from tests.conftest import PASSWORD
from tests.integration.conftest import LoopFactory, drive, script_sign_in, start_session
from tests.scripted_model import ScriptedModel

FAST_RETRY = {"retry-after-ms": "10"}


def turn_notes(loop: Any, session_id: Any) -> list[str]:
    return [
        e.reasoning
        for e in loop.app.history(session_id)
        if isinstance(e, WorkflowSession.TurnRecorded)
    ]


def step_error(loop: Any, session_id: Any) -> dict[str, Any]:
    error = loop.app.get_session(session_id).steps[0].error
    assert error is not None
    return dict(error)


def test_every_kind_of_mistake_is_a_turn_the_model_is_told_about(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.says("The page looks fine to me.")
    model.calls_raw("complete_step", '{"summary": "oops", ')
    model.calls("no_such_tool")
    model.calls("complete_step", evidence=["no summary"])
    model.calls_together("complete_step", "fail_step")
    model.calls("complete_step", summary="done at last")
    loop = make_loop(max_consecutive_failures=6)
    session_id = start_session(loop, ["Say hello"], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    notes = turn_notes(loop, session_id)
    codes = [
        "MODEL_NO_TOOL_CALL",
        "MODEL_BAD_ARGUMENTS",
        "MODEL_UNKNOWN_TOOL",
        "MODEL_BAD_ARGUMENTS",
        "MODEL_MANY_TOOL_CALLS",
    ]
    assert [f"[{code}]" in note for note, code in zip(notes, codes, strict=False)] == [True] * 5
    assert "not valid JSON" in notes[1]
    assert "missing required ['summary']" in notes[3]
    assert "no tool named 'no_such_tool'" in model.prompt(3)  # told on the next request
    assert len(notes) == 6


def test_a_model_that_never_behaves_fails_the_step_with_the_mistake_s_code(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for _ in range(3):
        model.says("I would rather chat.")
    loop = make_loop()  # three consecutive failures allowed, the default
    session_id = start_session(loop, ["Say hello"], target)

    drive(loop, session_id)

    error = step_error(loop, session_id)
    assert error["code"] == "MODEL_NO_TOOL_CALL"
    assert error["details"]["limit"] == "max_consecutive_failures"
    assert len(model.requests) == 3


def test_running_out_of_turns_on_a_mistake_names_the_mistake(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("http_request", method="GET", url="/login")
    model.calls("no_such_tool")
    loop = make_loop(max_turns_per_step=2)
    session_id = start_session(loop, ["Say hello"], target)

    drive(loop, session_id)

    error = step_error(loop, session_id)
    assert error["code"] == "MODEL_UNKNOWN_TOOL"
    assert error["details"]["limit"] == "max_turns_per_step"
    assert error["details"]["tool"] == "no_such_tool"


@pytest.mark.parametrize(
    "content",
    [
        '<tool_call>{"name": "complete_step", "arguments": {"summary": "tagged"}}</tool_call>',
        'Sure.\n<tool_call>\n{"name": "complete_step", "arguments": {"summary": "x"}}\n'
        "</tool_call>",
        '{"name": "complete_step", "arguments": {"summary": "bare"}}',
        '```json\n{"name": "complete_step", "parameters": {"summary": "fenced"}}\n```',
    ],
    ids=["hermes", "hermes-with-text", "bare-json", "fenced-json"],
)
def test_a_tool_call_written_in_the_text_is_taken_as_the_call(
    make_loop: LoopFactory, target: str, model: ScriptedModel, content: str
) -> None:
    model.says(content)
    loop = make_loop()
    session_id = start_session(loop, ["Say hello"], target)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED


@pytest.mark.parametrize(
    ("status", "message", "code", "expected"),
    [
        (401, "invalid api key", None, "AI_AUTH_FAILED"),
        (403, "forbidden", None, "AI_AUTH_FAILED"),
        (404, "no such model", None, "AI_MODEL_NOT_FOUND"),
        (
            400,
            "maximum context length is 4096 tokens",
            "context_length_exceeded",
            "AI_CONTEXT_TOO_LONG",
        ),
        (400, "temperature must be a number", None, "AI_PROVIDER_ERROR"),
    ],
)
def test_each_refusal_of_the_provider_ends_the_step_with_its_own_code(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    status: int,
    message: str,
    code: str | None,
    expected: str,
) -> None:
    model.fails(status, message, code=code)
    loop = make_loop()
    session_id = start_session(loop, ["Say hello"], target)

    drive(loop, session_id)

    error = step_error(loop, session_id)
    assert error["code"] == expected
    assert error["suggested_action"]
    assert len(model.requests) == 1  # a refusal is not retried


@pytest.mark.parametrize(
    ("status", "expected"), [(429, "AI_RATE_LIMITED"), (500, "AI_PROVIDER_UNAVAILABLE")]
)
def test_an_outage_after_the_retries_fails_the_step_when_pausing_is_off(
    make_loop: LoopFactory, target: str, model: ScriptedModel, status: int, expected: str
) -> None:
    for _ in range(3):  # the first try and two retries
        model.fails(status, "not now", headers=FAST_RETRY)
    loop = make_loop(ai_pause_on_outage=False)
    session_id = start_session(loop, ["Say hello"], target)

    drive(loop, session_id)

    assert step_error(loop, session_id)["code"] == expected
    assert len(model.requests) == 3


def test_a_provider_that_does_not_answer_in_time_is_a_timeout(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for _ in range(3):
        model.stalls(1.5)
    loop = make_loop(ai_timeout_s=0.3, ai_pause_on_outage=False)
    session_id = start_session(loop, ["Say hello"], target)

    drive(loop, session_id)

    assert step_error(loop, session_id)["code"] == "AI_TIMEOUT"


def test_a_provider_that_refuses_connections_is_unreachable(
    make_loop: LoopFactory, target: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    loop = make_loop(ai_base_url=f"http://127.0.0.1:{port}/v1", ai_pause_on_outage=False)
    session_id = start_session(loop, ["Say hello"], target)

    drive(loop, session_id)

    error = step_error(loop, session_id)
    assert error["code"] == "AI_UNREACHABLE"
    assert "STEPLINE_AI_BASE_URL" in error["suggested_action"]


def test_an_outage_pauses_the_session_and_a_resume_completes_it(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("http_request", method="GET", url="/login")
    for _ in range(3):
        model.fails(503, "overloaded", headers=FAST_RETRY)
    loop = make_loop()  # STEPLINE_AI_PAUSE_ON_OUTAGE is on by default
    session_id = start_session(loop, ["Look at the login page"], target)

    paused = drive(loop, session_id)

    assert paused.status is SessionStatus.PAUSED
    assert paused.steps[0].status is StepStatus.RUNNING  # on hold, not failed
    reason = next(
        e.reason for e in loop.app.history(session_id) if isinstance(e, WorkflowSession.Paused)
    )
    assert reason.startswith("AI_PROVIDER_UNAVAILABLE")

    model.calls("complete_step", summary="the login page is there")  # the provider is back
    loop.app.resume(session_id, actor="alice")
    resumed = drive(loop, session_id)

    assert resumed.status is SessionStatus.COMPLETED
    history = loop.app.history(session_id)
    assert sum(isinstance(e, WorkflowSession.CommandIssued) for e in history) == 1  # not re-run
    assert "Called http.request" in model.prompt(len(model.requests) - 1)  # it carried on


@pytest.mark.parametrize("shape", ["summary", "messages"])
def test_both_conversation_shapes_complete_a_multi_turn_step(
    make_loop: LoopFactory, target: str, model: ScriptedModel, shape: str
) -> None:
    script_sign_in(model)
    model.calls("complete_step", summary="signed in")
    loop = make_loop(ai_conversation=shape)
    session_id = start_session(loop, ["Sign in as the demo user"], target)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED

    third = model.requests[2]["messages"]
    assert PASSWORD not in json.dumps(third)
    if shape == "summary":
        assert [m["role"] for m in third] == ["system", "user"]
        assert "Called http.request" in third[1]["content"]
        return
    assert [m["role"] for m in third] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    call = third[4]["tool_calls"][0]
    assert (third[4]["content"], call["function"]["name"]) == ("sign in", "http_request")
    assert (
        json.loads(call["function"]["arguments"])["body"]["password"] == "{{secrets.DEMO_PASSWORD}}"
    )
    assert third[5]["tool_call_id"] == call["id"]
    assert '"status": 200' in third[5]["content"]
