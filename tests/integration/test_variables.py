"""Nothing passes that did not happen: a `{{vars.name}}` no step saved, or a placeholder of a
namespace there is none of (`{{inputs.name}}`), fails its command before anything is sent,
instead of going out as `%7B%7Bvars.name%7D%7D`; the error names the steps that save it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from domain.session import SessionStatus
from engine.executors import Command
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.secrets import Secrets
from engine.store.app import Stepline
from tests.conftest import PASSWORD
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


@pytest.mark.parametrize("placeholder", ["{{inputs.todo_id}}", "{{config.todo_id}}"])
def test_a_placeholder_of_no_namespace_fails_the_session_and_sends_nothing(
    make_loop: LoopFactory, placeholder: str
) -> None:
    loop = make_loop(ai=False)
    receiver: Receiver
    with receiving() as receiver:
        base_url = f"http://127.0.0.1:{receiver.port}"
        steps = ["GET /first", f"GET /todos/{placeholder}", "GET /last"]
        session = drive(loop, start_session(loop, steps, base_url))

    assert session.status is SessionStatus.FAILED
    error = session.steps[1].error or {}
    assert error.get("code") == "VARIABLE_NOT_SET"
    assert error["message"].startswith(f"{placeholder} is not set")
    assert receiver.requests == ["/first"]  # no request with braces, none after


def test_an_unset_variable_names_the_step_that_saves_it_too_late(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = ["GET /login", "GET /todos/{{vars.todo_id}}", "save json id as todo_id"]

    session = drive(loop, start_session(loop, steps, target))

    error = session.steps[1].error or {}
    assert error.get("code") == "VARIABLE_NOT_SET"
    assert "step 2 ('save json id as todo_id') saves it, but only after step 1" in error["message"]
    assert error["details"]["saved_by"] == [2]


def test_an_unset_variable_says_no_step_saves_it(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)

    session = drive(loop, start_session(loop, ["GET /todos/{{vars.todo_id}}"], target))

    error = session.steps[0].error or {}
    assert "no step of this workflow saves todo_id" in error.get("message", "")
    assert error["details"]["saved_by"] == []


def test_a_shell_command_with_a_placeholder_nothing_fills_is_not_run(tmp_path: Path) -> None:
    shell = ShellExecutor(tmp_path, Secrets({}), ShellLimits(allowed_programs=("touch",)))

    outcome = shell.run(Command("shell", "run", {"command": "touch {{inputs.name}}"}))

    assert outcome.error is not None
    assert outcome.error.code == "VARIABLE_NOT_SET"
    assert list(tmp_path.iterdir()) == []


def test_a_saved_value_holding_a_placeholder_is_refused_so_a_response_cannot_have_a_secret_sent(
    make_loop: LoopFactory, target: str
) -> None:
    with httpx.Client(base_url=target) as client:  # a todo titled with a placeholder, as is
        client.post("/login", json={"user": "demo", "password": PASSWORD}).raise_for_status()
        client.post("/todos", json={"title": "{{secrets.DEMO_PASSWORD}}"}).raise_for_status()
    loop = make_loop(ai=False)
    steps = [
        'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}',
        "GET /todos/1",
        "save json title as title",
        'POST /effects with {"name": "{{vars.title}}"}',
    ]

    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.FAILED
    error = session.steps[2].error or {}
    assert error.get("code") == "EXTRACTION_INVALID"
    assert "placeholder" in error["message"]
    assert PASSWORD not in json.dumps(httpx.get(f"{target}/effects").json())
