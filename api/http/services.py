"""What the HTTP layer works with, built once per process by the composition root."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from starlette.types import Scope

from api.http.auth import AuthFailures, Caller, CreationLimiter, KeyRing, RequestLimiter
from api.http.errors import ApiError
from api.http.stream_slots import StreamSlots
from api.http.worker_processes import WorkerProcesses
from engine.bootstrap import Runtime
from engine.live.feed import EventFeed
from engine.live.follower import LogFollower
from engine.live.projector import READ_YOUR_WRITES_S
from engine.worker import SessionWorker

T = TypeVar("T")
REQUEST_THREADS = 40
"""Threads for the hot routes' work: as many as AnyIO keeps for plain def routes."""
REQUEST_THREAD_NAME = "request-thread"
OPERATOR_SCOPE_KEY = "stepline.operator"
"""Set in a request's scope by the metrics port's app: its callers are the operator."""


class Recent(Generic[T]):
    """A value computed at most once per `ttl_s`: for figures that may be a little old."""

    def __init__(self, compute: Callable[[], T], ttl_s: float) -> None:
        self._compute = compute
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: T | None = None
        self._until = 0.0

    def __call__(self) -> T:
        with self._lock:
            if time.monotonic() >= self._until:
                self._value = self._compute()
                self._until = time.monotonic() + self._ttl_s
            return self._value  # type: ignore[return-value]


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    worker: SessionWorker | None
    """None when this process drives no session itself (`serve --workers 0`, or its worker
    processes do)."""
    worker_processes: WorkerProcesses | None
    """The worker processes `serve` started to drive its sessions, if any."""
    follower: LogFollower
    feed: EventFeed[bytes]
    """New events, each pre-encoded as an SSE frame."""
    keys: KeyRing
    limiter: CreationLimiter
    """The server's room for sessions and each tenant's rate of creating them."""
    requests: RequestLimiter
    """Each key's requests, on every route that takes a key."""
    auth_failures: AuthFailures
    streams: StreamSlots
    step_average_ms: Callable[[], float | None]
    """Recent steps' mean duration, for estimates: a little old is fine (see `Recent`)."""
    threads: ThreadPoolExecutor
    """Where the hot routes run their work (see `in_thread`)."""

    async def in_thread(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` in one of `threads`, in the request's context (its span, when
        traced). Handing it there costs the event loop less than AnyIO's `run_in_threadpool`
        (no capacity limiter, no cancel scopes): for the routes most requests take."""
        call = partial(copy_context().run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self.threads, call)

    @property
    def worker_alive(self) -> bool | None:
        """Whether what drives this server's sessions runs (None: nothing does)."""
        if self.worker is not None:
            return self.worker.alive
        if self.worker_processes is not None:
            return self.worker_processes.alive
        return None

    def read_your_writes(
        self, position: int | None = None, views: Sequence[str] | None = None
    ) -> None:
        """Wait until the views have applied everything in the log when the request came in,
        so a read never shows less than the caller has already written or seen: the leader's
        notification ends the wait (or, failing one in time, this process catches up).
        Reads call this; writes answer from the write model and do not wait. A read of one
        session that knows the position of its last event waits for that (in `views` only)."""
        projector = self.runtime.projector
        target = projector.head() if position is None else position
        projector.wait_until(target, timeout=READ_YOUR_WRITES_S, names=views)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _services(request: Request) -> Services:
    """A coroutine, so FastAPI calls it on the event loop: a plain def dependency costs every
    request a trip to a worker thread and back."""
    return services_of(request)


def sent_keys(request: Request) -> tuple[str | None, str | None]:
    """The request's Authorization and X-API-Key headers. Read here, not declared as header
    parameters: FastAPI would validate both on every request, and neither is in the OpenAPI."""
    return request.headers.get("authorization"), request.headers.get("x-api-key")


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def checked_caller(
    services: Services, address: str, authorization: str | None, x_api_key: str | None
) -> Caller:
    """The key's caller, once its address has not failed too often; a key that is refused
    counts as a failed authentication of the address. No query: the event loop may call it."""
    services.auth_failures.refuse_if_blocked(address)
    try:
        return services.keys.caller(authorization, x_api_key)
    except ApiError:
        services.auth_failures.record(address)
        raise


def caller_in_thread(
    services: Services, address: str, authorization: str | None, x_api_key: str | None
) -> Caller:
    """`_caller`, for a request already in a request thread (see `api.http.hot_routes`)."""
    caller = checked_caller(services, address, authorization, x_api_key)
    request_taken(services, caller)
    return caller


def request_taken(services: Services, caller: Caller) -> None:
    """Spend one of the key's requests this minute, in a request thread: a query only when
    this process holds none of its tokens (see `RequestLimiter.take_held`)."""
    if not services.requests.take_held(caller):
        services.requests.take(caller)


async def _caller(request: Request) -> Caller:
    """The key's caller, once its address has not failed too often and the key has requests
    left this minute. A coroutine: checking the key and spending a token this process holds
    take no query, and only a query goes to a thread (see `RequestLimiter.take_held`)."""
    services = services_of(request)
    caller = checked_caller(services, client_address(request.scope), *sent_keys(request))
    if not services.requests.take_held(caller):
        await services.in_thread(services.requests.take, caller)
    return caller


@dataclass(frozen=True)
class Authorized:
    """A request's caller and what the HTTP layer works with: one dependency for a route that
    needs both, as each dependency FastAPI solves costs the event loop again."""

    services: Services
    caller: Caller


async def _authorized(request: Request) -> Authorized:
    return Authorized(services_of(request), await _caller(request))


async def _is_operator(request: Request) -> bool:
    """Whether the request carries the operator's metrics key (or arrived on the metrics port,
    whose app says so). A key that is neither the operator's nor a tenant's counts as a failed
    authentication of the client's address, as on every other route. A coroutine: no query."""
    if request.scope.get(OPERATOR_SCOPE_KEY):
        return True
    authorization, x_api_key = sent_keys(request)
    services = services_of(request)
    address = client_address(request.scope)
    services.auth_failures.refuse_if_blocked(address)
    if services.keys.is_operator(authorization, x_api_key):
        return True
    if authorization or x_api_key:
        try:
            services.keys.caller(authorization, x_api_key)
        except ApiError:
            services.auth_failures.record(address)
    return False


ServicesDep = Annotated[Services, Depends(_services)]
CallerDep = Annotated[Caller, Depends(_caller)]
AuthorizedDep = Annotated[Authorized, Depends(_authorized)]
OperatorDep = Annotated[bool, Depends(_is_operator)]
