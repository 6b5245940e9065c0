"""/v1/batches: many sessions created in one request, followed and cancelled together."""

from __future__ import annotations

from collections import Counter
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api.http.errors import problem_responses
from api.http.reads import encode_cursor
from api.http.schemas import (
    BatchCancelled,
    BatchCreated,
    BatchPage,
    BatchSession,
    BatchSummary,
    BatchView,
    CreateBatch,
    Reason,
)
from api.http.services import CallerDep, Services, ServicesDep
from api.http.sessions import admit, after_cursor, session_request
from domain.batch import Batch
from domain.errors import BatchNotFound
from domain.session import ENDED, SessionStatus, values
from projections.batch_index import IndexedBatch, list_batches
from projections.session_index import SessionIndexView

router = APIRouter(prefix="/v1/batches", tags=["batches"])
FINISHED = set(values(ENDED))


def owned_batch(services: Services, batch_id: UUID, tenant: str) -> Batch:
    batch = services.runtime.app.get_batch(batch_id)
    if batch.tenant != tenant:
        raise BatchNotFound(f"no batch {batch_id}", batch_id=str(batch_id))
    return batch


@router.post(
    "",
    operation_id="createBatch",
    status_code=201,
    response_model=BatchCreated,
    responses=problem_responses(400, 401, 404, 413, 422, 429),
)
def create_batch(
    body: CreateBatch, services: ServicesDep, caller: CallerDep, response: Response
) -> BatchCreated:
    """Create every session of the batch (all or none); workers with free slots run them.
    A `webhook` given for the batch is each session's that names none of its own."""
    requests = [
        session_request(services, session, caller.tenant, body.webhook) for session in body.sessions
    ]
    admit(services, caller.tenant, len(requests))
    batch_id, session_ids = services.runtime.app.create_batch(
        requests, tenant=caller.tenant, actor=caller.name
    )
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    batch = services.runtime.app.get_batch(batch_id)
    return BatchCreated(batch_id=batch_id, session_ids=session_ids, created_at=batch.created_on)


@router.get(
    "", operation_id="listBatches", response_model=BatchPage, responses=problem_responses(401, 422)
)
def list_all(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> BatchPage:
    """The tenant's batches, newest first, each with its progress; keyset paging."""
    after = after_cursor(cursor)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = list_batches(conn, caller.tenant, limit=limit + 1, after=after)
        page = rows[:limit]
        members = [i for row in page for i in row.session_ids]
        status = {
            row.session_id: row.status
            for row in SessionIndexView.rows.load_for_sessions(conn, members)
        }
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].batch_id) if len(rows) > limit else None
    )
    return BatchPage(items=[_summary(row, status) for row in page], next_cursor=next_cursor)


def _summary(row: IndexedBatch, status: dict[UUID, str]) -> BatchSummary:
    finished = sum(1 for i in row.session_ids if status.get(i) in FINISHED)
    total = len(row.session_ids)
    return BatchSummary(
        batch_id=row.batch_id,
        created_at=row.created_at,
        created_by=row.created_by,
        cancelled=row.cancelled,
        total=total,
        finished=finished,
        percent=round(100 * finished / total, 2),
    )


@router.get(
    "/{batch_id}",
    operation_id="getBatch",
    response_model=BatchView,
    responses=problem_responses(401, 404, 422),
)
def get_batch(batch_id: UUID, services: ServicesDep, caller: CallerDep) -> BatchView:
    """Each session's status and the batch's overall progress."""
    batch = owned_batch(services, batch_id, caller.tenant)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = SessionIndexView.rows.load_for_sessions(conn, batch.session_ids)
    status = {row.session_id: row.status for row in rows}
    not_indexed = SessionStatus.PENDING.value
    sessions = [
        BatchSession.model_validate({"session_id": i, "status": status.get(i, not_indexed)})
        for i in batch.session_ids
    ]
    counts = Counter(s.status for s in sessions)
    finished = sum(n for name, n in counts.items() if name in FINISHED)
    return BatchView(
        batch_id=batch_id,
        cancelled=batch.cancelled,
        total=len(sessions),
        finished=finished,
        percent=round(100 * finished / len(sessions), 2),
        by_status={str(name): n for name, n in counts.items()},
        sessions=sessions,
    )


@router.post(
    "/{batch_id}/cancel",
    operation_id="cancelBatch",
    response_model=BatchCancelled,
    responses=problem_responses(400, 401, 404, 413, 422),
)
def cancel_batch(
    batch_id: UUID, services: ServicesDep, caller: CallerDep, body: Reason | None = None
) -> BatchCancelled:
    """Cancel every session of the batch that has not ended."""
    owned_batch(services, batch_id, caller.tenant)
    cancelled = services.runtime.app.cancel_batch(
        batch_id, reason=body.reason if body else "", actor=caller.name
    )
    return BatchCancelled(batch_id=batch_id, cancelled_sessions=cancelled)
