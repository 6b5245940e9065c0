"""A session whose steps use a secret its tenant has not stored is refused at creation (422
SECRET_MISSING), before anything is recorded: not found at its fifth step, after the first
four have acted on the target."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.api.conftest import Api, ApiFactory
from tests.api.test_errors import assert_problem
from tests.conftest import MASTER_KEY

NEEDS_SECRETS: dict[str, Any] = {
    "name": "needs secrets",
    "base_url": "http://127.0.0.1:9",
    "steps": [
        "GET /login",
        'POST /login with {"user": "demo", "password": "{{secrets.API_TOKEN}}"}',
        {"text": "Check the dashboard", "expect": "it greets {{secrets.OWNER}}"},
    ],
}


def sessions_created(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM stepline_events WHERE topic LIKE '%WorkflowSession.Created'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_session_using_secrets_its_tenant_has_not_stored_is_refused_and_not_created(
    start_api: ApiFactory, fresh_database_url: str
) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    with api.client("alice") as alice:
        refused = alice.post("/v1/sessions", json=NEEDS_SECRETS)
        listed = alice.get("/v1/sessions").json()

    problem = assert_problem(refused, 422, "SECRET_MISSING")
    assert problem["details"]["missing"] == {"API_TOKEN": [1], "OWNER": [2]}
    assert "{{secrets.API_TOKEN}} (step 1)" in problem["message"]
    assert "stepline secrets set NAME --tenant T" in problem["suggested_action"]
    assert "PUT /v1/secrets/NAME" in problem["suggested_action"]
    assert listed["items"] == []
    assert sessions_created(fresh_database_url) == 0


def test_a_session_is_created_once_its_tenant_stores_the_secrets(
    start_api: ApiFactory, fresh_database_url: str
) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    with api.client("alice") as alice, api.client("eve") as eve:
        for name in ("API_TOKEN", "OWNER"):
            stored = alice.put(f"/v1/secrets/{name}", json={"value": f"{name}-value"})
            assert stored.status_code == 200, stored.text
        created = alice.post("/v1/sessions", json=NEEDS_SECRETS)
        elsewhere = eve.post("/v1/sessions", json=NEEDS_SECRETS)  # globex stored none

    assert created.status_code == 201, created.text
    assert_problem(elsewhere, 422, "SECRET_MISSING")
    assert sessions_created(fresh_database_url) == 1


def test_a_batch_with_one_session_missing_a_secret_creates_none(
    start_api: ApiFactory, fresh_database_url: str
) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    fine = {"name": "fine", "steps": ["GET /login"], "base_url": "http://127.0.0.1:9"}
    with api.client("alice") as alice:
        refused = alice.post("/v1/batches", json={"sessions": [fine, NEEDS_SECRETS]})

    assert_problem(refused, 422, "SECRET_MISSING")
    assert sessions_created(fresh_database_url) == 0
