"""/v1/workflows: each tenant's workflow registry. A document pushed (JSON, or YAML with
`Content-Type: application/yaml`) becomes its workflow's next version unless it is the current
one; versions are immutable and content-addressed; a rollback makes another version current
again. A session of a registered version: POST /v1/sessions `{"workflow": "name@3"}`.

Reads come from the `workflow_registry` view; the functions before the routes are also what
`stepline workflows` runs on the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.http.errors import ApiError, problem_responses
from api.http.reads import encode_cursor
from api.http.schemas import (
    RollbackWorkflow,
    StepRunsAs,
    WorkflowCheckView,
    WorkflowPage,
    WorkflowSummary,
    WorkflowVersionSummary,
    WorkflowVersionView,
    WorkflowView,
)
from api.http.services import CallerDep, Services, ServicesDep
from api.http.sessions import after_cursor
from domain.errors import WorkflowNotFound
from domain.session import MAX_NAME
from domain.workflow import Workflow, is_name
from engine.bootstrap import Runtime
from engine.workflows import registry
from engine.workflows.check import labelled_steps
from engine.workflows.registry import WorkflowDocument, document_of_yaml
from projections import workflow_registry
from projections.workflow_registry import IndexedWorkflow, RegisteredVersion

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

JSON = "application/json"
YAML = "application/yaml"
YAML_TYPES = frozenset({YAML, "application/x-yaml", "text/yaml", "text/x-yaml"})
CatchUp = Callable[[], None]


# ---- what the routes and `stepline workflows` (on the database) do -------------------------


def document_of_body(body: bytes, content_type: str | None) -> WorkflowDocument:
    """The document a request sent: JSON, or YAML (with a workflow file's errors, by line)."""
    media = (content_type or JSON).split(";")[0].strip().lower()
    if media in YAML_TYPES:
        try:
            return document_of_yaml(body.decode("utf-8"))
        except UnicodeDecodeError as error:
            message = f"the body is not UTF-8 (byte {error.start})"
            raise ApiError.of("VALIDATION_FAILED", message) from None
    if media != JSON and not media.endswith("+json"):
        raise ApiError.of(
            "UNSUPPORTED_MEDIA_TYPE",
            f"a workflow document is sent as {JSON} or {YAML}, not {media}",
        )
    try:
        data = json.loads(body)
    except ValueError as error:
        raise ApiError.of("VALIDATION_FAILED", f"the body is not JSON: {error}") from None
    except RecursionError:
        raise ApiError.of("VALIDATION_FAILED", "the body is nested too deeply") from None
    try:
        return WorkflowDocument.model_validate(data)
    except ValidationError as error:
        located = [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
        raise RequestValidationError(located) from None


def pushed(
    runtime: Runtime, document: WorkflowDocument, tenant: str, actor: str, catch_up: CatchUp
) -> tuple[WorkflowVersionView, bool]:
    """Push the document; its version, and whether it is new."""
    version, new = registry.push(runtime.app, document, tenant=tenant, actor=actor)
    return version_view(runtime, tenant, document.name, version.number, catch_up), new


def checked(
    runtime: Runtime, document: WorkflowDocument, tenant: str, actor: str
) -> WorkflowCheckView:
    """What a push of the document would refuse, refused the same way; nothing recorded."""
    registry.check_runnable(runtime.app, document, tenant, actor)
    labels = labelled_steps(runtime.loop, document.steps)
    return WorkflowCheckView(
        steps=[StepRunsAs(index=s.index, kind=s.kind, runs_as=s.runs_as) for s in labels]
    )


def rolled_back(
    runtime: Runtime, tenant: str, name: str, to_version: int, actor: str, catch_up: CatchUp
) -> WorkflowView:
    registry.roll_back(runtime.app, tenant=tenant, name=name, to_version=to_version, actor=actor)
    return workflow_view(runtime, tenant, name, catch_up)


def workflow_view(runtime: Runtime, tenant: str, name: str, catch_up: CatchUp) -> WorkflowView:
    """The tenant's workflow and its versions, from the view once `catch_up` returns."""
    catch_up()
    with runtime.projector.pool.connection() as conn:
        workflow = _indexed(conn, tenant, name)
        versions = workflow_registry.versions_of(conn, workflow.workflow_id)
    return WorkflowView(
        name=workflow.name,
        current_version=workflow.current_version,
        created_by=workflow.created_by,
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
        versions=[WorkflowVersionSummary(**_summary_of(version, workflow)) for version in versions],
    )


def version_view(
    runtime: Runtime, tenant: str, name: str, number: int, catch_up: CatchUp
) -> WorkflowVersionView:
    """Version `number` of the tenant's workflow, its document included."""
    catch_up()
    with runtime.projector.pool.connection() as conn:
        workflow = _indexed(conn, tenant, name)
        version = workflow_registry.version_of(conn, workflow.workflow_id, number)
    if version is None:
        raise WorkflowNotFound(
            f"workflow {name!r} has no version {number} (it has 1 to {workflow.version_count})",
            workflow=name,
            version=number,
        )
    return WorkflowVersionView(
        **_summary_of(version, workflow), name=workflow.name, document=version.document
    )


def workflow_page(
    runtime: Runtime, tenant: str, limit: int, after: tuple[datetime, UUID] | None
) -> WorkflowPage:
    """One page of the tenant's workflows, newest first (the view caught up by the caller)."""
    with runtime.projector.pool.connection() as conn:
        rows = workflow_registry.list_workflows(conn, tenant, limit=limit + 1, after=after)
    page = rows[:limit]
    last = page[-1] if page else None
    return WorkflowPage(
        items=[
            WorkflowSummary(
                name=row.name,
                current_version=row.current_version,
                version_count=row.version_count,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in page
        ],
        next_cursor=(
            encode_cursor(last.created_at, last.workflow_id)
            if last is not None and len(rows) > limit
            else None
        ),
    )


def _indexed(conn: Any, tenant: str, name: str) -> IndexedWorkflow:
    workflow = (
        workflow_registry.find(conn, Workflow.create_id(tenant, name), tenant)
        if is_name(name)
        else None
    )
    if workflow is None:
        raise WorkflowNotFound(f"no workflow named {name!r} is registered", workflow=name)
    return workflow


def _summary_of(version: RegisteredVersion, workflow: IndexedWorkflow) -> dict[str, Any]:
    return {
        "version": version.number,
        "sha256": version.sha256,
        "pushed_at": version.pushed_at,
        "actor": version.actor,
        "current": version.number == workflow.current_version,
    }


# ---- routes -------------------------------------------------------------------------------

WorkflowName = Annotated[str, Path(max_length=MAX_NAME, description="the workflow's name")]
# The YAML the route takes too is said in its description, not declared beside the JSON:
# openapi-python-client (0.29) writes a client that does not import for an operation with two
# request content types.
PUSHED_AS = {
    "requestBody": {
        "required": True,
        "description": "a WorkflowDocument as JSON; or as YAML, sent with Content-Type: "
        "application/yaml",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/WorkflowDocument"}}},
    },
}


@router.post(
    "",
    operation_id="pushWorkflow",
    status_code=201,
    response_model=WorkflowVersionView,
    responses={
        200: {
            "description": "The document is the current version's: nothing was pushed",
            "model": WorkflowVersionView,
        },
        **problem_responses(400, 401, 413, 415, 422),
    },
    openapi_extra=PUSHED_AS,
)
async def push(
    request: Request, services: ServicesDep, caller: CallerDep, response: Response
) -> WorkflowVersionView:
    """Push a workflow document (JSON, or YAML with Content-Type: application/yaml): 201 and
    its new version if it differs from the current one; 200 and the current one if not."""
    body = await request.body()
    content_type = request.headers.get("content-type")
    return await run_in_threadpool(
        _push, services, body, content_type, caller.tenant, caller.name, response
    )


def _push(
    services: Services,
    body: bytes,
    content_type: str | None,
    tenant: str,
    actor: str,
    response: Response,
) -> WorkflowVersionView:
    document = document_of_body(body, content_type)
    version, new = pushed(services.runtime, document, tenant, actor, services.read_your_writes)
    if not new:
        response.status_code = 200
    response.headers["Location"] = f"/v1/workflows/{quote(version.name)}/versions/{version.version}"
    return version


@router.post(
    "/check",
    operation_id="checkWorkflow",
    response_model=WorkflowCheckView,
    responses=problem_responses(400, 401, 413, 415, 422),
    openapi_extra=PUSHED_AS,
)
async def check(request: Request, services: ServicesDep, caller: CallerDep) -> WorkflowCheckView:
    """Check a workflow document as a push would (the same refusals, 422), recording nothing;
    how each step will run: the step definition that matches it, or the AI (the editor's
    labels)."""
    body = await request.body()
    content_type = request.headers.get("content-type")

    def check_body() -> WorkflowCheckView:
        document = document_of_body(body, content_type)
        return checked(services.runtime, document, caller.tenant, caller.name)

    return await run_in_threadpool(check_body)


@router.get(
    "",
    operation_id="listWorkflows",
    response_model=WorkflowPage,
    responses=problem_responses(401, 422),
)
def list_all(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> WorkflowPage:
    """The tenant's workflows, newest first, each with its current version; keyset paging."""
    after = after_cursor(cursor)
    services.read_your_writes()
    return workflow_page(services.runtime, caller.tenant, limit, after)


@router.get(
    "/{name}",
    operation_id="getWorkflow",
    response_model=WorkflowView,
    responses=problem_responses(401, 404, 422),
)
def get(name: WorkflowName, services: ServicesDep, caller: CallerDep) -> WorkflowView:
    """A registered workflow: its versions, which is current, who pushed each and when."""
    return workflow_view(services.runtime, caller.tenant, name, services.read_your_writes)


@router.get(
    "/{name}/versions/{version}",
    operation_id="getWorkflowVersion",
    response_model=WorkflowVersionView,
    responses=problem_responses(401, 404, 422),
)
def get_version(
    name: WorkflowName,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    services: ServicesDep,
    caller: CallerDep,
) -> WorkflowVersionView:
    """One version of a registered workflow, its document included."""
    return version_view(services.runtime, caller.tenant, name, version, services.read_your_writes)


@router.post(
    "/{name}/rollback",
    operation_id="rollbackWorkflow",
    response_model=WorkflowView,
    responses=problem_responses(400, 401, 404, 409, 413, 422),
)
def rollback(
    name: WorkflowName, body: RollbackWorkflow, services: ServicesDep, caller: CallerDep
) -> WorkflowView:
    """Make an earlier (or later) version current again: recorded as an event, nothing
    deleted; sessions created from then on run it (422 if it has no such version)."""
    return rolled_back(
        services.runtime,
        caller.tenant,
        name,
        body.to_version,
        caller.name,
        services.read_your_writes,
    )
