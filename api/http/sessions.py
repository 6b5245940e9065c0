"""/v1/sessions: create, list, read, command and replay workflow sessions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import BaseModel, JsonValue

from api.http.auth import Caller
from api.http.errors import ApiError, problem_responses
from api.http.event_views import event_view
from api.http.reads import BadCursor, decode_cursor, progress_beside_log, session_page
from api.http.schemas import (
    CommandAccepted,
    CreateSession,
    Decision,
    EraseSession,
    EventPage,
    IsoDatetime,
    Origin,
    ProgressView,
    Reason,
    SessionCreated,
    SessionErasedView,
    SessionPage,
    SessionStatusName,
    SessionView,
    SignalAccepted,
    StepView,
)
from api.http.services import (
    AuthorizedDep,
    CallerDep,
    Services,
    ServicesDep,
    caller_in_thread,
    checked_caller,
    request_taken,
)
from domain.errors import SessionNotFound
from domain.session import SessionStatus, WorkflowSession
from engine.loop.waits import SIGNAL_NAME, check_signal
from engine.settings import Settings
from engine.store.app import SessionRequest
from engine.tracing import trace_id_of
from engine.workflows.admission import admitted
from engine.workflows.file import WebhookSpec
from engine.workflows.inputs import resolved as input_values
from engine.workflows.inputs import with_inputs
from engine.workflows.registry import RegisteredRun, RegisteredTemplates, registered_request
from engine.workflows.templates import expanded
from projections import session_index, session_progress, step_history
from projections.session_index import MIN_ID_PREFIX, SessionFilter, id_range
from projections.session_progress import SessionProgressView
from projections.view import Recorded

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
JSON = "application/json"


# ---- helpers ----------------------------------------------------------------------------


def owned_session(services: Services, session_id: UUID, tenant: str) -> None:
    """Go on only if the session is this tenant's; another tenant's is reported as not found.
    The session index answers; a session it has not caught up with yet, the log."""
    with services.runtime.projector.pool.connection() as conn:
        owner = session_index.tenant_of(conn, session_id)
    if owner is None:
        owner = services.runtime.app.get_session(session_id).tenant  # 404 if there is none
    if owner != tenant:
        raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))


def current_progress(
    services: Services, session_id: UUID, tenant: str
) -> session_progress.Progress:
    """The session's progress with at least every event the log had of it when asked, if it
    is `tenant`'s (another tenant's is not found). One statement reads the row, the log's
    last event of the session and the events the row has not applied yet, which are folded
    in here by the view's own fold: a read never waits for the views to catch up, unless
    they are further behind than `GAP_LIMIT` events of the session."""
    runtime = services.runtime
    with runtime.projector.pool.connection() as conn:
        read = progress_beside_log(conn, session_id, runtime.app.events_table)
    row = read.current(runtime.app.mapper)
    known = row or read.row
    # Without a row, the log says whose session it is (SessionNotFound if no one's).
    owner = known.tenant if known is not None else runtime.app.get_session(session_id).tenant
    if owner != tenant:
        raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))
    if row is not None and row.version >= (read.last_version or 0):
        return row
    services.read_your_writes(read.last_position, views=[SessionProgressView.name])
    with runtime.projector.pool.connection() as conn:
        row = session_progress.find(conn, session_id)
    return row if row is not None else folded_progress(services, session_id, None)


def folded_progress(
    services: Services, session_id: UUID, version: int | None
) -> session_progress.Progress:
    """The session's progress folded from the log, as of `version` if given."""
    app = services.runtime.app
    events = [
        e for e in app.history(session_id) if version is None or e.originator_version <= version
    ]
    rows: dict[UUID, session_progress.Progress] = {}
    session_progress.fold(rows, [Recorded(0, e) for e in events])
    return rows[session_id]


