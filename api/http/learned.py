"""/v1/learned-actions: what the tenant's AI steps learned, to do again without the model (the
action cache), and forgetting one.

    GET /v1/learned-actions?all=&limit=
    GET /v1/learned-actions/{id}
    DELETE /v1/learned-actions/{id}

From the `learned_actions` view, one tenant's only: another tenant's action is not found
(404). Forgetting is an event on the log (`LearnedActions.Forgotten`), so the view forgets it
again when rebuilt; the next run of the step asks the model and learns it anew. The functions
before the routes are also what `stepline learned` runs on the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.http.errors import problem_responses
from api.http.services import CallerDep, ServicesDep
from domain.errors import LearnedActionNotFound
from engine.bootstrap import Runtime
from engine.loop.learned import forget
from projections import learned_actions as view

router = APIRouter(prefix="/v1/learned-actions", tags=["learned actions"])
CatchUp = Callable[[], None]
VIEWS = ("learned_actions",)


class LearnedCommand(BaseModel):
    executor: str
    name: str
    args: dict[str, Any] = Field(description="as recorded: secrets are {{secrets.NAME}}")
    expected: dict[str, Any] = Field(description="what a result must reproduce: ok, status...")


class LearnedActionVersion(BaseModel):
    id: UUID
    version: int
    workflow: str = Field(description="name@vN of a registered version, else steps:<hash>")
    step_text: str
    executor: str
    start: str = Field(description="where the step started: executor, base URL, last page")
    commands: list[LearnedCommand]
    turns: int = Field(description="the model's turns the learning run spent on the step")
    tokens: int = Field(description="the tokens it spent: what a hit saves")
    seconds: float = Field(description="how long the learning attempt took")
    hits: int
    misses: int
    source_session_id: UUID
    learned_at: datetime
    superseded: bool = Field(description="a later version replaced it (kept for the audit)")
    forgotten: bool


class LearnedActionPage(BaseModel):
    items: list[LearnedActionVersion]


class LearnedActionDetail(BaseModel):
    id: UUID
    versions: list[LearnedActionVersion] = Field(description="newest first")


def _version(row: view.LearnedAction) -> LearnedActionVersion:
    return LearnedActionVersion(
        id=row.action_id,
        version=row.version,
        workflow=row.workflow,
        step_text=row.step_text,
        executor=row.executor,
        start=row.start,
        commands=[LearnedCommand(**command) for command in row.commands],
        turns=row.turns,
        tokens=row.tokens,
        seconds=row.seconds,
        hits=row.hits,
        misses=row.misses,
        source_session_id=row.source_session_id,
        learned_at=row.learned_at,
        superseded=row.superseded,
        forgotten=row.forgotten,
    )


def learned_page(
    runtime: Runtime, tenant: str, *, with_old: bool, limit: int, catch_up: CatchUp
) -> LearnedActionPage:
    catch_up()
    with runtime.projector.pool.connection() as conn:
        rows = view.of_tenant(conn, tenant, limit=limit, with_old=with_old)
    return LearnedActionPage(items=[_version(row) for row in rows])


def learned_detail(
    runtime: Runtime, tenant: str, action_id: UUID, catch_up: CatchUp
) -> LearnedActionDetail:
    catch_up()
    with runtime.projector.pool.connection() as conn:
        rows = view.versions(conn, tenant, action_id)
    if not rows:
        raise LearnedActionNotFound(
            f"no learned action {action_id}", learned_action_id=str(action_id)
        )
    return LearnedActionDetail(id=action_id, versions=[_version(row) for row in rows])


def forget_learned(
    runtime: Runtime, tenant: str, action_id: UUID, actor: str, catch_up: CatchUp
) -> None:
    """Forget the tenant's action (LearnedActionNotFound unless it has a live version)."""
    detail = learned_detail(runtime, tenant, action_id, catch_up)
    if not any(not v.superseded and not v.forgotten for v in detail.versions):
        raise LearnedActionNotFound(
            f"learned action {action_id} is already forgotten", learned_action_id=str(action_id)
        )
    forget(runtime.app, tenant, str(action_id), actor)


@router.get(
    "",
    operation_id="listLearnedActions",
    response_model=LearnedActionPage,
    responses=problem_responses(401, 422),
)
def list_learned(
    services: ServicesDep,
    caller: CallerDep,
    all_versions: Annotated[
        bool,
        Query(alias="all", description="every version, superseded and forgotten ones too"),
    ] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> LearnedActionPage:
    """The caller's tenant's learned actions, newest first."""
    return learned_page(
        services.runtime,
        caller.tenant,
        with_old=all_versions,
        limit=limit,
        catch_up=services.read_your_writes,
    )


@router.get(
    "/{action_id}",
    operation_id="getLearnedAction",
    response_model=LearnedActionDetail,
    responses=problem_responses(401, 404, 422),
)
def get_learned(action_id: UUID, services: ServicesDep, caller: CallerDep) -> LearnedActionDetail:
    """One learned action, every version of it with its commands, newest first."""
    return learned_detail(services.runtime, caller.tenant, action_id, services.read_your_writes)


@router.delete(
    "/{action_id}",
    operation_id="forgetLearnedAction",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
def forget_learned_action(action_id: UUID, services: ServicesDep, caller: CallerDep) -> Response:
    """Forget a learned action: the next run of its step asks the model (and learns anew)."""
    forget_learned(
        services.runtime, caller.tenant, action_id, caller.name, services.read_your_writes
    )
    return Response(status_code=204)
