"""Forgiving where it is safe: arguments with one obvious reading are read that way, and said so.

The model is the scripted OpenAI-compatible server on loopback, talking to the real `openai`
client; the task loop drives real sessions in a real event store.
"""

from __future__ import annotations

from typing import Any

from domain.session import SessionStatus, StepSpec, WorkflowSession
from tests.integration.conftest import LoopFactory, drive, start_session
from tests.scripted_model import ScriptedModel


def turn_notes(loop: Any, session_id: Any) -> list[str]:
    return [
        e.reasoning
        for e in loop.app.history(session_id)
        if isinstance(e, WorkflowSession.TurnRecorded)
    ]


def test_evidence_sent_as_a_lone_string_completes_the_step_and_the_turn_says_so(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="said hello", evidence="the page said hello")
    loop = make_loop()
    session_id = start_session(loop, ["Say hello"], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert session.steps[0].evidence == ["the page said hello"]
    assert turn_notes(loop, session_id) == [
        "[ARGUMENTS_COERCED] evidence: a string taken as a list of one"
    ]
    assert len(model.requests) == 1


def test_a_boolean_and_an_integer_sent_as_strings_are_read_as_such(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("http_request", method="GET", url="/missing")
    model.calls("complete_step", summary="not there", expect_met="true", expected_status="404")
    loop = make_loop()
    session_id = start_session(
        loop, [StepSpec("Show /missing is not there", expect="it answers 404")], target
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    note = turn_notes(loop, session_id)[-1]
    assert "[ARGUMENTS_COERCED] expect_met: the string 'true' taken as a boolean" in note
    assert "[ARGUMENTS_COERCED] expected_status: a numeric string taken as an integer" in note


def test_an_object_where_a_list_is_asked_stays_a_mistake(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="x", evidence={"seen": "hello"})
    model.calls("complete_step", summary="said hello", evidence=["hello"])
    loop = make_loop()
    session_id = start_session(loop, ["Say hello"], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    first = turn_notes(loop, session_id)[0]
    assert "[MODEL_BAD_ARGUMENTS]" in first
    assert "evidence must be of type array" in first
    assert "ARGUMENTS_COERCED" not in first


def test_a_word_that_is_not_true_or_false_stays_a_mistake(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for _ in range(3):
        model.calls("complete_step", summary="hello", expect_met="yes")
    loop = make_loop()
    session_id = start_session(loop, [StepSpec("Say hello", expect="it said hello")], target)

    drive(loop, session_id)

    error = loop.app.get_session(session_id).steps[0].error
    assert error is not None
    assert error["code"] == "MODEL_BAD_ARGUMENTS"
    assert "expect_met must be of type boolean" in error["message"]
