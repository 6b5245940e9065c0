"""/openapi.json describes the API as a typed client needs it: every error a Problem under
the content type it is sent as, short operation ids, one schema per status vocabulary, typed
event data, and the binary and event-stream answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.http.server import create_app
from domain.session import SessionStatus, StepViewStatus, WorkflowSession
from engine.settings import Settings

PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
NOT_PROBLEMS = {("/health", "get", "503")}
"""Error statuses whose body is not a problem: /health's 503 is its Health, as its 200 is."""


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document the API serves at /openapi.json (built without serving: it needs no
    database)."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    settings = Settings(database_url="postgresql://unused@127.0.0.1/unused", data_dir=data_dir)
    schema: dict[str, Any] = create_app(settings, workers=0).openapi()
    return schema


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def schemas_within(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schemas_within(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_within(value)


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def test_every_error_answer_is_a_problem_under_the_content_type_it_is_sent_as(
    document: dict[str, Any],
) -> None:
    errors = {
        (path, method, status): answer["content"]
        for path, method, operation in operations(document)
        for status, answer in operation["responses"].items()
        if int(status) >= 400 and (path, method, status) not in NOT_PROBLEMS
    }
    assert ("/v1/sessions/{session_id}/progress", "get", "404") in errors
    assert {key: content for key, content in errors.items() if content != PROBLEM_CONTENT} == {}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_a_problem_carries_the_standard_error_fields(document: dict[str, Any]) -> None:
    problem = component(document, "Problem")
    assert set(problem["required"]) >= {"title", "status", "detail", "code", "suggested_action"}
    assert problem["properties"]["details"]["type"] == "object"


def test_operation_ids_are_short_camel_case_and_unique(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i)] == []
    assert set(ids) == {
        "createSession",
        "listSessions",
        "getSession",
        "getSessionProgress",
        "getSessionSteps",
        "getSessionEvents",
        "streamSessionEvents",
        "getSessionArtifact",
        "getSessionReport",
        "pauseSession",
        "resumeSession",
        "cancelSession",
        "approveSession",
        "rejectSession",
        "signalSession",
        "eraseSession",
        "replaySession",
        "forkSession",
        "getSessionLineage",
        "getSessionUsage",
        "getTenantUsage",
        "createBatch",
        "listBatches",
        "getBatch",
        "cancelBatch",
        "createSchedule",
        "listSchedules",
        "getSchedule",
        "updateSchedule",
        "deleteSchedule",
        "pushWorkflow",
        "checkWorkflow",
        "listWorkflows",
        "getWorkflow",
        "getWorkflowVersion",
        "rollbackWorkflow",
        "listWorkflowAnalytics",
        "getWorkflowAnalytics",
        "createWebhookSecret",
        "listSessionWebhooks",
        "listAuditEntries",
        "getAuditHead",
        "putSecret",
        "listSecrets",
        "deleteSecret",
        "listLearnedActions",
        "getLearnedAction",
        "forgetLearnedAction",
        "getHealth",
        "getMetrics",
    }


def test_session_and_step_statuses_are_one_schema_each_made_from_their_source(
    document: dict[str, Any],
) -> None:
    session_statuses = [status.value for status in SessionStatus]
    step_statuses = [status.value for status in StepViewStatus]
    assert component(document, "SessionStatus")["enum"] == session_statuses
    assert component(document, "StepStatus")["enum"] == step_statuses
    enums = [node["enum"] for node in schemas_within(document) if "enum" in node]
    assert enums.count(session_statuses) == 1
    assert enums.count(step_statuses) == 1
    progress = component(document, "ProgressView")["properties"]["status"]
    assert progress == {"$ref": "#/components/schemas/SessionStatus"}


def every_event_class() -> Iterator[type[WorkflowSession.Event]]:
    """Every subclass of the session's events, wherever it is declared."""
    unseen = [WorkflowSession.Event]
    while unseen:
        for subclass in unseen.pop().__subclasses__():
            unseen.append(subclass)
            yield subclass


def test_every_domain_event_has_a_typed_schema_in_the_event_union(
    document: dict[str, Any],
) -> None:
    union = component(document, "SessionEvent")
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert {event.__name__ for event in every_event_class()} == set(mapping)
    assert len(mapping) == len(union["oneOf"])
    started = component(document, "StepStartedEventData")
    assert (started["properties"].keys(), started["required"]) == (
        {"step_index", "attempt"},
        ["step_index", "attempt"],
    )
    page = component(document, "EventPage")["properties"]["items"]["items"]
    assert page == {"$ref": "#/components/schemas/SessionEvent"}


def test_the_screenshot_the_report_and_the_event_stream_are_described(
    document: dict[str, Any],
) -> None:
    paths = document["paths"]
    artifact = paths["/v1/sessions/{session_id}/artifacts/{digest}"]["get"]["responses"]["200"]
    assert artifact["content"] == {"image/png": {"schema": {"type": "string", "format": "binary"}}}
    report = paths["/v1/sessions/{session_id}/report"]["get"]["responses"]["200"]
    assert report["content"] == {"text/html": {"schema": {"type": "string"}}}
    assert "Content-Security-Policy" in report["headers"]
    stream = paths["/v1/sessions/{session_id}/stream"]["get"]["responses"]["200"]["content"]
    frame = stream["text/event-stream"]["itemSchema"]
    assert frame["properties"]["data"]["contentSchema"]["oneOf"] == [
        {"$ref": "#/components/schemas/SessionEvent"},
        {"$ref": "#/components/schemas/ArtifactAnnouncement"},
    ]
    assert "ArtifactAnnouncement" in document["components"]["schemas"]


def test_a_pushed_workflow_is_a_workflow_document(
    document: dict[str, Any],
) -> None:
    body = document["paths"]["/v1/workflows"]["post"]["requestBody"]
    assert body["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/WorkflowDocument"}}
    }
    assert "application/yaml" in body["description"]
    pushed = component(document, "WorkflowDocument")
    assert pushed["required"] == ["name", "steps"]
    assert {"type": "string", "minLength": 1, "maxLength": 2000} in (
        pushed["properties"]["steps"]["items"]["anyOf"]
    )
