"""/v1/analytics: how a tenant's workflows run — per workflow version, per step and per UTC day:
runs, completed, failed (by error code), retries, p50/p95 duration, tokens and cost; flaky
steps first.

    GET /v1/analytics/workflows?since=&until=&limit=&cursor=
    GET /v1/analytics/workflows/{name}?since=&until=

From the `workflow_analytics` view (see it for what a run, a step and a day are), tokens from
the `ai_usage` view, cost at STEPLINE_AI_PRICES as `/v1/usage` prices it. A run belongs to the
day it began; `since` and `until` are days (UTC), both included. The functions before the
routes are also what `stepline analytics` runs on the database.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.http.errors import ApiError, problem_responses
from api.http.schemas import NO_NUL, IsoDatetime, IsoDay
from api.http.services import CallerDep, ServicesDep
from api.http.usage import cost_of, total_cost, utc_day
from domain.errors import WorkflowNotFound
from domain.session import MAX_NAME
from engine.bootstrap import Runtime
from engine.settings import ModelPrice
from projections import workflow_analytics as view
from projections.workflow_analytics import Counts, Selection

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
CatchUp = Callable[[], None]
VIEWS = ("workflow_analytics", "ai_usage")
"""The views the analytics read: caught up before a read on the database."""


class Spend(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = Field(default=0.0, description="null if a model used has no price")


class Outcomes(Spend):
    runs: int = Field(description="steps run in a session (each with one or more attempts)")
    completed: int = Field(description="runs whose last attempt completed")
    failed: int = Field(description="runs whose last attempt failed")
    failed_by_code: dict[str, int] = Field(description="`failed` by the last error's code")
    retries: int = Field(description="attempts after a run's first")
    p50_ms: int | None = Field(description="median attempt duration (an attempt's own)")
    p95_ms: int | None = Field(description="95th percentile attempt duration")


class StepAnalytics(Outcomes):
    version: int = Field(description="the registered version; 0 for inline sessions")
    place: str = Field(description="the step's position as written; \"2.0\": loop 2's body step 0")
    text: str
    flaky: bool = Field(description="failed then passed on retry, or passed and failed in runs")


class WorkflowAnalytics(Outcomes):
    workflow: str
    version: int = Field(description="the registered version; 0 for inline sessions")
    sessions: int
    flaky_steps: int


class DayAnalytics(Spend):
    day: date
    runs: int
    completed: int
    failed: int
    success_rate: float | None = Field(description="percent of the runs ended that completed")
    p95_ms: int | None


class WorkflowAnalyticsPage(BaseModel):
    since: date | None
    until: date | None
    items: list[WorkflowAnalytics] = Field(description="with flaky steps first, then by name")
    next_cursor: str | None
    days: list[DayAnalytics] = Field(description="every workflow's, by the day runs began")
    failed_by_code: dict[str, int]


class WorkflowAnalyticsDetail(BaseModel):
    workflow: str
    since: date | None
    until: date | None
    versions: list[WorkflowAnalytics]
    steps: list[StepAnalytics] = Field(description="flaky steps first, then by version, place")
    days: list[DayAnalytics]
    failed_by_code: dict[str, int]


# ---- what the routes and `stepline analytics` (on the database) do ------------------------


def _spent(
    prices: Mapping[str, ModelPrice], found: Sequence[view.Tokens]
) -> dict[tuple[Any, ...], Spend]:
    """Tokens and their cost, by group (summed over models)."""
    by_group: dict[tuple[Any, ...], list[view.Tokens]] = {}
    for row in found:
        by_group.setdefault(row.group, []).append(row)
    return {
        group: Spend(
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            cost=total_cost(
                [cost_of(prices, r.model, r.prompt_tokens, r.completion_tokens) for r in rows]
            ),
        )
        for group, rows in by_group.items()
    }


def _outcomes(counts: Counts, failed: Mapping[str, int], spend: Spend) -> dict[str, Any]:
    return {
        "runs": counts.runs,
        "completed": counts.completed,
        "failed": counts.failed,
        "failed_by_code": dict(failed),
        "retries": counts.retries,
        "p50_ms": counts.p50_ms,
        "p95_ms": counts.p95_ms,
        **spend.model_dump(),
    }


def success_rate(completed: int, failed: int) -> float | None:
    ended = completed + failed
    return None if ended == 0 else round(100 * completed / ended, 2)


class Analysis:
    """The queries of one selection on one connection, grouped as asked."""

    def __init__(self, runtime: Runtime, conn: Any, selection: Selection) -> None:
        self.conn, self.selection = conn, selection
        self.prices = runtime.settings.ai_prices

    def grouped(self, by: str) -> list[tuple[Counts, dict[str, int], Spend]]:
        failed = view.failures(self.conn, self.selection, by)
        spent = _spent(self.prices, view.tokens(self.conn, self.selection, by))
        return [
            (counts, failed.get(counts.group, {}), spent.get(counts.group, Spend()))
            for counts in view.counts(self.conn, self.selection, by)
        ]

    def days(self) -> list[DayAnalytics]:
        return [
            DayAnalytics(
                day=counts.group[0],
                runs=counts.runs,
                completed=counts.completed,
                failed=counts.failed,
                success_rate=success_rate(counts.completed, counts.failed),
                p95_ms=counts.p95_ms,
                **spend.model_dump(),
            )
            for counts, _, spend in self.grouped("day")
        ]

    def failed_by_code(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for by_code in view.failures(self.conn, self.selection, "workflow").values():
            for code, count in by_code.items():
                total[code] = total.get(code, 0) + count
        return dict(sorted(total.items()))

    def steps(self) -> list[StepAnalytics]:
        steps = [
            StepAnalytics(
                version=counts.group[1],
                place=counts.group[2],
                text=counts.text,
                flaky=counts.flaky,
                **_outcomes(counts, failed, spend),
            )
            for counts, failed, spend in self.grouped("step")
        ]
        return sorted(steps, key=lambda s: (not s.flaky, s.version, _place_order(s.place)))

    def workflows(self) -> list[WorkflowAnalytics]:
        flaky: dict[tuple[Any, ...], int] = {}
        for counts in view.counts(self.conn, self.selection, "step"):
            group = counts.group[:2]
            flaky[group] = flaky.get(group, 0) + counts.flaky
        found = [
            WorkflowAnalytics(
                workflow=counts.group[0],
                version=counts.group[1],
                sessions=counts.sessions,
                flaky_steps=flaky.get(counts.group, 0),
                **_outcomes(counts, failed, spend),
            )
            for counts, failed, spend in self.grouped("workflow")
        ]
        return sorted(found, key=lambda w: (w.flaky_steps == 0, w.workflow, w.version))


def _place_order(place: str) -> tuple[int, ...]:
    return tuple(int(part) for part in place.split("."))


def _offset_of(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("offset:"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError.of("VALIDATION_FAILED", "the cursor is not one this API gave out") from None


def _cursor_of(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def workflows_page(
    runtime: Runtime, selection: Selection, limit: int, cursor: str | None, catch_up: CatchUp
) -> WorkflowAnalyticsPage:
    """One page of the tenant's workflow versions, with every workflow's days and failures.
    The page is cut from the whole ordered list (its order comes from aggregates)."""
    offset = _offset_of(cursor)
    catch_up()
    with runtime.projector.pool.connection() as conn:
        analysis = Analysis(runtime, conn, selection)
        workflows = analysis.workflows()
        days, failed = analysis.days(), analysis.failed_by_code()
    more = len(workflows) > offset + limit
    return WorkflowAnalyticsPage(
        since=selection.since,
        until=selection.until,
        items=workflows[offset : offset + limit],
        next_cursor=_cursor_of(offset + limit) if more else None,
        days=days,
        failed_by_code=failed,
    )


def workflow_detail(
    runtime: Runtime, selection: Selection, catch_up: CatchUp
) -> WorkflowAnalyticsDetail:
    """One workflow's versions, steps (flaky first) and days; WorkflowNotFound if the tenant
    has no session of it."""
    assert selection.workflow is not None
    catch_up()
    with runtime.projector.pool.connection() as conn:
        if not view.has_workflow(conn, selection.tenant, selection.workflow):
            raise WorkflowNotFound(
                f"the tenant has no session of a workflow named {selection.workflow!r}",
                workflow=selection.workflow,
            )
        analysis = Analysis(runtime, conn, selection)
        return WorkflowAnalyticsDetail(
            workflow=selection.workflow,
            since=selection.since,
            until=selection.until,
            versions=analysis.workflows(),
            steps=analysis.steps(),
            days=analysis.days(),
            failed_by_code=analysis.failed_by_code(),
        )


# ---- routes ---------------------------------------------------------------------------------

Since = Annotated[
    IsoDatetime | IsoDay | None, Query(description="the first day (UTC) of runs counted")
]
Until = Annotated[
    IsoDatetime | IsoDay | None, Query(description="the last day (UTC) of runs counted")
]


@router.get(
    "/workflows",
    operation_id="listWorkflowAnalytics",
    response_model=WorkflowAnalyticsPage,
    responses=problem_responses(401, 422),
)
def list_workflow_analytics(
    services: ServicesDep,
    caller: CallerDep,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> WorkflowAnalyticsPage:
    """The caller's tenant's workflow versions: runs, failures, retries, durations, cost."""
    selection = Selection(caller.tenant, None, utc_day(since), utc_day(until))
    return workflows_page(services.runtime, selection, limit, cursor, services.read_your_writes)


@router.get(
    "/workflows/{name}",
    operation_id="getWorkflowAnalytics",
    response_model=WorkflowAnalyticsDetail,
    responses=problem_responses(401, 404, 422),
)
def get_workflow_analytics(
    services: ServicesDep,
    caller: CallerDep,
    name: Annotated[str, Path(min_length=1, max_length=MAX_NAME, pattern=NO_NUL)],
    since: Since = None,
    until: Until = None,
) -> WorkflowAnalyticsDetail:
    """One workflow's analytics per version and per step, flaky steps first, and by day."""
    selection = Selection(caller.tenant, name, utc_day(since), utc_day(until))
    return workflow_detail(services.runtime, selection, services.read_your_writes)
