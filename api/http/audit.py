"""/v1/audit: who changed what, when — the tenant's slice of the audit log; and the head of
the hash chain over the whole log."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query

from api.http.errors import problem_responses
from api.http.schemas import (
    NO_NUL,
    AuditEntryView,
    AuditHead,
    AuditPage,
    AuditVerification,
    IsoDatetime,
)
from api.http.services import CallerDep, ServicesDep
from engine.audit.chain import read_head
from engine.audit.chain_verify import VerificationRecord, last_verification
from projections.audit_log import AuditFilter, entries

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "",
    operation_id="listAuditEntries",
    response_model=AuditPage,
    responses=problem_responses(401, 422),
)
def audit(
    services: ServicesDep,
    caller: CallerDep,
    session_id: UUID | None = None,
    actor: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    event_type: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    since: IsoDatetime | None = None,
    until: IsoDatetime | None = None,
    per_step: Annotated[
        bool,
        Query(
            description="false leaves out the events of steps (started, turns, commands, "
            "checks, their end), so the session-level changes stand out"
        ),
    ] = True,
    order: Annotated[Literal["oldest", "newest"], Query(description="which come first")] = (
        "oldest"
    ),
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="only entries before this position")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> AuditPage:
    """Every event of the tenant's sessions, paged by log position: oldest first (the next
    page `after` the last), or newest first (the next page `before` the last)."""
    where = AuditFilter(caller.tenant, session_id, actor, event_type, since, until, per_step)
    newest_first = order == "newest"
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = entries(conn, where, limit + 1, after, newest_first=newest_first, before=before)
    page = rows[:limit]
    last = page[-1].position if len(rows) > limit else None
    return AuditPage(
        items=[AuditEntryView.model_validate(row, from_attributes=True) for row in page],
        next_after=None if newest_first else last,
        next_before=last if newest_first else None,
    )


@router.get(
    "/head",
    operation_id="getAuditHead",
    response_model=AuditHead,
    responses=problem_responses(401, 422),
)
def head(services: ServicesDep, caller: CallerDep) -> AuditHead:
    """The head of the hash chain over the whole log (every tenant's events): its last
    position and hash, and what the last verification found. Any tenant's key may read it: it
    tells only how many events the log holds, which the positions of the tenant's own audit
    entries tell already, and a tenant that keeps heads can later ask for proof that the log
    was not rewritten since."""
    del caller  # only authenticated callers
    with services.runtime.projector.pool.connection() as conn:
        current = read_head(conn, services.runtime.app.events_table)
        verified = last_verification(conn)
    return AuditHead(
        position=current.position,
        hash=current.hash.hex() if current.hash else None,
        time=current.time,
        last_verification=None if verified is None else _verification(verified),
    )


def _verification(record: VerificationRecord) -> AuditVerification:
    return AuditVerification(
        verified_at=record.verified_at,
        actor=record.actor,
        from_position=record.from_position,
        to_position=record.to_position,
        head_hash=record.head_hash.hex() if record.head_hash else None,
        events=record.events,
        clean=record.clean,
        first_break=record.first_break,
    )
