"""/v1/schedules: workflows run at given times, each firing a session of its own.

The firings themselves are the workers' (engine.scheduler); here a tenant creates, reads,
changes, pauses and deletes its schedules. A schedule's sessions carry the labels
`schedule_id` and `scheduled_for`: GET /v1/sessions?label=schedule_id=<id> lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api.http.errors import problem_responses
from api.http.reads import encode_cursor
from api.http.schemas import CreateSchedule, SchedulePage, ScheduleView, UpdateSchedule
from api.http.services import CallerDep, ServicesDep
from api.http.sessions import after_cursor
from domain.errors import ScheduleNotFound
from domain.schedule import Schedule, Timing
from engine.bootstrap import Runtime
from engine.scheduler import NewSchedule, check_changed_workflow, create_schedule
from projections import schedule_index
from projections.schedule_index import IndexedSchedule
from projections.view import Recorded

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


# ---- what the routes and `stepline schedules` (on the database) do -------------------------


def owned_schedule(runtime: Runtime, schedule_id: UUID, tenant: str) -> Schedule:
    """The schedule, if it is this tenant's; another tenant's is reported as not found."""
    schedule = runtime.app.get_schedule(schedule_id)
    if schedule.tenant != tenant:
        raise ScheduleNotFound(f"no schedule {schedule_id}", schedule_id=str(schedule_id))
    return schedule


def new_schedule(runtime: Runtime, body: CreateSchedule, tenant: str, actor: str) -> Schedule:
    asked = NewSchedule(
        name=body.name,
        workflow=body.workflow.model_dump(mode="json"),
        timing=Timing.of(body.cron, body.every, body.timezone),
        catch_up=body.catch_up,
        paused=body.paused,
        webhook=None if body.webhook is None else body.webhook.model_dump(),
    )
    return create_schedule(runtime.loop, asked, tenant=tenant, actor=actor, now=_now())


def change_schedule(
    runtime: Runtime, schedule_id: UUID, body: UpdateSchedule, tenant: str, actor: str
) -> None:
    schedule = owned_schedule(runtime, schedule_id, tenant)
    changes = _changes(body, schedule)
    if "workflow" in changes or "webhook" in changes:
        workflow = changes.get("workflow", schedule.workflow)
        webhook = changes.get("webhook", schedule.webhook)
        check_changed_workflow(runtime.loop, schedule, workflow, webhook)
    now = _now()

    def decide(current: Schedule) -> None:
        current.change(changes, now, actor)
        if body.paused is True:
            current.pause(actor)
        elif body.paused is False:
            current.resume(now, actor)

    runtime.app.change_schedule(schedule_id, decide)


def delete_schedule(runtime: Runtime, schedule_id: UUID, tenant: str, actor: str) -> None:
    owned_schedule(runtime, schedule_id, tenant)
    runtime.app.change_schedule(schedule_id, lambda s: s.delete(actor))


def schedule_view(row: IndexedSchedule) -> ScheduleView:
    return ScheduleView.model_validate(row, from_attributes=True)


def indexed(runtime: Runtime, schedule_id: UUID, catch_up: Callable[[], None]) -> ScheduleView:
    """The schedule as the index has it once `catch_up` returns; folded from the log if the
    index is behind even then."""
    catch_up()
    with runtime.projector.pool.connection() as conn:
        row = schedule_index.find(conn, schedule_id)
    if row is None:
        rows: dict[UUID, IndexedSchedule] = {}
        events = runtime.app.events.get(schedule_id)
        schedule_index.fold(rows, [Recorded(0, event) for event in events])  # type: ignore[arg-type]
        row = rows[schedule_id]
    return schedule_view(row)


# ---- routes -------------------------------------------------------------------------------


@router.post(
    "",
    operation_id="createSchedule",
    status_code=201,
    response_model=ScheduleView,
    responses=problem_responses(400, 401, 413, 422, 429),
)
def create(
    body: CreateSchedule, services: ServicesDep, caller: CallerDep, response: Response
) -> ScheduleView:
    """Create a schedule; its first firing is the first of its times after now."""
    schedule = new_schedule(services.runtime, body, caller.tenant, caller.name)
    response.headers["Location"] = f"/v1/schedules/{schedule.id}"
    return indexed(services.runtime, schedule.id, services.read_your_writes)


@router.get(
    "",
    operation_id="listSchedules",
    response_model=SchedulePage,
    responses=problem_responses(401, 422),
)
def list_all(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> SchedulePage:
    """The tenant's schedules, newest first; keyset paging."""
    after = after_cursor(cursor)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = schedule_index.list_schedules(conn, caller.tenant, limit=limit + 1, after=after)
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].schedule_id) if len(rows) > limit else None
    )
    return SchedulePage(items=[schedule_view(row) for row in page], next_cursor=next_cursor)


@router.get(
    "/{schedule_id}",
    operation_id="getSchedule",
    response_model=ScheduleView,
    responses=problem_responses(401, 404, 422),
)
def get(schedule_id: UUID, services: ServicesDep, caller: CallerDep) -> ScheduleView:
    """A schedule: its timing, its workflow, when it fires next and what it last did."""
    owned_schedule(services.runtime, schedule_id, caller.tenant)
    return indexed(services.runtime, schedule_id, services.read_your_writes)


@router.patch(
    "/{schedule_id}",
    operation_id="updateSchedule",
    response_model=ScheduleView,
    responses=problem_responses(400, 401, 404, 409, 413, 422),
)
def update(
    schedule_id: UUID, body: UpdateSchedule, services: ServicesDep, caller: CallerDep
) -> ScheduleView:
    """Change a schedule, pause or resume it."""
    change_schedule(services.runtime, schedule_id, body, caller.tenant, caller.name)
    return indexed(services.runtime, schedule_id, services.read_your_writes)


@router.delete(
    "/{schedule_id}",
    operation_id="deleteSchedule",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 404, 409, 422),
)
def delete(schedule_id: UUID, services: ServicesDep, caller: CallerDep) -> Response:
    """Delete a schedule: it fires no more (the sessions it created stay)."""
    delete_schedule(services.runtime, schedule_id, caller.tenant, caller.name)
    return Response(status_code=204)


def _changes(body: UpdateSchedule, schedule: Schedule) -> dict[str, Any]:
    """The schedule's fields the body changes, as the schedule records them."""
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.workflow is not None:
        changes["workflow"] = body.workflow.model_dump(mode="json")
    if body.catch_up is not None:
        changes["catch_up"] = body.catch_up
    if "webhook" in given:
        changes["webhook"] = None if body.webhook is None else body.webhook.model_dump()
    if {"cron", "every", "timezone"} & given:
        changes["timing"] = _timing(body, schedule.timing).to_dict()
    return changes


def _timing(body: UpdateSchedule, current: Timing) -> Timing:
    given = body.model_fields_set
    cron = body.cron if "cron" in given else None if "every" in given else current.cron
    every = body.every if "every" in given else None if "cron" in given else current.every
    return Timing.of(cron, every, body.timezone or current.timezone)


def _now() -> datetime:
    return datetime.now(UTC)
