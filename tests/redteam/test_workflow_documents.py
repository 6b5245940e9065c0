"""Attacks through what a tenant now keeps in the log as it sent it: input values, input
declarations, registered workflow documents, signal bodies. Each is refused when it comes in,
and the deployment's views go on for everyone."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, shell_workflow
from tests.api.test_admission import sessions_created
from tests.api.test_errors import assert_problem
from tests.waiting import eventually

MARKER = {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00"}
"""What the event store reads back as a stored type rather than as the mapping it is."""


def with_object_input(value: Any) -> dict[str, Any]:
    return {
        "name": "object input",
        "base_url": "http://127.0.0.1:9",
        "inputs": {"o": {"type": "object"}},
        "steps": ["GET /{{inputs.o}}"],
        "with": {"o": value},
    }


def test_an_input_value_the_event_store_would_read_back_as_another_type_is_refused(
    api: Api, fresh_database_url: str
) -> None:
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=with_object_input({"deep": MARKER}))
        nested = alice.post("/v1/sessions", json=with_object_input(_nested(40)))
        after = alice.post("/v1/sessions", json=shell_workflow("true", name="after"))
        assert after.status_code == 201, after.text
        listed = eventually(
            lambda: alice.get("/v1/sessions").json()["items"], "the views show the next one"
        )

    problem = assert_problem(refused, 422, "INPUT_INVALID")
    assert "_type_ and _data_" in problem["message"]
    assert "nested more than 32 levels" in assert_problem(nested, 422, "INPUT_INVALID")["message"]
    assert [s["name"] for s in listed] == ["after"]
    assert sessions_created(fresh_database_url) == 1


def test_a_document_or_declaration_holding_such_a_mapping_is_refused(api: Api) -> None:
    declared = {"name": "marked", "steps": ["GET /"], "inputs": {"o": {"type": "object"}}}
    declared["inputs"]["o"]["default"] = MARKER
    labelled = {"name": "marked", "steps": ["GET /"], "webhook": None, "labels": {"a": "b"}}
    with api.client("alice") as alice:
        by_default = alice.post("/v1/workflows", json=declared)
        by_session = alice.post("/v1/sessions", json=declared)
        fine = alice.post("/v1/workflows", json=labelled)

    assert "_type_ and _data_" in assert_problem(by_default, 422, "VALIDATION_FAILED")["message"]
    assert "_type_ and _data_" in assert_problem(by_session, 422, "VALIDATION_FAILED")["message"]
    assert fine.status_code == 201, fine.text


def test_a_signal_body_holding_such_a_mapping_is_refused(api: Api) -> None:
    waiting = shell_workflow("true", name="waits")
    waiting["steps"] = ['wait for signal "go"', "run `true`"]
    with api.client("alice") as alice:
        session_id = alice.post("/v1/sessions", json=waiting).json()["session_id"]
        refused = alice.post(f"/v1/sessions/{session_id}/signals/go", json={"at": MARKER})

    problem = assert_problem(refused, 422, "VALIDATION_FAILED")
    assert "_type_ and _data_" in problem["message"]


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"type": "string", "pattern": "^(a+)+$"}, "pattern cannot be used"),
        ({"type": "object", "patternProperties": {"^(a+)+$": {}}}, "patternProperties"),
        ({"type": "array", "items": {"$ref": "#/nowhere"}}, "$ref cannot be used"),
    ],
)
def test_a_declaration_with_a_pattern_or_a_reference_is_refused(
    api: Api, schema: dict[str, Any], said: str
) -> None:
    body = {"name": "redos", "base_url": "http://127.0.0.1:9", "steps": ["GET /{{inputs.x}}"]}
    body["inputs"] = {"x": schema}
    with api.client("alice") as alice:
        as_session = alice.post("/v1/sessions", json={**body, "with": {"x": "a" * 40 + "!"}})
        as_push = alice.post("/v1/workflows", json=body)

    assert said in assert_problem(as_session, 422, "VALIDATION_FAILED")["message"]
    assert said in assert_problem(as_push, 422, "VALIDATION_FAILED")["message"]


@pytest.mark.parametrize(
    ("step", "values"),
    [
        ("GET /x?q={{{inputs.p}}}", {"p": "{secrets.TOKEN}"}),
        (
            "GET /x?q={{inputs.a}}{{inputs.b}}{{inputs.c}}",
            {"a": "{", "b": "{secrets.TOKEN}", "c": "}"},
        ),
    ],
)
def test_values_that_together_make_a_placeholder_the_step_does_not_hold_are_refused(
    api: Api, fresh_database_url: str, step: str, values: dict[str, str]
) -> None:
    body = {
        "name": "assembled",
        "base_url": "http://127.0.0.1:9",
        "inputs": {name: {"type": "string"} for name in values},
        "steps": [step],
        "with": values,
    }
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=body)

    problem = assert_problem(refused, 422, "INPUT_INVALID")
    assert "make a placeholder its text does not hold" in problem["message"]
    assert sessions_created(fresh_database_url) == 0


def test_a_small_yaml_body_whose_aliases_repeat_a_long_string_is_refused(api: Api) -> None:
    long = "x" * 200_000
    aliases = ", ".join(["*a"] * 20)
    body = f"name: bomb\nsteps: ['GET /']\nlabels: {{k: &a {long}}}\ninputs:\n"
    body += f"  i: {{type: array, examples: [{aliases}]}}\n"
    with api.client("alice") as alice:
        refused = alice.post(
            "/v1/workflows", content=body, headers={"Content-Type": "application/yaml"}
        )

    problem = assert_problem(refused, 422, "VALIDATION_FAILED")
    assert "characters once its YAML aliases are expanded" in problem["message"]


def test_a_body_nested_past_what_a_reader_takes_is_a_bad_request_not_a_crash(api: Api) -> None:
    with api.client("alice") as alice:
        deep = alice.post(
            "/v1/workflows",
            content=b"[" * 100_000 + b"]" * 100_000,
            headers={"Content-Type": "application/json"},
        )

    assert_problem(deep, 422, "VALIDATION_FAILED")


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def passing_on(level: int, depth: int, times: int) -> dict[str, Any]:
    """Template `t<level>`: its one input written `times` times into the value it passes to
    the next, and the last writes it into its step."""
    steps: list[Any] = (
        [{"use": f"t{level + 1}", "with": {"a": "{{inputs.a}}" * times}}]
        if level < depth
        else ["GET /{{inputs.a}}"]
    )
    return {"name": f"t{level}", "inputs": {"a": {"type": "string"}}, "steps": steps}


def test_templates_passing_a_value_on_many_times_cannot_make_a_huge_step(
    api: Api, fresh_database_url: str
) -> None:
    """Each level would write the value 50 times into the next: at 8 levels a few bytes stand
    for terabytes. Refused as soon as a value would not fit a step, nothing built or kept."""
    with api.client("alice") as alice:
        for level in reversed(range(1, 9)):  # each uses the next: the last first
            pushed = alice.post("/v1/workflows", json=passing_on(level, 8, 50))
            assert pushed.status_code == 201, pushed.text
        bomb = {"name": "t0", "base_url": "http://127.0.0.1:9", "steps": [
            {"use": "t1", "with": {"a": "xxxxxxxx"}}]}  # fmt: skip
        by_session = alice.post("/v1/sessions", json=bomb)
        by_push = alice.post("/v1/workflows", json=bomb)
        by_check = alice.post("/v1/workflows/check", json=bomb)

    for refused in (by_session, by_push, by_check):
        problem = assert_problem(refused, 422, "INPUT_INVALID")
        assert "would make it longer than 2,000 characters" in problem["message"]
    assert sessions_created(fresh_database_url) == 0


def test_a_value_written_into_a_step_many_times_is_refused_before_it_is_written(
    api: Api, fresh_database_url: str
) -> None:
    workflow = with_object_input({"k": "v" * 200_000})
    workflow["steps"] = ["GET /" + "{{inputs.o}}" * 100]
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=workflow)

    assert (
        "longer than 2,000 characters" in assert_problem(refused, 422, "INPUT_INVALID")["message"]
    )
    assert sessions_created(fresh_database_url) == 0
