"""The two requests a client creating and polling sessions sends most, answered without
FastAPI's work per request.

`POST /v1/sessions` and `GET /v1/sessions/{id}` are most of what a busy deployment serves.
Through FastAPI each costs the event loop about twice what the answer needs: its request
object, its dependency solving, its routing and its own middleware (measured: 0.62 ms of the
loop per read, where a bare route costs 0.30 and the server alone 0.14). This layer answers
the plain form of each itself: the route's own functions (`api.http.sessions`), in one trip to
a request thread, their errors rendered by the app's exception handlers, as FastAPI would.

The FastAPI routes stay the API: their OpenAPI, and every request not plain enough for this
layer goes on to them untouched — a query string, another method, another spelling of the
id, a body that is not JSON or not valid (with the body it came with, and nothing done that
FastAPI does not do again: as FastAPI does, the body is decoded before the key is checked
and validated after, and a valid key's check leaves no trace; no request is spent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http import sessions
from api.http.middleware import replaying
from api.http.services import Services, client_address
from api.http.sessions import created_if_plain, state_of

CREATE_PATH = "/v1/sessions"
READ_PREFIX = "/v1/sessions/"
ID_LENGTH = 36
Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """Answers the plain forms of `createSession` and `getSession`; hands on the rest."""

    def __init__(self, app: ASGIApp, main: FastAPI) -> None:
        self.app = app
        self.main = main
        self.create_route = route_of(sessions.router, "createSession")
        self.read_route = route_of(sessions.router, "getSession")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services | None = getattr(self.main.state, "services", None)
        if services is None or not is_plain(scope):
            await self.app(scope, receive, send)
        elif scope["method"] == "GET" and (session_id := id_in(scope["path"])) is not None:
            await self._read(scope, receive, send, services, session_id)
        elif scope["method"] == "POST" and scope["path"] == CREATE_PATH and sends_json(scope):
            await self._create(scope, receive, send, services)
        else:
            await self.app(scope, receive, send)

    async def _read(
        self, scope: Scope, receive: Receive, send: Send, services: Services, session_id: UUID
    ) -> None:
        scope["route"] = self.read_route
        await self._answer(scope, receive, send, services, state_of, session_id)

    async def _create(self, scope: Scope, receive: Receive, send: Send, services: Services) -> None:
        scope["route"] = self.create_route
        body, disconnected = await whole_body(receive)
        if disconnected:  # FastAPI answers (and counts) a client gone mid-body its own way
            await self.app(scope, client_gone, send)
            return
        answered = await self._answer(scope, receive, send, services, created_if_plain, body)
        if not answered:
            await self.app(scope, replaying(body, receive), send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        services: Services,
        function: Callable[..., Response | None],
        argument: object,
    ) -> bool:
        """Run `function` in a request thread with the request's address and keys, and send
        what it answers (or the error it raised, as the app's handler renders it). False: it
        left the request to FastAPI, having done nothing."""
        keys = header(scope, b"authorization"), header(scope, b"x-api-key")
        address = client_address(scope)
        try:
            response = await services.in_thread(function, services, argument, address, *keys)
        except Exception as error:
            response = await self._rendered(scope, receive, error)
        if response is None:
            return False
        await response(scope, receive, send)
        return True

    async def _rendered(self, scope: Scope, receive: Receive, error: Exception) -> Response:
        """The error as FastAPI's exception layer would answer it: by the app's handler for
        its class, nearest first. Left to the server's error layer (a 500) when only the
        handler of every `Exception` would take it, as Starlette leaves it."""
        handler = handler_for(self.main.exception_handlers, error)
        if handler is None:
            raise error
        return await handler(Request(scope, receive), error)


def route_of(router: APIRouter, operation_id: str) -> BaseRoute:
    """The route of `operation_id`, as FastAPI puts it in a request's scope: what the metrics
    and spans name a request by."""
    for route in router.routes:
        if getattr(route, "operation_id", None) == operation_id:
            return route
    raise LookupError(f"no route {operation_id}")


def is_plain(scope: Scope) -> bool:
    """An HTTP request without a query string, served at the root."""
    return scope["type"] == "http" and not scope.get("query_string") and not scope.get("root_path")


def id_in(path: str) -> UUID | None:
    """The session id of `/v1/sessions/{id}` when written as ids are given out (36
    characters, hyphenated, lower case), else None: FastAPI judges any other spelling."""
    if not path.startswith(READ_PREFIX) or len(path) != len(READ_PREFIX) + ID_LENGTH:
        return None
    text = path[len(READ_PREFIX) :]
    try:
        session_id = UUID(text)
    except ValueError:
        return None
    return session_id if str(session_id) == text else None


def header(scope: Scope, name: bytes) -> str | None:
    """The request's header `name` (lower case), the first if sent more than once, as
    Starlette's `Request.headers` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def sends_json(scope: Scope) -> bool:
    """Whether the body is declared as JSON (`application/json`, any parameters), which
    FastAPI decodes as JSON; any other type, or none, is left to FastAPI."""
    declared = header(scope, b"content-type")
    return declared is not None and declared.split(";")[0].strip().lower() == "application/json"


async def whole_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, and whether the client went away before sending it all."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


async def client_gone() -> Message:
    return {"type": "http.disconnect"}


def handler_for(handlers: dict[Any, Callable[..., Any]], error: Exception) -> Handler | None:
    for kind in type(error).__mro__:
        if kind is Exception:
            return None
        if kind in handlers:
            handler: Handler = handlers[kind]
            return handler
    return None
