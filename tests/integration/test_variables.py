"""Nothing passes that did not happen: a `{{vars.name}}` no step saved fails its command
before anything is sent, instead of going out as `%7B%7Bvars.name%7D%7D`."""

from __future__ import annotations

from pathlib import Path

from domain.session import SessionStatus
from engine.app import Stepline
from tests.integration.conftest import LoopFactory, drive, start_session
from tests.redteam.test_egress import Receiver, get, http_for, receiving


def test_an_unset_variable_fails_the_request_and_sends_nothing(tmp_path: Path) -> None:
    receiver: Receiver
    with receiving() as receiver:
        executor = http_for(tmp_path, "127.0.0.1")
        outcome = get(executor, f"http://127.0.0.1:{receiver.port}/todos/{{{{vars.todo_id}}}}")

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "VARIABLE_NOT_SET"
    assert outcome.error.details["name"] == "todo_id"
    assert receiver.connections == []


def test_a_session_whose_step_uses_an_unset_variable_fails_naming_it(
    make_loop: LoopFactory, target: str, app: Stepline
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["GET /login", "GET /todos/{{vars.todo_id}}"], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    error = session.steps[1].error or {}
    assert error.get("code") == "VARIABLE_NOT_SET"
    assert "todo_id" in error.get("message", "")
    assert session.steps[0].status.value == "completed"


def test_a_saved_variable_is_filled_in(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    steps = [
        'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}',
        'POST /todos with {"title": "first"}',
        "save json id as todo_id",
        "GET /todos/{{vars.todo_id}}",
        'expect json title == "first"',
    ]

    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.COMPLETED, session.outcome