def rendered(
    answer: BaseModel, status_code: int = 200, headers: Response | None = None
) -> Response:
    """`answer` as FastAPI would render it for a route's response model — the model's JSON by
    alias, as application/json — then the headers set on `headers` (the route's own), as
    FastAPI adds those of the `Response` it gives a route."""
    response = Response(answer.model_dump_json(by_alias=True), status_code, media_type=JSON)
    if headers is not None:
        response.headers.raw.extend(
            (name, value) for name, value in headers.headers.raw if name != b"content-length"
        )
    return response


def after_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    """Where a page given by `cursor` starts; a cursor not given out here is refused."""
    try:
        return decode_cursor(cursor) if cursor else None
    except BadCursor as error:
        raise ApiError.of(
            "VALIDATION_FAILED",
            str(error),
            suggested_action="Pass the next_cursor of a page this list gave, or no cursor",
        ) from None


def _estimate_ms(services: Services, steps: int) -> int | None:
    average = services.step_average_ms()
    return None if average is None else int(average * steps)


def session_request(
    services: Services, body: CreateSession, tenant: str, webhook: WebhookSpec | None = None
) -> SessionRequest:
    """The session asked for, within the tenant's policy (422 naming the field if not);
    `webhook` is the batch's, for a session that names none. A registered workflow's is made
    from the version named (404 WORKFLOW_NOT_FOUND if there is none). Templates (`use:`) are
    the tenant's registered workflows, never files (422 TEMPLATE_NOT_FOUND if not there)."""
    app = services.runtime.app
    if body.reference is not None:
        run = RegisteredRun(body.reference, body.with_, body.labels, body.webhook, webhook)
        request = registered_request(app, tenant, run)
    else:
        values = input_values(body.inputs, body.with_)
        inline = SessionRequest(
            name=body.name or "",  # given: CreateSession requires it of an inline workflow
            steps=expanded(body.steps or [], RegisteredTemplates(app, tenant), values),
            config=body.given_config(webhook),
            labels=body.labels,
        )
        request = with_inputs(inline, body.inputs, body.with_)
    return admitted_request(services, request, tenant)


def admitted_request(services: Services, request: SessionRequest, tenant: str) -> SessionRequest:
    """The request as its tenant may create it: within its policy, its definitions module
    loaded and every secret it uses stored (422 with the reason if not)."""
    return admitted(services.runtime.loop, request, tenant)


def admit(services: Services, tenant: str, count: int) -> None:
    """Refuse new sessions beyond the server's capacity or the tenant's rate, in one statement.
    The count does not wait for the projector: it adds, from the log, the creations the
    session index has not applied yet."""
    services.limiter.take(tenant, count)


# ---- routes -----------------------------------------------------------------------------


@router.post(
    "",
    operation_id="createSession",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(400, 401, 404, 413, 422, 429),
)
async def create_session(body: CreateSession, call: AuthorizedDep) -> Response:
    """Create a session and start running it."""
    return await call.services.in_thread(new_session, call.services, body, call.caller)


def new_session(services: Services, body: CreateSession, caller: Caller) -> Response:
    """The session asked for, admitted and saved, its answer rendered. Run in a request thread
    by its route, a coroutine (see `Services.in_thread`): FastAPI would make a plain def
    route's answer take a second trip to a worker thread, to be checked against the response
    model there; and the answer is rendered here, not by FastAPI on the event loop."""
    request = session_request(services, body, caller.tenant)  # refused before it costs a token
    headers = Response()  # `created` sets Location on it
    answer = created(services, request, caller.tenant, caller.name, headers)
    return rendered(answer, 201, headers)


