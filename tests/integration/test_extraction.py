"""Typed extraction on the AI path: a step completes with data of its declared shape, saved as
`{{vars.<save_as>}}` and in its completion event; data that does not fit is a mistake the model
is told about; replay and fork carry the data on.

The model is the scripted OpenAI-compatible server on loopback, talking to the real `openai`
client; the task loop drives real sessions in a real event store.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.extraction import Extraction
from domain.loops import Loop
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.loop.replay import fork_request, replay_request
from engine.store.app import Stepline
from tests.conftest import PASSWORD
from tests.integration.conftest import (
    LoopFactory,
    assert_stored_nowhere,
    drive,
    start_session,
)
from tests.scripted_model import ScriptedModel

TODO = Extraction.written({"title": "string", "count": "integer"})


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of the test's own."""
    return fresh_app


def extracting(text: str = "Read the first todo", save_as: str | None = "first") -> StepSpec:
    return StepSpec(text, extract=TODO, save_as=save_as)


def completed_data(app: Stepline, session_id: UUID) -> list[Any]:
    return [e.data for e in app.history(session_id) if isinstance(e, WorkflowSession.StepCompleted)]


def effects(target: str) -> list[str]:
    return [effect["name"] for effect in httpx.get(f"{target}/effects").json()["applied"]]


def test_the_data_is_offered_as_a_required_parameter_of_complete_step(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 2})
    loop = make_loop()
    session_id = start_session(loop, [extracting()], target)

    drive(loop, session_id)

    tools = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    parameters = tools["complete_step"]["parameters"]
    assert "data" in parameters["required"]
    assert parameters["properties"]["data"]["properties"] == TODO.schema["properties"]


def test_valid_data_is_recorded_and_saved_as_a_variable_later_steps_use(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 2})
    loop = make_loop()
    steps = [
        extracting(),
        StepSpec(
            'POST /effects with {"name": "{{vars.first}}"}', condition="vars.first.count == 2"
        ),
        StepSpec('POST /effects with {"name": "skipped"}', condition="vars.first.count > 2"),
    ]
    session_id = start_session(loop, steps, target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert session.steps[0].data == {"title": "milk", "count": 2}
    assert completed_data(loop.app, session_id) == [{"title": "milk", "count": 2}, None]
    assert effects(target) == [json.dumps({"title": "milk", "count": 2})]


def test_data_that_does_not_fit_is_a_mistake_told_to_the_model_until_it_is_corrected(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data={"title": "milk"})
    model.calls("complete_step", summary="read", data={"title": "milk", "count": "two"})
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 2})
    loop = make_loop()
    session_id = start_session(loop, [extracting()], target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    notes = [
        e.reasoning
        for e in loop.app.history(session_id)
        if isinstance(e, WorkflowSession.TurnRecorded)
    ]
    assert "[MODEL_BAD_DATA]" in notes[0]
    assert "'count' is a required property" in notes[0]
    assert "'count'" in model.prompt(1)  # told on the next request
    assert "is not of type 'integer'" in model.prompt(2)
    assert completed_data(loop.app, session_id) == [{"title": "milk", "count": 2}]


def test_a_model_that_never_gives_fitting_data_fails_the_step_with_the_reason(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    for _ in range(3):
        model.calls("complete_step", summary="read", data={"title": ["milk"], "count": 1})
    loop = make_loop()
    session_id = start_session(loop, [extracting()], target)

    drive(loop, session_id)

    error = loop.app.get_session(session_id).steps[0].error
    assert error is not None
    assert error["code"] == "MODEL_BAD_DATA"
    assert "extract schema" in error["message"]


def test_a_secret_in_the_data_is_recorded_as_its_placeholder(
    make_loop: LoopFactory, target: str, model: ScriptedModel, fresh_database_url: str
) -> None:
    model.calls("complete_step", summary="read", data={"title": PASSWORD, "count": 1})
    loop = make_loop()
    steps = [extracting(), StepSpec('POST /effects with {"name": "{{vars.first}}"}')]
    session_id = start_session(loop, steps, target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    recorded = {"title": "{{secrets.DEMO_PASSWORD}}", "count": 1}
    assert completed_data(loop.app, session_id)[0] == recorded
    assert_stored_nowhere(fresh_database_url, PASSWORD)


def test_data_holding_a_placeholder_is_a_mistake_so_a_page_cannot_plant_one(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    planted = {"title": "{{secrets.DEMO_PASSWORD}}", "count": 1}
    model.calls("complete_step", summary="read", data=planted)
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 1})
    loop = make_loop()
    steps = [extracting(), StepSpec('POST /effects with {"name": "{{vars.first}}"}')]
    session_id = start_session(loop, steps, target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert "placeholder" in model.prompt(1)
    assert completed_data(loop.app, session_id)[0] == {"title": "milk", "count": 1}
    assert PASSWORD not in json.dumps(effects(target))


def test_a_replay_gives_the_recorded_data_without_asking_the_model(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 2})
    loop = make_loop()
    steps = [extracting(), StepSpec('POST /effects with {"name": "{{vars.first}}"}')]
    source = start_session(loop, steps, target)
    assert drive(loop, source).status is SessionStatus.COMPLETED
    asked = len(model.requests)

    request = replay_request(loop.app.get_session(source), strict=True)
    replayed = loop.app.create(request, tenant="acme", actor="alice").id
    session = drive(loop, replayed)

    assert session.status is SessionStatus.COMPLETED
    assert len(model.requests) == asked
    assert session.steps[0].data == {"title": "milk", "count": 2}
    assert effects(target) == [json.dumps({"title": "milk", "count": 2})] * 2


def test_a_fork_after_an_extracting_step_has_its_variable(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 2})
    loop = make_loop()
    steps = [extracting(), StepSpec('POST /effects with {"name": "{{vars.first}}"}')]
    source = start_session(loop, steps, target)
    assert drive(loop, source).status is SessionStatus.COMPLETED

    request = fork_request(loop.app.get_session(source), loop.app.history(source), from_step=1)
    forked = loop.app.create(request, tenant="acme", actor="alice").id
    session = drive(loop, forked)

    assert session.status is SessionStatus.COMPLETED
    assert session.steps[0].data == {"title": "milk", "count": 2}
    assert effects(target) == [json.dumps({"title": "milk", "count": 2})] * 2


def test_a_run_that_takes_the_session_over_has_the_variable_from_the_log(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data={"title": "milk", "count": 2})
    first = make_loop()
    steps = [
        extracting(),
        StepSpec('wait for signal "go"'),
        StepSpec('POST /effects with {"name": "{{vars.first}}"}'),
    ]
    session_id = start_session(first, steps, target)
    assert drive(first, session_id).status is SessionStatus.WAITING
    first.signal(session_id, "go", {}, actor="alice")

    session = drive(make_loop(), session_id)  # a new run: nothing held in memory

    assert session.status is SessionStatus.COMPLETED
    assert effects(target) == [json.dumps({"title": "milk", "count": 2})]


def test_a_loop_goes_over_the_list_a_step_extracted(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="read", data=["milk", "eggs"])
    loop = make_loop()
    names = Extraction.written({"type": "array", "items": {"type": "string"}})
    each = Loop(
        "name", "vars.names", (StepSpec('POST /effects with {"name": "{{name}}"}').to_dict(),)
    )
    steps = [
        StepSpec("Read the todo titles", extract=names, save_as="names"),
        StepSpec(each.header, loop=each),
    ]
    session_id = start_session(loop, steps, target)

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert effects(target) == ["milk", "eggs"]
