"""Replays and forks of a session, and the lineage that links them.

POST /v1/sessions/{id}/replay   do again what the session did, without the model
POST /v1/sessions/{id}/fork     a new session from one of its steps on
GET  /v1/sessions/{id}/lineage  the tree of replays and forks around a session
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api.http.errors import problem_responses
from api.http.schemas import (
    ForkCreated,
    ForkSession,
    Lineage,
    LineageNode,
    ReplaySession,
    SessionCreated,
)
from api.http.services import CallerDep, Services, ServicesDep
from api.http.sessions import admitted_request, created, owned_session
from domain.errors import SessionNotFound
from engine.loop.replay import fork_request, replay_request
from engine.store.app import SessionRequest
from engine.workflows.registry import RegisteredTemplates
from engine.workflows.templates import expanded
from projections import session_index
from projections.session_index import IndexedSession

router = APIRouter(prefix="/v1/sessions", tags=["replays and forks"])


def _start(
    services: Services, request: SessionRequest, tenant: str, actor: str, response: Response
) -> SessionCreated:
    request = admitted_request(services, request, tenant)  # it may have narrowed since the source
    return created(services, request, tenant, actor, response)


@router.post(
    "/{session_id}/replay",
    operation_id="replaySession",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(400, 401, 404, 410, 413, 422, 429),
)
def replay(
    session_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    response: Response,
    body: ReplaySession | None = None,
) -> SessionCreated:
    """Create a session with the source's steps and config that issues, step by step, the
    commands the source recorded, with no model call, comparing each result with the recorded
    one. A step the source did not complete runs live."""
    body = body or ReplaySession()
    owned_session(services, session_id, caller.tenant)
    source = services.runtime.app.get_session(session_id)
    request = replay_request(source, strict=body.strict, base_url=body.base_url)
    return _start(services, request, caller.tenant, caller.name, response)


@router.post(
    "/{session_id}/fork",
    operation_id="forkSession",
    status_code=201,
    response_model=ForkCreated,
    responses=problem_responses(400, 401, 404, 410, 413, 422, 429),
)
def fork(
    session_id: UUID,
    body: ForkSession,
    services: ServicesDep,
    caller: CallerDep,
    response: Response,
) -> ForkCreated:
    """Create a session whose steps before `from_step` are the source's, completed with their
    recorded results (not run again), and which runs from `from_step` on: the source's steps
    or `steps`. Saved variables and the last response come back from the source's log, its
    cookies from the source's kept state (`notice` says if they are gone)."""
    owned_session(services, session_id, caller.tenant)
    runtime = services.runtime
    source = runtime.app.get_session(session_id)
    steps = None
    if body.steps is not None:  # its templates the tenant's, given the source's input values
        templates = RegisteredTemplates(runtime.app, caller.tenant)
        steps = expanded(body.steps, templates, source.config.get("inputs") or {})
    request = fork_request(
        source, runtime.app.history(session_id), from_step=body.from_step, steps=steps
    )
    started = _start(services, request, caller.tenant, caller.name, response)
    notice = runtime.executor_states.gone_for_fork(session_id, body.from_step)
    return ForkCreated(**started.model_dump(), notice=notice)


@router.get(
    "/{session_id}/lineage",
    operation_id="getSessionLineage",
    response_model=Lineage,
    responses=problem_responses(401, 404, 422),
)
def lineage(session_id: UUID, services: ServicesDep, caller: CallerDep) -> Lineage:
    """The session's line: the first session it comes from, and every replay and fork of it
    and of those, as a tree."""
    owned_session(services, session_id, caller.tenant)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = session_index.lineage(conn, caller.tenant, session_id)
    if not rows:
        raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))
    return Lineage(session_id=session_id, root=_tree(rows))


def _tree(rows: list[IndexedSession]) -> LineageNode:
    nodes = {
        row.session_id: LineageNode(
            session_id=row.session_id,
            name=row.name,
            status=row.status,
            origin=row.origin,
            source_id=row.source_id,
            created_at=row.created_at,
            children=[],
        )
        for row in rows
    }
    roots: list[LineageNode] = []
    for node in nodes.values():  # oldest first, so children are in creation order
        parent = nodes.get(node.source_id) if node.source_id else None
        (parent.children if parent else roots).append(node)
    first: LineageNode = roots[0]
    return first