def created_if_plain(
    services: Services,
    body: bytes,
    address: str,
    authorization: str | None,
    x_api_key: str | None,
) -> Response | None:
    """`create_session` for `body` as FastAPI would take it, in a request thread (see
    `api.http.hot_routes`), in FastAPI's order: the body decoded, the key checked, the body
    validated, a request spent. None, having done nothing FastAPI will do again (a valid key
    is checked with no trace): a body that is not JSON, or not valid, left to FastAPI to judge."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # JSON's errors, or too deep
        return None
    caller = checked_caller(services, address, authorization, x_api_key)
    try:
        body_model = CreateSession.model_validate(data)
    except (ValueError, RecursionError):  # a ValidationError, or too deep
        return None
    request_taken(services, caller)
    return new_session(services, body_model, caller)


def created(
    services: Services, request: SessionRequest, tenant: str, actor: str, response: Response
) -> SessionCreated:
    """Save the session if admitted (room, and a token of its tenant's rate) and, with a free
    slot, start driving it here."""
    session = saved(services, request, tenant, actor)
    response.headers["Location"] = f"/v1/sessions/{session.id}"
    services.runtime.tracing.link_to_session(session.id)
    return SessionCreated(
        session_id=session.id,
        stream_url=f"/v1/sessions/{session.id}/stream",
        status=SessionStatus.PENDING.value,
        version=session.version,
        estimated_duration_ms=_estimate_ms(services, len(request.steps) - session.current_step),
        created_at=session.created_on,
    )


def saved(services: Services, request: SessionRequest, tenant: str, actor: str) -> WorkflowSession:
    """The session, saved only if admitted. Announced to the workers, admitted in the
    statement that saves it: one round trip and one commit. Or, where this process drives
    sessions itself, admitted first: its worker takes the lease (a slot, maybe the claim lock)
    before it saves, which a refused creation must not cost."""
    if services.worker is not None:
        admit(services, tenant, 1)
        session, _ = services.worker.create(request, tenant=tenant, actor=actor)
        return session
    app = services.runtime.app
    return services.limiter.created(
        tenant,
        1,
        lambda admission: app.create(
            request, tenant=tenant, actor=actor, announced=True, admission=admission
        ),
    )


@router.get(
    "",
    operation_id="listSessions",
    response_model=SessionPage,
    responses=problem_responses(401, 422),
)
def list_all(
    services: ServicesDep,
    caller: CallerDep,
    status: SessionStatusName | None = None,
    label: Annotated[
        list[str] | None, Query(description="key=value; repeat to require several")
    ] = None,
    created_after: IsoDatetime | None = None,
    created_before: IsoDatetime | None = None,
    origin: Annotated[Origin | None, Query(description="new, replay or fork")] = None,
    source_id: Annotated[
        UUID | None, Query(description="replays and forks of this session")
    ] = None,
    id_prefix: Annotated[
        str | None,
        Query(
            max_length=36,
            description=f"sessions whose id starts with this (at least {MIN_ID_PREFIX} "
            "characters, as printed: `1f0e3c2a`)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> SessionPage:
    """List the tenant's sessions, newest first, with keyset paging."""
    if id_prefix is not None:
        try:
            id_range(id_prefix)
        except ValueError as error:
            raise ApiError.of("VALIDATION_FAILED", f"id_prefix: {error}") from None
    labels = {}
    for item in label or []:
        key, separator, value = item.partition("=")
        if not separator or not key or "\x00" in item:
            raise ApiError.of(
                "VALIDATION_FAILED",
                f"label filter {item!r} is not key=value",
                suggested_action="Write each label filter as key=value (no NUL): label=team=web",
            )
        labels[key] = value
    where = SessionFilter(
        caller.tenant, status, labels, created_after, created_before, origin, source_id, id_prefix
    )
    after = after_cursor(cursor)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        return session_page(conn, where, limit, after)


@router.get(
    "/{session_id}",
    operation_id="getSession",
    response_model=SessionView,
    responses=problem_responses(401, 404, 422),
)
async def get_session(
    session_id: UUID,
    call: AuthorizedDep,
    version: Annotated[int | None, Query(ge=1, description="the state as of this version")] = None,
) -> Response:
    """A session's state, from the progress view or rebuilt from the log as of a version."""
    services = call.services
    return await services.in_thread(
        rendered_state, services, session_id, call.caller.tenant, version
    )


def rendered_state(
    services: Services, session_id: UUID, tenant: str, version: int | None
) -> Response:
    """`session_state` rendered in a request thread, for the reason `new_session` gives."""
    return rendered(session_state(services, session_id, tenant, version))


def state_of(
    services: Services,
    session_id: UUID,
    address: str,
    authorization: str | None,
    x_api_key: str | None,
) -> Response:
    """`get_session` without a version, in a request thread (see `api.http.hot_routes`)."""
    caller = caller_in_thread(services, address, authorization, x_api_key)
    return rendered_state(services, session_id, caller.tenant, None)


def session_state(
    services: Services, session_id: UUID, tenant: str, version: int | None
) -> SessionView:
    """The session's state, if it is `tenant`'s."""
    if version is None:
        row = current_progress(services, session_id, tenant)
    else:
        owned_session(services, session_id, tenant)
        services.runtime.app.get_session(session_id, version=version)  # 404 past the latest
        row = folded_progress(services, session_id, version)
    view = SessionView.model_validate(row, from_attributes=True)
    return with_trace(view, services.runtime.settings)


def with_trace(view: SessionView, settings: Settings) -> SessionView:
    """The session's trace, when sessions are traced: its id, derived from the session's (see
    `engine.tracing`), and where it is viewed."""
    if settings.otel_endpoint is None:
        return view
    trace_id = trace_id_of(view.session_id)
    template = settings.otel_trace_url
    url = template.replace("{trace_id}", trace_id) if template is not None else None
    return view.model_copy(update={"trace_id": trace_id, "trace_url": url})


@router.get(
    "/{session_id}/progress",
    operation_id="getSessionProgress",
    response_model=ProgressView,
    responses=problem_responses(401, 404, 422),
)
def get_progress(session_id: UUID, services: ServicesDep, caller: CallerDep) -> ProgressView:
    """Steps done, percent and estimated time left."""
    return ProgressView.model_validate(
        current_progress(services, session_id, caller.tenant), from_attributes=True
    )


@router.get(
    "/{session_id}/steps",
    operation_id="getSessionSteps",
    response_model=list[StepView],
    responses=problem_responses(401, 404, 422),
)
def get_steps(session_id: UUID, services: ServicesDep, caller: CallerDep) -> list[StepView]:
    """Each step's status, attempts, timing and outcome."""
    owned_session(services, session_id, caller.tenant)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = step_history.steps_of(conn, session_id)
    return [StepView.model_validate(row, from_attributes=True) for row in rows]


@router.get(
    "/{session_id}/events",
    operation_id="getSessionEvents",
    response_model=EventPage,
    responses=problem_responses(401, 404, 422),
)
def get_events(
    session_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> EventPage:
    """The session's full history, in order, paged by version."""
    owned_session(services, session_id, caller.tenant)
    events = services.runtime.app.history(session_id, after=after, limit=limit + 1)
    page = events[:limit]
    next_after = page[-1].originator_version if len(events) > limit else None
    return EventPage(items=[event_view(e) for e in page], next_after=next_after)


def _command(
    services: Services,
    session_id: UUID,
    caller: Caller,
    body: Reason | None,
    act: Callable[..., None],
) -> CommandAccepted:
    owned_session(services, session_id, caller.tenant)
    act(session_id, reason=body.reason if body else "", actor=caller.name)
    session = services.runtime.app.get_session(session_id)
    return CommandAccepted(
        session_id=session_id, status=session.status.value, version=session.version
    )


COMMAND_ERRORS = problem_responses(400, 401, 404, 409, 413, 422)


@router.post(
    "/{session_id}/pause",
    operation_id="pauseSession",
    response_model=CommandAccepted,
    responses=COMMAND_ERRORS,
)
def pause(
    session_id: UUID, services: ServicesDep, caller: CallerDep, body: Reason | None = None
) -> CommandAccepted:
    """Pause at the next safe point (between turns)."""
    return _command(services, session_id, caller, body, services.runtime.app.pause)


@router.post(
    "/{session_id}/resume",
    operation_id="resumeSession",
    response_model=CommandAccepted,
    responses=COMMAND_ERRORS,
)
def resume(
    session_id: UUID, services: ServicesDep, caller: CallerDep, body: Reason | None = None
) -> CommandAccepted:
    """Resume a paused session; a worker with a free slot carries on with it."""
    return _command(services, session_id, caller, body, services.runtime.app.resume)


@router.post(
    "/{session_id}/cancel",
    operation_id="cancelSession",
    response_model=CommandAccepted,
    responses=COMMAND_ERRORS,
)
def cancel(
    session_id: UUID, services: ServicesDep, caller: CallerDep, body: Reason | None = None
) -> CommandAccepted:
    """Cancel a session that has not ended."""
    return _command(services, session_id, caller, body, services.runtime.app.cancel)


# ---- waits: approvals and signals --------------------------------------------------------


def _decided(
    services: Services, session_id: UUID, caller: Caller, body: Decision | None, approve: bool
) -> CommandAccepted:
    owned_session(services, session_id, caller.tenant)
    app = services.runtime.app
    decide = app.approve if approve else app.reject
    decide(session_id, comment=body.comment if body else "", actor=caller.name)
    session = app.get_session(session_id)
    return CommandAccepted(
        session_id=session_id, status=session.status.value, version=session.version
    )


@router.post(
    "/{session_id}/approve",
    operation_id="approveSession",
    response_model=CommandAccepted,
    responses=COMMAND_ERRORS,
)
def approve(
    session_id: UUID, services: ServicesDep, caller: CallerDep, body: Decision | None = None
) -> CommandAccepted:
    """Approve what a waiting session asks: it goes on with its next step (409 unless it
    waits for an approval)."""
    return _decided(services, session_id, caller, body, approve=True)


@router.post(
    "/{session_id}/reject",
    operation_id="rejectSession",
    response_model=CommandAccepted,
    responses=COMMAND_ERRORS,
)
def reject(
    session_id: UUID, services: ServicesDep, caller: CallerDep, body: Decision | None = None
) -> CommandAccepted:
    """Reject what a waiting session asks: its step fails with APPROVAL_REJECTED and the
    comment (409 unless it waits for an approval)."""
    return _decided(services, session_id, caller, body, approve=False)


SignalName = Annotated[
    str, Path(pattern=f"^{SIGNAL_NAME}$", description="as the step waits for it")
]


@router.post(
    "/{session_id}/signals/{name}",
    operation_id="signalSession",
    response_model=SignalAccepted,
    responses=COMMAND_ERRORS,
)
def signal(
    session_id: UUID,
    name: SignalName,
    services: ServicesDep,
    caller: CallerDep,
    body: Annotated[JsonValue, Body(description="any JSON: saved as {{vars.<name>}}")] = None,
) -> SignalAccepted:
    """Send the session a signal: a step waiting for it goes on, its body saved as
    `{{vars.<name>}}` (dots and dashes as `_`); sent early, it is kept until a step waits for
    it. The body is data: one holding a `{{...}}` placeholder is refused."""
    check_signal(name, body, services.runtime.settings.signal_max_bytes)
    owned_session(services, session_id, caller.tenant)
    session = services.runtime.loop.signal(session_id, name, body, actor=caller.name)
    return signal_accepted(session, name)


def signal_accepted(session: WorkflowSession, name: str) -> SignalAccepted:
    """What a signal sent to `session` came to: taken by a waiting step, or kept."""
    return SignalAccepted(
        session_id=session.id,
        name=name,
        status=session.status.value,
        version=session.version,
        taken=name not in session.mailbox,
    )


@router.delete(
    "/{session_id}/data",
    operation_id="eraseSession",
    response_model=SessionErasedView,
    responses=COMMAND_ERRORS,
)
def erase(
    session_id: UUID, body: EraseSession, services: ServicesDep, caller: CallerDep
) -> SessionErasedView:
    """Erase the session (cancelled first if under way): its data key is destroyed, its views
    keep a tombstone, its artifacts and executor state are deleted; the erasure is audited."""
    owned_session(services, session_id, caller.tenant)
    erased = services.runtime.erasure().erase(session_id, body.reason, caller.name)
    return SessionErasedView(
        session_id=session_id, cancelled=erased.cancelled, shredded=erased.shredded
    )
