"""A workflow's inputs through the API: declared as JSON Schemas, given with `with`, checked
at creation (422 INPUT_INVALID naming the input, nothing created) and written into the steps
the session records."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, ApiFactory
from tests.api.test_admission import sessions_created
from tests.api.test_errors import assert_problem
from tests.waiting import eventually


def ended(status: str) -> str | None:
    return status if status in ("completed", "failed", "cancelled", "expired") else None


def effect_workflow(target: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "effect by input",
        "base_url": target,
        "inputs": {
            "effect": {"type": "string", "minLength": 1, "description": "what to record"},
            "copies": {"type": "integer", "minimum": 1, "default": 1},
        },
        "steps": [
            'POST /effects with {"name": "{{inputs.effect}} x{{ inputs.copies }}"}',
            {"text": "expect status 201", "expect": 'expect body contains "{{inputs.effect}}"'},
        ],
        **extra,
    }


def test_the_values_given_are_written_into_the_steps_the_session_records_and_runs(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice:
        created = alice.post(
            "/v1/sessions", json=effect_workflow(target, **{"with": {"effect": "ada"}})
        )
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        status = eventually(
            lambda: ended(alice.get(f"/v1/sessions/{session_id}").json()["status"]),
            "the session ends",
            within_s=60,
        )
        assert status == "completed"
        events = alice.get(f"/v1/sessions/{session_id}/events").json()["items"]

    created_event = events[0]["data"]
    assert [s["text"] for s in created_event["steps"]] == [
        'POST /effects with {"name": "ada x1"}',
        "expect status 201",
    ]
    assert created_event["steps"][1]["expect"] == 'expect body contains "ada"'
    assert created_event["config"]["inputs"] == {"effect": "ada", "copies": 1}
    applied = httpx.get(f"{target}/effects").json()["applied"]
    assert [effect["name"] for effect in applied] == ["ada x1"]


@pytest.mark.parametrize(
    ("given", "named", "said"),
    [
        ({}, "effect", "input effect is required (string: what to record)"),
        ({"effect": 3}, "effect", "input effect: 3 is not of type 'string'"),
        ({"effect": "ada", "copies": 0}, "copies", "input copies: 0 is less than the minimum"),
        ({"effect": "ada", "copies": "2"}, "copies", "input copies: '2' is not of type"),
        ({"effect": "ada", "colour": "red"}, "colour", "the workflow declares no input colour"),
        ({"effect": "{{secrets.TOKEN}}"}, "effect", "may not hold '{{'"),
    ],
)
def test_values_that_do_not_fit_are_refused_naming_the_input_and_nothing_is_created(
    api: Api, fresh_database_url: str, target: str, given: dict[str, Any], named: str, said: str
) -> None:
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=effect_workflow(target, **{"with": given}))

    problem = assert_problem(refused, 422, "INPUT_INVALID")
    assert problem["details"]["input"] == named
    assert said in problem["message"]
    assert sessions_created(fresh_database_url) == 0


def test_a_step_using_an_input_the_workflow_does_not_declare_is_refused_at_creation(
    api: Api, fresh_database_url: str, target: str
) -> None:
    body = {"name": "undeclared", "base_url": target, "steps": ["GET /people/{{inputs.who}}"]}
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=body)

    problem = assert_problem(refused, 422, "INPUT_INVALID")
    assert problem["details"]["input"] == "who"
    assert "step 1 uses {{inputs.who}}" in problem["message"]
    assert sessions_created(fresh_database_url) == 0


@pytest.mark.parametrize(
    ("declared", "field"),
    [
        ({"who": {"type": "text"}}, "type must be one of"),
        ({"who": {"type": "integer", "default": "x"}}, "the default does not fit"),
        ({"who": {"type": "string", "minLength": -1}}, "not a valid JSON Schema"),
        ({"1who": {"type": "string"}}, "String should match pattern"),
    ],
)
def test_a_declaration_that_is_not_a_usable_schema_is_refused(
    api: Api, target: str, declared: dict[str, Any], field: str
) -> None:
    body = {"name": "bad inputs", "base_url": target, "inputs": declared, "steps": ["GET /"]}
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=body)

    problem = assert_problem(refused, 422, "VALIDATION_FAILED")
    assert field in problem["message"]


def test_a_schedule_keeps_its_input_values_and_each_firing_runs_with_them(
    api: Api, target: str
) -> None:
    workflow = effect_workflow(target, **{"with": {"effect": "tick"}})
    with api.client("alice") as alice:
        missing = alice.post(
            "/v1/schedules",
            json={"name": "no input", "workflow": effect_workflow(target), "every": "1h"},
        )
        response = alice.post(
            "/v1/schedules", json={"name": "ticks", "workflow": workflow, "every": "1s"}
        )
        assert response.status_code == 201, response.text
        schedule = response.json()
        eventually(
            lambda: httpx.get(f"{target}/effects").json()["applied"], "a firing's effect", 60
        )
        alice.patch(f"/v1/schedules/{schedule['schedule_id']}", json={"paused": True})

    assert_problem(missing, 422, "INPUT_INVALID")
    assert schedule["workflow"]["with"] == {"effect": "tick"}
    applied = httpx.get(f"{target}/effects").json()["applied"]
    assert {effect["name"] for effect in applied} == {"tick x1"}


def test_a_fork_with_new_steps_writes_in_the_sources_input_values(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice:
        body = effect_workflow(target, **{"with": {"effect": "ada", "copies": 2}})
        source = alice.post("/v1/sessions", json=body).json()["session_id"]
        status = eventually(
            lambda: ended(alice.get(f"/v1/sessions/{source}").json()["status"]), "source ends", 60
        )
        assert status == "completed"
        new_steps = ["expect status 201", 'POST /effects with {"name": "again {{inputs.effect}}"}']
        forked = alice.post(
            f"/v1/sessions/{source}/fork", json={"from_step": 1, "steps": new_steps}
        )
        assert forked.status_code == 201, forked.text
        undeclared = alice.post(
            f"/v1/sessions/{source}/fork", json={"from_step": 1, "steps": ["GET /{{inputs.who}}"]}
        )
        fork_id = forked.json()["session_id"]
        eventually(
            lambda: ended(alice.get(f"/v1/sessions/{fork_id}").json()["status"]), "fork ends", 60
        )
        created = alice.get(f"/v1/sessions/{fork_id}/events").json()["items"][0]["data"]

    assert created["steps"][2]["text"] == 'POST /effects with {"name": "again ada"}'
    assert_problem(undeclared, 422, "INPUT_INVALID")
    applied = httpx.get(f"{target}/effects").json()["applied"]
    assert [effect["name"] for effect in applied] == ["ada x2", "again ada"]
