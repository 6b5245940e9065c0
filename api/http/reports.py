"""GET /v1/sessions/{id}/report: one session as a self-contained HTML file (made by
`api.http.session_report`), to its own tenant only."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.http.errors import problem_responses
from api.http.schemas import StepView
from api.http.services import CallerDep, Services, ServicesDep
from api.http.session_report import CONTENT_SECURITY_POLICY, report, report_filename
from api.http.sessions import session_state
from projections import step_history

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

REPORTS_AT_ONCE = CapacityLimiter(2)
"""Reports made at the same time, per process; the others wait their turn. A report holds
its screenshots in memory (tens of MB for a long browser session), so many asked at once
would hold that many times as much."""

REPORT_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def session_report(services: Services, session_id: UUID, tenant: str) -> str:
    """The report, if the session is `tenant`'s (404 as `GET /v1/sessions/{id}` if not); an
    erased session's is its tombstone."""
    session = session_state(services, session_id, tenant, None)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = step_history.steps_of(conn, session_id)
    steps = [StepView.model_validate(row, from_attributes=True) for row in rows]
    return report(services.runtime, session, steps)


@router.get(
    "/{session_id}/report",
    operation_id="getSessionReport",
    response_class=HTMLResponse,
    responses={
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "the report: one HTML file with no script, its screenshots inlined",
            "headers": {
                "Content-Security-Policy": {
                    "schema": {"type": "string"},
                    "description": "nothing loads or runs: images from data: URIs, inline styles",
                }
            },
        },
        **problem_responses(401, 404, 422),
    },
)
async def get_report(
    session_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    download: Annotated[
        bool, Query(description='true: served as an attachment, "stepline-<id8>.html"')
    ] = False,
) -> HTMLResponse:
    """The session as one self-contained HTML file to attach to a ticket or a CI run: its
    header, each step's outcome, duration and screenshots (inlined), and its audit trail."""
    html = await to_thread.run_sync(
        session_report, services, session_id, caller.tenant, limiter=REPORTS_AT_ONCE
    )
    headers = dict(REPORT_HEADERS)
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{report_filename(session_id)}"'
    return HTMLResponse(html, headers=headers)
