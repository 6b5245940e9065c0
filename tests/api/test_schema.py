"""Schemathesis over /openapi.json: generated requests, valid and not, against the real server.

It must find no server error and no response that breaks the published schema (status,
content type, headers, body). The API runs with no worker, so the sessions the fuzzer
creates are stored but never run: no generated step reaches out of this machine.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.case import Case
from schemathesis.openapi import from_url
from schemathesis.schemas import BaseSchema

from tests.api.conftest import KEYS, Api, ApiFactory
from tests.conftest import MASTER_KEY
from tests.waiting import eventually

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def fuzzed(start_api: ApiFactory) -> Api:
    # No request rate: past a key's bucket the fuzzer would only meet 429s (documented).
    api: Api = start_api(
        max_body_bytes=65_536, workers=0, master_key=MASTER_KEY, requests_per_minute=None
    )
    return api


# A body over the size limit is rightly refused with 413, which the default list lacks.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


@pytest.fixture
def api_schema(fuzzed: Api) -> BaseSchema:
    return from_url(f"{fuzzed.base_url}/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_keeps_to_its_schema(case: Case, fuzzed: Api) -> None:
    case.call_and_validate(
        base_url=fuzzed.base_url,
        headers={"Authorization": f"Bearer {KEYS['alice'][1]}"},
        checks=CHECKS,
    )


def test_a_waiting_session_and_its_answers_keep_to_the_schema(
    start_api: ApiFactory, target: str
) -> None:
    """The fuzzer's server runs no session, so none of its sessions ever waits: here one does,
    and what the API says of it, and to its approval and signals, is validated the same way."""
    api: Api = start_api(workers=2, master_key=MASTER_KEY)
    schema = from_url(f"{api.base_url}/openapi.json", config=CONFIG)
    auth = {"Authorization": f"Bearer {KEYS['alice'][1]}"}
    steps = ['wait for signal "paid"', "wait for approval: Ship? within 1h", "GET /effects"]
    body = {"name": "waits", "executor": "http", "base_url": target, "steps": steps}
    session_id = httpx.post(f"{api.base_url}/v1/sessions", json=body, headers=auth).json()[
        "session_id"
    ]
    at = {"session_id": session_id}
    eventually(lambda: get_status(api, session_id, auth) == "waiting", "the session waits")

    cases = [
        ("getSession", {}, None),
        ("listSessions", {"query": {"status": "waiting"}}, None),
        ("getSessionSteps", {}, None),
        ("signalSession", {"path_parameters": {**at, "name": "paid"}}, {"ref": "PAY-1"}),
        ("approveSession", {}, {"comment": "fine"}),
    ]
    for operation_id, parts, payload in cases:
        operation = schema.find_operation_by_id(operation_id)
        given: dict[str, Any] = {"path_parameters": at, **parts}
        if payload is not None:
            given["body"] = payload
        if operation_id == "approveSession":
            eventually(lambda: get_status(api, session_id, auth) == "waiting", "the approval")
        case = operation.Case(**given)
        response = case.call_and_validate(base_url=api.base_url, headers=auth, checks=CHECKS)
        assert response.status_code == 200, (operation_id, response.text)


def get_status(api: Api, session_id: str, auth: dict[str, str]) -> str:
    status: str = httpx.get(f"{api.base_url}/v1/sessions/{session_id}", headers=auth).json()[
        "status"
    ]
    return status


def test_a_registered_workflow_and_its_answers_keep_to_the_schema(fuzzed: Api) -> None:
    """The fuzzer names workflows no one pushed, so its reads of one answer 404: here one is
    pushed (twice), and what the API says of it, its versions and a rollback is validated the
    same way, as is a session of it."""
    schema = from_url(f"{fuzzed.base_url}/openapi.json", config=CONFIG)
    auth = {"Authorization": f"Bearer {KEYS['alice'][1]}"}
    named = {"path_parameters": {"name": "smoke"}}
    first = {"name": "smoke", "executor": "shell", "steps": ["run `true`"]}
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("checkWorkflow", {"body": first}, 200),
        ("pushWorkflow", {"body": first}, 201),
        ("pushWorkflow", {"body": first}, 200),
        ("pushWorkflow", {"body": {**first, "steps": ["run `echo hi`"]}}, 201),
        ("listWorkflows", {}, 200),
        ("getWorkflow", named, 200),
        ("getWorkflowVersion", {"path_parameters": {"name": "smoke", "version": 1}}, 200),
        ("rollbackWorkflow", {**named, "body": {"to_version": 1}}, 200),
        ("createSession", {"body": {"workflow": "smoke@2"}}, 201),
    ]
    for operation_id, given, status in cases:
        case = schema.find_operation_by_id(operation_id).Case(**given)
        response = case.call_and_validate(base_url=fuzzed.base_url, headers=auth, checks=CHECKS)
        assert response.status_code == status, (operation_id, response.text)
