"""Where `stepline sessions` reads and sends: the database directly, or a Stepline server.

Both answer with the API's own shapes (SessionPage, SessionView, StepView, EventView,
CommandAccepted), so the commands print the same thing either way, and a tenant sees only
its own sessions either way: through the server the key decides the tenant, against the
database `--tenant` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol
from urllib.parse import quote
from uuid import UUID

import httpx

from api.http.event_views import AnyEventView, EventView, event_view
from api.http.reads import decode_cursor, session_page
from api.http.schemas import CommandAccepted, SessionPage, SessionView, SignalAccepted, StepView
from api.http.session_report import report
from api.http.sessions import signal_accepted
from domain.errors import SessionNotFound, StandardError
from domain.session import ENDING_EVENTS
from engine.bootstrap import Runtime
from engine.live.projector import READ_YOUR_WRITES_S
from engine.loop.waits import check_signal
from projections import session_index, session_progress, step_history
from projections.session_index import SessionFilter

Command = Literal["pause", "resume", "cancel"]
Decision = Literal["approve", "reject"]
ENDING_TYPES = {cls.__name__ for cls in ENDING_EVENTS}
FOLLOW_POLL_S = 0.25
MAX_RECONNECTS = 10


@dataclass(frozen=True)
class Query:
    status: str | None = None
    labels: dict[str, str] | None = None
    limit: int = 50
    cursor: str | None = None
    id_prefix: str | None = None


class SessionSource(Protocol):
    def page(self, query: Query) -> SessionPage: ...

    def session(self, session_id: UUID) -> SessionView: ...

    def steps(self, session_id: UUID) -> list[StepView]: ...

    def events(self, session_id: UUID, after: int = 0) -> Iterator[EventView]:
        """The history after version `after`, as it is now."""
        ...

    def follow(self, session_id: UUID, after: int = 0) -> Iterator[EventView]:
        """The history, then each new event as it is recorded, until the session ends."""
        ...

    def command(self, session_id: UUID, command: Command, reason: str) -> CommandAccepted: ...

    def decide(self, session_id: UUID, decision: Decision, comment: str) -> CommandAccepted:
        """Approve or reject what a waiting session asks."""
        ...

    def signal(self, session_id: UUID, name: str, body: Any) -> SignalAccepted: ...

    def report(self, session_id: UUID) -> str:
        """The session's report: one self-contained HTML file."""
        ...


# ---- the database -------------------------------------------------------------------------


class DatabaseSessions:
    """Reads the views (once they have applied the log as it is now: the leader's work, or
    this process's if no process leads) and the log; commands go
    through the application, as the API's do, with `actor` on their events."""

    def __init__(self, runtime: Runtime, tenant: str, actor: str) -> None:
        self.runtime = runtime
        self.tenant = tenant
        self.actor = actor

    def _fresh_views(self) -> None:
        projector = self.runtime.projector
        projector.wait_until(projector.head(), timeout=READ_YOUR_WRITES_S)

    def _owned(self, session_id: UUID) -> None:
        with self.runtime.projector.pool.connection() as conn:
            owner = session_index.tenant_of(conn, session_id)
        if owner != self.tenant:
            raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))

    def page(self, query: Query) -> SessionPage:
        self._fresh_views()
        where = SessionFilter(self.tenant, query.status, query.labels, id_prefix=query.id_prefix)
        after = decode_cursor(query.cursor) if query.cursor else None
        with self.runtime.projector.pool.connection() as conn:
            return session_page(conn, where, query.limit, after)

    def session(self, session_id: UUID) -> SessionView:
        self._fresh_views()
        self._owned(session_id)
        with self.runtime.projector.pool.connection() as conn:
            row = session_progress.find(conn, session_id)
        return SessionView.model_validate(row, from_attributes=True)

    def steps(self, session_id: UUID) -> list[StepView]:
        self._fresh_views()
        self._owned(session_id)
        with self.runtime.projector.pool.connection() as conn:
            rows = step_history.steps_of(conn, session_id)
        return [StepView.model_validate(row, from_attributes=True) for row in rows]

    def events(self, session_id: UUID, after: int = 0) -> Iterator[EventView]:
        self._fresh_views()
        self._owned(session_id)
        for event in self.runtime.app.history(session_id, after=after):
            yield event_view(event)

    def follow(self, session_id: UUID, after: int = 0) -> Iterator[EventView]:
        """Polls the log itself: the views need not be running to follow a session."""
        self._fresh_views()
        self._owned(session_id)
        last = after
        while True:
            for event in self.runtime.app.history(session_id, after=last):
                view = event_view(event)
                yield view
                last = view.version
                if view.type in ENDING_TYPES:
                    return
            time.sleep(FOLLOW_POLL_S)

    def command(self, session_id: UUID, command: Command, reason: str) -> CommandAccepted:
        self._fresh_views()
        self._owned(session_id)
        app = self.runtime.app
        act = {"pause": app.pause, "resume": app.resume, "cancel": app.cancel}[command]
        act(session_id, reason=reason, actor=self.actor)
        session = app.get_session(session_id)
        return CommandAccepted(
            session_id=session_id,
            status=session.status.value,
            version=session.version,
        )

    def decide(self, session_id: UUID, decision: Decision, comment: str) -> CommandAccepted:
        self._fresh_views()
        self._owned(session_id)
        app = self.runtime.app
        (app.approve if decision == "approve" else app.reject)(
            session_id, comment=comment, actor=self.actor
        )
        session = app.get_session(session_id)
        return CommandAccepted(
            session_id=session_id, status=session.status.value, version=session.version
        )

    def signal(self, session_id: UUID, name: str, body: Any) -> SignalAccepted:
        """As the API takes a signal: within STEPLINE_SIGNAL_MAX_BYTES, no placeholders."""
        check_signal(name, body, self.runtime.settings.signal_max_bytes)
        self._fresh_views()
        self._owned(session_id)
        session = self.runtime.loop.signal(session_id, name, body, actor=self.actor)
        return signal_accepted(session, name)

    def report(self, session_id: UUID) -> str:
        return report(self.runtime, self.session(session_id), self.steps(session_id))


