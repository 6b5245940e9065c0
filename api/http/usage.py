"""What the model cost: a session's tokens by step, and a tenant's by day and model.

    GET /v1/sessions/{id}/usage
    GET /v1/usage?since=&until=

From the `ai_usage` view; cost is tokens times the prices in STEPLINE_AI_PRICES (per 1,000
tokens), null for a model without a price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import MAXYEAR, UTC, date, datetime
from typing import Any, TypeVar
from uuid import UUID

from fastapi import APIRouter

from api.http.errors import problem_responses
from api.http.schemas import DayUsage, IsoDatetime, IsoDay, SessionUsage, StepUsage, TenantUsage
from api.http.services import CallerDep, Services, ServicesDep
from api.http.sessions import owned_session
from engine.settings import ModelPrice
from projections import ai_usage

router = APIRouter(tags=["usage"])


Priced = TypeVar("Priced", StepUsage, DayUsage)


def cost_of(
    prices: Mapping[str, ModelPrice], model: str, prompt_tokens: int, completion_tokens: int
) -> float | None:
    """The tokens' cost at the model's price; None for a model without one."""
    price = prices.get(model)
    return None if price is None else price.cost(prompt_tokens, completion_tokens)


def _priced(services: Services, view: type[Priced], row: Any) -> Priced:
    """The row as `view`, with its cost at the model's price (None without one)."""
    prices = services.runtime.settings.ai_prices
    cost = cost_of(prices, row.model, row.prompt_tokens, row.completion_tokens)
    fields = {name: getattr(row, name) for name in view.model_fields if name != "cost"}
    return view(**fields, cost=cost)


def utc_day(moment: datetime | date | None) -> date | None:
    """The day, in UTC, the view counts `moment` in (a datetime without a zone is UTC)."""
    if not isinstance(moment, datetime):
        return moment
    if moment.tzinfo is None:
        return moment.date()
    try:
        return moment.astimezone(UTC).date()
    except OverflowError:  # its UTC day is before year 1 or after 9999: the calendar's edge
        return date.max if moment.year == MAXYEAR else date.min


def total_cost(costs: Sequence[float | None]) -> float | None:
    """The costs' sum; None if one of them is unknown (a model without a price)."""
    return None if any(c is None for c in costs) else round(sum(c or 0 for c in costs), 6)


@router.get(
    "/v1/sessions/{session_id}/usage",
    operation_id="getSessionUsage",
    response_model=SessionUsage,
    responses=problem_responses(401, 404, 422),
)
def session_usage(session_id: UUID, services: ServicesDep, caller: CallerDep) -> SessionUsage:
    """The session's model tokens and cost, by step (and day and model)."""
    owned_session(services, session_id, caller.tenant)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = ai_usage.of_session(conn, session_id)
    steps = [_priced(services, StepUsage, row) for row in rows]
    return SessionUsage(
        session_id=session_id,
        prompt_tokens=sum(s.prompt_tokens for s in steps),
        completion_tokens=sum(s.completion_tokens for s in steps),
        cost=total_cost([s.cost for s in steps]),
        steps=steps,
    )


@router.get(
    "/v1/usage",
    operation_id="getTenantUsage",
    response_model=TenantUsage,
    responses=problem_responses(401, 422),
)
def tenant_usage(
    services: ServicesDep,
    caller: CallerDep,
    since: IsoDatetime | IsoDay | None = None,
    until: IsoDatetime | IsoDay | None = None,
) -> TenantUsage:
    """The caller's tenant's model tokens and cost by day (UTC) and model, from the day of
    `since` to the day of `until`, both included."""
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = ai_usage.of_tenant(conn, caller.tenant, utc_day(since), utc_day(until))
    days = [_priced(services, DayUsage, row) for row in rows]
    return TenantUsage(
        tenant=caller.tenant,
        prompt_tokens=sum(d.prompt_tokens for d in days),
        completion_tokens=sum(d.completion_tokens for d in days),
        cost=total_cost([d.cost for d in days]),
        days=days,
    )
