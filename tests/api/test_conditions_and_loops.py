"""`if` and loops through the API: a body's steps with conditions and a loop (written as a
file writes it, or as `for_each`), run by a worker against the example app, read back from
the step history and the progress; expressions outside the language refused at creation
(422 naming the field, nothing created)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Api, ApiFactory
from tests.api.test_admission import sessions_created
from tests.api.test_errors import assert_problem
from tests.waiting import eventually


def ended(status: str) -> str | None:
    return status if status in ("completed", "failed", "cancelled", "expired") else None


def looping_workflow(target: str, loop: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "loop over inputs",
        "base_url": target,
        "inputs": {"names": {"type": "array", "items": {"type": "string"}}},
        "with": {"names": ["ada", "bob", "cy"]},
        "steps": [
            {"text": "GET /effects", "if": "len(inputs.names) == 0"},
            loop,
            {"text": "GET /effects", "if": 'result.status == "completed"'},
        ],
    }


def run_to_the_end(client: httpx.Client, body: dict[str, Any]) -> str:
    created = client.post("/v1/sessions", json=body)
    assert created.status_code == 201, created.text
    session_id: str = created.json()["session_id"]
    status = eventually(
        lambda: ended(client.get(f"/v1/sessions/{session_id}").json()["status"]),
        "the session ends",
        within_s=60,
    )
    assert status == "completed"
    return session_id


def test_a_loop_written_as_a_file_writes_it_runs_once_per_item(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    loop = {
        "for each name in inputs.names": [
            {"text": 'POST /effects with {"name": "api-{{name}}"}', "if": 'name != "bob"'}
        ],
        "max_iterations": 3,
    }
    with api.client("alice") as alice:
        session_id = run_to_the_end(alice, looping_workflow(target, loop))
        steps = alice.get(f"/v1/sessions/{session_id}/steps").json()
        session = alice.get(f"/v1/sessions/{session_id}").json()

    assert [(s["text"], s["status"]) for s in steps] == [
        ("GET /effects", "skipped"),
        ("for each name in inputs.names", "completed"),
        ('POST /effects with {"name": "api-ada"}', "completed"),
        ('POST /effects with {"name": "api-bob"}', "skipped"),
        ('POST /effects with {"name": "api-cy"}', "completed"),
        ("GET /effects", "completed"),
    ]
    assert steps[0]["condition"] == "len(inputs.names) == 0"
    assert [s["origin"]["iteration"] for s in steps[2:5]] == [0, 1, 2]
    assert steps[3]["origin"]["bind"] == {"name": "bob"}
    assert (session["total_steps"], session["completed_steps"], session["skipped_steps"]) == (
        6,
        4,
        2,
    )
    assert (session["percent"], session["steps_may_grow"]) == (100.0, False)
    applied = [e["name"] for e in httpx.get(f"{target}/effects").json()["applied"]]
    assert [name for name in applied if name.startswith("api-")][-2:] == ["api-ada", "api-cy"]


def test_a_loop_given_as_for_each_runs_the_same(start_api: ApiFactory, target: str) -> None:
    api: Api = start_api(workers=1)
    loop = {"for_each": "name in inputs.names", "steps": ["GET /effects"]}
    with api.client("alice") as alice:
        session_id = run_to_the_end(alice, looping_workflow(target, loop))
        steps = alice.get(f"/v1/sessions/{session_id}/steps").json()

    assert [s["text"] for s in steps[2:5]] == ["GET /effects"] * 3


def test_an_expression_outside_the_language_is_refused_and_nothing_created(
    start_api: ApiFactory, target: str, fresh_database_url: str
) -> None:
    api: Api = start_api(workers=0)
    with api.client("alice") as alice:
        before = sessions_created(fresh_database_url)
        for steps, field in [
            ([{"text": "GET /", "if": "__import__('os').system('id')"}], "steps[0].if"),
            ([{"text": "GET /", "if": "vars.a.__class__ == 1"}], "steps[0].if"),
            ([{"for_each": "x in open('/etc/passwd')", "steps": ["GET /"]}], "for_each"),
            ([{"for_each": "vars in vars.a", "steps": ["GET /"]}], "steps[0].for_each"),
        ]:
            refused = alice.post(
                "/v1/sessions", json={"name": "bad", "base_url": target, "steps": steps}
            )
            assert_problem(refused, 422, "VALIDATION_FAILED")
            assert field in refused.text
        both = alice.post(
            "/v1/sessions",
            json={"name": "bad", "steps": [{"text": "GET /", "for_each": "x in vars.a"}]},
        )
        assert_problem(both, 422, "VALIDATION_FAILED")
        assert "a step is text or a loop" in both.text
        assert sessions_created(fresh_database_url) == before
