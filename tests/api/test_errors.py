"""Every error is problem+json with the StandardError fields, and a failed request writes
nothing; tenants never see each other's sessions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, ApiFactory, shell_workflow
from tests.api.test_sessions import create, stream
from tests.unit.test_errors import STANDARD_FIELDS

PROBLEM = "application/problem+json"


def log_head(api: Api) -> int:
    return api.services.runtime.projector.head()


def session_count(client: httpx.Client) -> int:
    return len(client.get("/v1/sessions", params={"limit": 200}).json()["items"])


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body.keys() >= STANDARD_FIELDS
    assert (body["status"], body["code"], body["title"]) == (status, code, code)
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    ("body", "content", "field"),
    [
        (None, b'{"name": "x", "steps": [', "body"),
        ({"name": "x", "steps": "GET /"}, None, "body.steps"),
        ({"name": "x", "steps": []}, None, "body.steps"),
        ({"name": "", "steps": ["GET /"]}, None, "body.name"),
        ({"name": "x", "steps": ["  "]}, None, "body.steps"),
        ({"name": "x", "steps": ["GET /"], "surprise": 1}, None, "body.surprise"),
        ({"name": "x", "steps": ["GET /"], "config": {"max_attempts": 0}}, None, "body.config"),
        ({"name": "x", "steps": ["x" * 2001]}, None, "body.steps"),
        ({"name": "x", "steps": ["GET /"] * 501}, None, "body.steps"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field_and_write_nothing(
    api: Api, body: Any, content: bytes | None, field: str
) -> None:
    before = log_head(api)
    with api.client() as alice:
        if content is not None:
            response = alice.post(
                "/v1/sessions", content=content, headers={"content-type": "application/json"}
            )
        else:
            response = alice.post("/v1/sessions", json=body)
    problem = assert_problem(response, 422, "VALIDATION_FAILED")
    assert any(e["field"].startswith(field) for e in problem["details"]["errors"])
    assert log_head(api) == before


def test_a_huge_body_is_refused_with_413(start_api: ApiFactory) -> None:
    api = start_api(max_body_bytes=4096)
    with api.client() as alice:
        declared = alice.post("/v1/sessions", json={"name": "x", "steps": ["y" * 5000]})
        chunked = alice.post(
            "/v1/sessions",
            content=(b"x" * 1024 for _ in range(10)),
            headers={"content-type": "application/json"},
        )
    assert_problem(declared, 413, "PAYLOAD_TOO_LARGE")
    assert_problem(chunked, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/sessions/not-a-uuid", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/sessions/00000000-0000-4000-8000-000000000000", 404, "SESSION_NOT_FOUND"),
        ("GET", "/v1/sessions?limit=0", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/sessions?status=sleeping", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/sessions?created_after=yesterday", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/usage?until=2.2250738585e-313", 422, "VALIDATION_FAILED"),  # schemathesis
        ("GET", "/v1/sessions?created_before=1e9", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/audit?after=-1", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/audit?actor=a%00b", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/sessions?label=a%3Db%00", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/batches/00000000-0000-4000-8000-000000000000", 404, "BATCH_NOT_FOUND"),
        ("GET", "/v1/nothing-here", 404, "NOT_FOUND"),
        ("DELETE", "/v1/sessions", 405, "METHOD_NOT_ALLOWED"),
    ],
)
def test_bad_requests_get_problems_not_500s(
    api: Api, method: str, path: str, status: int, code: str
) -> None:
    with api.client() as alice:
        assert_problem(alice.request(method, path), status, code)


def test_a_bad_parameter_or_body_field_is_named_in_the_advice(api: Api) -> None:
    with api.client() as alice:
        limit = alice.get("/v1/sessions", params={"limit": 0, "status": "sleeping"}).json()
        path = alice.get("/v1/sessions/not-a-uuid").json()
        body = alice.post("/v1/sessions", json={"name": "x", "steps": []}).json()

    assert limit["suggested_action"].startswith("Fix the query parameter '")
    assert "'limit'" in limit["suggested_action"]
    assert "'status'" in limit["suggested_action"]
    assert path["suggested_action"].startswith("Fix the path segment 'session_id':")
    assert body["suggested_action"].startswith("Fix the body field 'steps':")


def test_a_bad_body_field_is_named_in_the_advice_with_its_allowed_values(api: Api) -> None:
    with api.client() as alice:
        response = alice.post(
            "/v1/sessions", json={"name": "x", "steps": ["GET /"], "executor": "curl"}
        )

    problem = assert_problem(response, 422, "VALIDATION_FAILED")
    assert problem["suggested_action"].startswith(
        "Fix the body field 'executor' (one of 'http', 'shell', 'browser' or 'mcp'):"
    )


def test_requests_without_a_valid_key_are_unauthorized(api: Api) -> None:
    with api.client(None) as anonymous, api.client(None, Authorization="Bearer wrong") as wrong:
        missing = anonymous.get("/v1/sessions")
        refused = wrong.post("/v1/sessions", json=shell_workflow("true"))
    assert_problem(missing, 401, "UNAUTHORIZED")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_problem(refused, 401, "UNAUTHORIZED")


def test_the_x_api_key_header_works_too(api: Api) -> None:
    with api.client(None, **{"X-API-Key": "sk_eve_0123456789"}) as eve:
        assert eve.get("/v1/sessions").status_code == 200


def test_the_active_session_limit_answers_429_with_retry_after(start_api: ApiFactory) -> None:
    api = start_api(max_active_sessions=2)
    with api.client() as alice:
        create(alice, shell_workflow("sleep 2"))
        create(alice, shell_workflow("sleep 2"))
        refused = alice.post("/v1/sessions", json=shell_workflow("true"))
        problem = assert_problem(refused, 429, "CONCURRENT_LIMIT_EXCEEDED")
        assert refused.headers["retry-after"] == "5"
        assert problem["details"]["limit"] == 2
        assert session_count(alice) == 2


def test_the_creation_rate_is_shared_by_every_api_process(start_api: ApiFactory) -> None:
    first = start_api(create_rate_per_minute=2, workers=0)
    second = start_api(create_rate_per_minute=2, workers=0)
    with first.client() as via_first, second.client() as via_second:
        create(via_first, shell_workflow("true"))
        create(via_second, shell_workflow("true"))
        assert_problem(
            via_first.post("/v1/sessions", json=shell_workflow("true")), 429, "RATE_LIMITED"
        )
        assert_problem(
            via_second.post("/v1/sessions", json=shell_workflow("true")), 429, "RATE_LIMITED"
        )
        assert session_count(via_first) == 2


def test_the_creation_rate_per_tenant_answers_429_with_retry_after(start_api: ApiFactory) -> None:
    api = start_api(create_rate_per_minute=2)
    with api.client("alice") as alice, api.client("eve") as eve:
        create(alice, shell_workflow("true"))
        create(alice, shell_workflow("true"))
        limited = alice.post("/v1/sessions", json=shell_workflow("true"))
        assert_problem(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1
        assert session_count(alice) == 2
        create(eve, shell_workflow("true"))  # another tenant has its own budget


def test_another_tenants_session_is_not_found_on_every_endpoint(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        session_id = create(alice, shell_workflow("true"))
        assert stream(alice, session_id)[-1]["type"] == "Completed"  # nothing more to come
        before = log_head(api)
        for method, path in [
            ("GET", ""),
            ("GET", "/progress"),
            ("GET", "/steps"),
            ("GET", "/events"),
            ("GET", "/stream"),
            ("POST", "/pause"),
            ("POST", "/resume"),
            ("POST", "/cancel"),
        ]:
            response = eve.request(method, f"/v1/sessions/{session_id}{path}")
            assert_problem(response, 404, "SESSION_NOT_FOUND")
        assert log_head(api) == before
        assert eve.get("/v1/sessions").json()["items"] == []
        eves_trail = eve.get("/v1/audit").json()["items"]
        assert [e for e in eves_trail if not e["event_type"].startswith("TenantPolicy.")] == []
        assert alice.get("/v1/audit").json()["items"]


def test_dev_mode_without_keys_acts_as_dev(start_api: ApiFactory) -> None:
    api = start_api(keys=False)
    with api.client(None) as anyone:
        session_id = create(anyone, shell_workflow("true"))
        assert stream(anyone, session_id)[0]["actor"] == "dev"
