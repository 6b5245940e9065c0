"""`extract` through the API: a schema that cannot be used is refused at creation (422 naming
the field, nothing created); one that can is recorded with the step."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, ApiFactory
from tests.api.test_admission import sessions_created
from tests.api.test_errors import assert_problem


@pytest.mark.parametrize(
    ("step", "said"),
    [
        ({"text": "Read", "extract": {"title": "text"}}, "'text' is not a type"),
        ({"text": "Read", "extract": {"type": "strung"}}, "not a valid JSON Schema"),
        (
            {"text": "Read", "extract": {"type": "string", "pattern": "^(a+)+$"}},
            "may not use pattern",
        ),
        ({"text": "Read", "extract": {"a": "string"}, "save_as": "no way"}, "save_as"),
        ({"text": "Read", "save_as": "first"}, "save_as but no extract"),
        (
            {"for_each": "x in vars.a", "steps": ["GET /"], "extract": {"a": "string"}},
            "a loop extracts nothing",
        ),
    ],
)
def test_an_unusable_extract_is_refused_and_nothing_created(
    start_api: ApiFactory, fresh_database_url: str, step: dict[str, Any], said: str
) -> None:
    api: Api = start_api(workers=0)
    with api.client("alice") as alice:
        before = sessions_created(fresh_database_url)
        refused = alice.post("/v1/sessions", json={"name": "bad", "steps": [step]})

        assert_problem(refused, 422, "VALIDATION_FAILED")
        assert said in refused.text
        assert sessions_created(fresh_database_url) == before


def test_an_extract_is_recorded_with_its_step(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0)
    step = {"text": "Read the first todo", "extract": {"title": "string"}, "save_as": "first"}
    with api.client("alice") as alice:
        created = alice.post("/v1/sessions", json={"name": "extract", "steps": [step]})
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        events = alice.get(f"/v1/sessions/{session_id}/events").json()

    recorded = events["items"][0]["data"]["steps"][0]
    assert recorded["save_as"] == "first"
    assert recorded["extract"]["schema"]["properties"] == {"title": {"type": "string"}}
