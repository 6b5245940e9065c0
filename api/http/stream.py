"""GET /v1/sessions/{id}/stream: the session's events as Server-Sent Events.

First the history after `Last-Event-ID` (header or query), then live events as they commit,
each with `id:` = its version, heartbeats while idle, ending after the terminal event. A command
or check that stored artifacts (screenshots) is announced first by one `artifact` frame per
file, with the URL to fetch it from, so a watcher sees the page as the session runs. The
subscription starts before the history is read and events are deduplicated by version, so a
reconnecting client misses nothing and sees nothing twice.

Each open stream holds a slot under its key's and its tenant's caps (`api.http.stream_slots`) from
before the response starts until it ends, however it ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.http.errors import problem_responses
from api.http.event_views import event_view
from api.http.schemas import ArtifactAnnouncement
from api.http.services import CallerDep, Services, ServicesDep
from api.http.sessions import owned_session
from api.http.stream_slots import StreamSlot
from domain.session import ENDING_EVENTS, WorkflowSession, stored_artifacts
from engine.live.feed import IDLE, OVERFLOWED, Live

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

FRAME = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "description": "the event's `type`; `artifact` for a stored file's announcement",
        },
        "id": {
            "type": "string",
            "description": "the event's version, to resume after (none on `artifact` frames)",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/SessionEvent"},
                    {"$ref": "#/components/schemas/ArtifactAnnouncement"},
                ]
            },
        },
    },
}
EVENT_STREAM = {
    "description": "Server-Sent Events, one frame per event (`itemSchema`); `: heartbeat` "
    "comments while idle; the stream ends after the session's last event",
    "content": {"text/event-stream": {"schema": {"type": "string"}, "itemSchema": FRAME}},
}
"""How the stream is described: each frame's `data` is a SessionEvent (as in the events
page) or an ArtifactAnnouncement. `itemSchema` is OpenAPI 3.2's (FastAPI writes its own
event streams so); tools of 3.1 read `schema`, the stream as text."""


def sse_frame(event: WorkflowSession.Event) -> str:
    """The event as one Server-Sent Event (after its artifacts' announcements); the live feed
    encodes each event once with it."""
    view = event_view(event)
    data = json.dumps(view.model_dump(mode="json"), ensure_ascii=False)
    return f"{_announcements(event)}id: {view.version}\nevent: {view.type}\ndata: {data}\n\n"


def _announcements(event: WorkflowSession.Event) -> str:
    """An `artifact` frame per file a finished command or a check stored. It carries no `id:`,
    so a client that reconnects after the event's id is not told twice."""
    frames = []
    for artifact in stored_artifacts(event):
        announced = ArtifactAnnouncement(
            **artifact,
            url=f"/v1/sessions/{event.originator_id}/artifacts/{artifact['hash']}",
            step_index=getattr(event, "step_index", None),
            command_id=getattr(event, "command_id", None),
            version=event.originator_version,
        )
        data = json.dumps(announced.model_dump(mode="json"))
        frames.append(f"event: artifact\ndata: {data}\n\n")
    return "".join(frames)


HEARTBEAT = b": heartbeat\n\n"


def sse_bytes(event: WorkflowSession.Event) -> bytes:
    """`sse_frame` as the bytes a stream writes: the live feed encodes each event once."""
    return sse_frame(event).encode()


async def _events(services: Services, session_id: UUID, after: int) -> AsyncIterator[bytes]:
    # Subscribed here, when the response starts, so a response never sent leaks nothing;
    # and before the history is read, so nothing committed in between is missed. (A client
    # that goes away ends the response: Starlette cancels it on the disconnect.)
    subscription = services.feed.subscribe(session_id)
    try:
        history = await run_in_threadpool(_history, services, session_id, after)
        last = after
        for event in history:
            yield sse_bytes(event)
            last = event.originator_version
            if isinstance(event, ENDING_EVENTS):
                return
        while True:
            frames, last, ended = _unseen(await subscription.take(), last)
            yield b"".join(frames)  # what arrived together goes out in one write
            if ended:
                return
    finally:
        services.feed.unsubscribe(subscription)


def _history(services: Services, session_id: UUID, after: int) -> list[WorkflowSession.Event]:
    """The session's events after version `after`, the process's follower told first that
    the feed has a subscriber now: new events are listened to only while someone streams
    them. What is committed before it listens again, the feed reads from the log on its wake."""
    services.follower.look_again()
    return services.runtime.app.history(session_id, after)


def _unseen(items: list[Live[bytes] | object], last: int) -> tuple[list[bytes], int, bool]:
    """The frames of the events after version `last` (a heartbeat if the feed had none for
    this stream); the new last; whether the stream ends (the session ended, or the
    subscriber overflowed and must resume from the log)."""
    frames: list[bytes] = []
    for item in items:
        if item is OVERFLOWED:
            return frames, last, True
        if item is IDLE:
            frames.append(HEARTBEAT)
            continue
        assert isinstance(item, Live)
        if item.version <= last:
            continue
        frames.append(item.encoded)
        last = item.version
        if item.final:
            return frames, last, True
    return frames, last, False


class HeldStream(StreamingResponse):
    """A stream that gives its slot back when the response ends: the session ended, the
    client went away (closed, or killed: the server sees the connection drop), or the server
    stops."""

    def __init__(self, content: AsyncIterator[bytes], slot: StreamSlot) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


@router.get(
    "/{session_id}/stream",
    operation_id="streamSessionEvents",
    response_class=StreamingResponse,
    responses={200: EVENT_STREAM, **problem_responses(401, 404, 422, 429)},
)
async def stream(
    session_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**31 - 1)] = None,
    after: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="as Last-Event-ID")] = None,
) -> StreamingResponse:
    """Every event of the session, history first, then live; resumable with Last-Event-ID.
    429 once the key or its tenant has as many streams open as its cap allows."""
    await run_in_threadpool(owned_session, services, session_id, caller.tenant)
    tenant_cap = await run_in_threadpool(_tenant_cap, services, caller.tenant)
    key_cap = services.runtime.settings.key_max_streams
    slot = services.streams.open(caller, key_cap, tenant_cap)
    start = last_event_id if last_event_id is not None else (after or 0)
    return HeldStream(_events(services, session_id, start), slot)


def _tenant_cap(services: Services, tenant: str) -> int | None:
    return services.runtime.policies.of(tenant).max_streams