# ---- a server -----------------------------------------------------------------------------


class ServerProblem(Exception):
    """The server answered with a problem (or not at all); carries it as a StandardError."""

    def __init__(self, error: StandardError) -> None:
        super().__init__(error.message)
        self.error = error


class ApiSessions:
    """The same, through a server's HTTP API with an API key (none for a dev-mode server)."""

    def __init__(self, base_url: str, key: str | None, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._answer(method, path, **kwargs)
        return response.json() if response.content else None  # 204: no body

    def _answer(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The server's answer, if it is not a problem (ServerProblem if it is, or if none)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServerProblem(_unreachable(str(self.http.base_url), error)) from None
        if response.is_error:
            raise ServerProblem(_problem(response))
        return response

    def page(self, query: Query) -> SessionPage:
        params: dict[str, Any] = {"limit": query.limit}
        if query.status:
            params["status"] = query.status
        if query.labels:
            params["label"] = [f"{k}={v}" for k, v in query.labels.items()]
        if query.cursor:
            params["cursor"] = query.cursor
        if query.id_prefix:
            params["id_prefix"] = query.id_prefix
        return SessionPage.model_validate(self._json("GET", "/v1/sessions", params=params))

    def session(self, session_id: UUID) -> SessionView:
        return SessionView.model_validate(self._json("GET", f"/v1/sessions/{session_id}"))

    def steps(self, session_id: UUID) -> list[StepView]:
        rows = self._json("GET", f"/v1/sessions/{session_id}/steps")
        return [StepView.model_validate(row) for row in rows]

    def events(self, session_id: UUID, after: int = 0) -> Iterator[EventView]:
        while True:
            page = self._json(
                "GET", f"/v1/sessions/{session_id}/events", params={"after": after, "limit": 1000}
            )
            for item in page["items"]:
                yield AnyEventView.model_validate(item)
            if page["next_after"] is None:
                return
            after = page["next_after"]

    def follow(self, session_id: UUID, after: int = 0) -> Iterator[EventView]:
        """The SSE stream; after a dropped connection, resumed with Last-Event-ID (and given
        up, saying so, when the server has not answered for MAX_RECONNECTS tries in a row)."""
        last, failures = after, 0
        while True:
            try:
                for view in self._stream(session_id, last):
                    yield view
                    last, failures = view.version, 0
                    if view.type in ENDING_TYPES:
                        return
            except httpx.TransportError as error:
                failures += 1  # dropped or refused: resume after the last event seen
                if failures >= MAX_RECONNECTS:
                    raise ServerProblem(_unreachable(str(self.http.base_url), error)) from None
            time.sleep(min(5.0, FOLLOW_POLL_S * 2**failures))

    def _stream(self, session_id: UUID, after: int) -> Iterator[EventView]:
        headers = {"Last-Event-ID": str(after), "Accept": "text/event-stream"}
        path = f"/v1/sessions/{session_id}/stream"
        with self.http.stream("GET", path, headers=headers, timeout=None) as response:
            if response.is_error:
                response.read()
                raise ServerProblem(_problem(response))
            for frame in sse_frames(response.iter_lines()):
                if "id" in frame and int(frame["id"]) > after:
                    yield AnyEventView.model_validate(json.loads(frame["data"]))

    def command(self, session_id: UUID, command: Command, reason: str) -> CommandAccepted:
        answer = self._json("POST", f"/v1/sessions/{session_id}/{command}", json={"reason": reason})
        return CommandAccepted.model_validate(answer)

    def decide(self, session_id: UUID, decision: Decision, comment: str) -> CommandAccepted:
        path = f"/v1/sessions/{session_id}/{decision}"
        return CommandAccepted.model_validate(self._json("POST", path, json={"comment": comment}))

    def signal(self, session_id: UUID, name: str, body: Any) -> SignalAccepted:
        path = f"/v1/sessions/{session_id}/signals/{quote(name, safe='')}"
        return SignalAccepted.model_validate(self._json("POST", path, json=body))

    def report(self, session_id: UUID) -> str:
        return self._answer("GET", f"/v1/sessions/{session_id}/report").text


def sse_frames(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-Sent Event frames (their id, event and data fields) from the stream's lines."""
    frame: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield {**frame, "data": "\n".join(data)}
            frame, data = {}, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field in ("id", "event"):
            frame[field] = value


def _unreachable(base_url: str, error: Exception) -> StandardError:
    return StandardError.of(
        "SERVER_UNREACHABLE", f"no answer from the Stepline server at {base_url}: {error}"
    )


def _problem(response: httpx.Response) -> StandardError:
    """The server's problem+json as a StandardError, its advice included."""
    try:
        body = response.json()
        error = StandardError.of(str(body["code"]), str(body["message"]))
        return replace(error, suggested_action=str(body["suggested_action"]))
    except (ValueError, KeyError, TypeError):
        return StandardError.of(
            "SERVER_UNREACHABLE",
            f"{response.request.url} answered {response.status_code}, not as a Stepline server",
        )
