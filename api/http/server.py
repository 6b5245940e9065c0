"""The HTTP service: `stepline serve` runs this app — the API, the projection runner, the live
event feed and a pool of session workers, built once in the lifespan (the composition root)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from api.http import (
    analytics,
    artifacts,
    audit,
    batches,
    errors,
    learned,
    openapi,
    ops,
    replays,
    reports,
    schedules,
    secrets,
    sessions,
    stream,
    ui,
    usage,
    webhooks,
    workflows,
)
from api.http.auth import AuthFailures, CreationLimiter, KeyRing, RequestLimiter
from api.http.errors import problem_responses
from api.http.hot_routes import HotRoutes
from api.http.middleware import (
    BodyLimit,
    HostPolicy,
    HttpMetrics,
    Measure,
    Traced,
    TrustedHosts,
    is_loopback_name,
)
from api.http.services import (
    OPERATOR_SCOPE_KEY,
    REQUEST_THREAD_NAME,
    REQUEST_THREADS,
    Recent,
    Services,
)
from api.http.stream_slots import StreamSlots
from api.http.worker_processes import WorkerProcesses, supervisor_gone
from engine.bootstrap import Runtime, open_runtime, running_in_background
from engine.live.feed import EventFeed
from engine.logs import LOGGER_NAME
from engine.settings import Settings
from engine.tenancy.quotas import Capacity
from projections import step_history

log = logging.getLogger(LOGGER_NAME)


class UnsafeBinding(ValueError):
    pass


def check_binding(settings: Settings, host: str) -> None:
    """Dev mode (no API keys) only on loopback: anything else would be open to anyone."""
    if not settings.dev_mode:
        return
    if not is_loopback_name(host):
        raise UnsafeBinding(
            f"no API keys are configured, so the API would be open to anyone on {host}; "
            "set STEPLINE_API_KEYS (see `stepline keys new`) or bind to 127.0.0.1"
        )
    log.warning("Dev mode: no API keys configured; every request acts as 'dev' (loopback only)")


@contextmanager
def serving_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread (its lifespan included); yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **UVICORN))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the API could not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield listening_url(server)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def step_averages(runtime: Runtime) -> float | None:
    with runtime.projector.pool.connection() as conn:
        return step_history.recent_average_ms(conn)


UVICORN: dict[str, Any] = {"log_level": "warning", "proxy_headers": False}
"""uvicorn trusts X-Forwarded-For from loopback by default: any local client could name its
own address, and so walk past the lockout of failed keys. The peer's address is the client's."""

NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own OpenTelemetry spans, metrics and logs: off, as the request spans are `Traced`'s
(through the process's own provider, never the global one FastAPI looks for). Otherwise
FastAPI asks OpenTelemetry for the global providers on every request, to find none."""

RATE_LIMITED = problem_responses(429)
"""Any route may answer 429: the key's rate, or its address's failed keys (also on /health
and /metrics, where a key that is not the operator's counts as a failed one)."""


def create_app(
    settings: Settings, workers: int | None = None, worker_processes: int = 0
) -> FastAPI:
    """The API; with `workers` slots (default STEPLINE_MAX_CONCURRENT_SESSIONS; 0: none) it
    also drives sessions: in this process, or shared out among `worker_processes` of its own
    (see `api.http.worker_processes`)."""
    slots = settings.max_concurrent_sessions if workers is None else workers
    processes = WorkerProcesses(slots, worker_processes) if slots and worker_processes else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            runtime = stack.enter_context(open_runtime(settings))
            app.state.tracing = runtime.tracing
            feed = EventFeed(
                runtime.app,
                stream.sse_bytes,
                settings.streaming_buffer_size,
                idle_after_s=settings.sse_heartbeat_s,
            )
            stack.callback(feed.start())
            background = stack.enter_context(
                running_in_background(
                    runtime,
                    workers=0 if processes else slots,
                    role="serve",
                    also_wake=[feed.wake],
                    wanted=feed.has_subscribers,
                )
            )
            if processes is not None:  # once the schema is ready and the feed listens
                stack.enter_context(processes.running())
            pool = runtime.projector.pool
            threads = stack.enter_context(  # shut down (its calls done) before the runtime
                ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix=REQUEST_THREAD_NAME)
            )
            app.state.services = Services(
                runtime=runtime,
                worker=background.worker,
                worker_processes=processes,
                follower=background.follower,
                feed=feed,
                keys=KeyRing(settings.api_keys, settings.metrics_key_sha256),
                limiter=CreationLimiter(
                    pool,
                    settings.create_rate_per_minute,
                    Capacity.of(settings.max_active_sessions, runtime.app.events_table),
                ),
                requests=RequestLimiter(pool, runtime.policies),
                auth_failures=AuthFailures(settings.auth_failures_per_minute),
                streams=StreamSlots(),
                step_average_ms=Recent(partial(step_averages, runtime), ttl_s=10.0),
                threads=threads,
            )
            where = f" in worker processes: {len(processes.shares)}" if processes else ""
            log.info("Stepline API ready (%d session slots%s)", slots, where)
            yield

    app = FastAPI(
        title="Stepline",
        version="0.1.0",
        summary="Event-sourced automation workflows written as plain-language steps.",
        lifespan=lifespan,
        docs_url=None,  # served by `ui` from its own copy, under the dashboard's CSP
        redoc_url=None,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    app.state.http = HttpMetrics()
    errors.install(app)
    openapi.install(app)
    routers = (
        sessions,
        replays,
        usage,
        stream,
        artifacts,
        reports,
        batches,
        schedules,
        workflows,
        analytics,
        learned,
        audit,
        ops,
    )
    for module in (*routers, secrets, webhooks):
        app.include_router(module.router, responses=RATE_LIMITED)
    ui.install(app)
    app.add_middleware(HotRoutes, main=app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    hosts = host_policy(settings)
    if not hosts.any_host:  # with any host admitted, a layer less for every request
        app.add_middleware(TrustedHosts, policy=hosts)
    app.add_middleware(Measure, metrics=app.state.http)
    app.add_middleware(Traced, state=app.state)
    return app


def host_policy(settings: Settings) -> HostPolicy:
    """STEPLINE_ALLOWED_HOSTS if set. Unset: in dev mode only the loopback names (the server
    is loopback-only there), so a page that rebinds its name to 127.0.0.1 is refused; with API
    keys, any host — every answer but /health's status and the dashboard's empty pages needs
    a key, which such a page does not have. Set it when a proxy forwards known names."""
    if settings.allowed_hosts:
        return HostPolicy(settings.allowed_hosts)
    return HostPolicy(any_host=not settings.dev_mode)


def metrics_app(main: FastAPI, settings: Settings, host: str) -> FastAPI:
    """/health and /metrics in full, keyless, for the metrics port: the operator's, so it
    listens on loopback unless told otherwise. It shares the main app's state (services).
    On loopback it answers loopback names only (no DNS rebinding); bound elsewhere by the
    operator, whatever name its scraper uses (or STEPLINE_ALLOWED_HOSTS, when set)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state = main.state
    errors.install(app)
    app.include_router(ops.router)
    anywhere = not settings.allowed_hosts and not is_loopback_name(host)
    app.add_middleware(TrustedHosts, policy=HostPolicy(settings.allowed_hosts, any_host=anywhere))
    app.add_middleware(AsOperator)
    return app


class AsOperator:
    """Marks every request as the operator's (the metrics port's app)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, OPERATOR_SCOPE_KEY: True}, receive, send)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, shut down gracefully (the lifespan closed, so the embedded PostgreSQL
    released) on SIGHUP too: uvicorn itself does so on SIGINT and SIGTERM."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            before = signal.signal(signal.SIGHUP, self.handle_exit)
            try:
                yield
            finally:
                # Restored before uvicorn raises again the signals it caught, so a SIGHUP then
                # reaches the handler from before (in `stepline`, the orderly exit).
                signal.signal(signal.SIGHUP, before)


def serve(
    app: FastAPI,
    settings: Settings,
    host: str,
    port: int,
    metrics_at: tuple[str, int] | None,
    announce: Callable[[str], None] = print,
) -> None:
    """`stepline serve`: the API, and the metrics app on its own port if asked, in one loop.
    Once the API listens, `announce` is given its address (the port bound, if 0 was asked)."""
    servers = [GracefulServer(uvicorn.Config(app, host=host, port=port, **UVICORN))]
    if metrics_at is not None:
        metrics_host, metrics_port = metrics_at
        config = uvicorn.Config(
            metrics_app(app, settings, metrics_host),
            host=metrics_host,
            port=metrics_port,
            **UVICORN,
            lifespan="off",
        )
        servers.append(GracefulServer(config))

    async def serve_all() -> None:
        announcing = asyncio.create_task(_when_listening(servers[0], announce))
        try:
            await asyncio.gather(*(server.serve() for server in servers))
        finally:
            announcing.cancel()

    # The loop uvicorn would pick for itself (uvloop where installed): `uvicorn.run` is not
    # used, as two servers share this one loop.
    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(serve_all())


async def _when_listening(server: uvicorn.Server, announce: Callable[[str], None]) -> None:
    while not server.started:  # uvicorn says nothing else once its sockets are bound
        await asyncio.sleep(0.05)
    announce(listening_url(server))


def listening_url(server: uvicorn.Server) -> str:
    """The base URL a started server answers on."""
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_worker(runtime: Runtime, concurrency: int) -> None:
    """`stepline worker`: drive sessions until SIGTERM, SIGINT or SIGHUP, then hand them back."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    with running_in_background(runtime, workers=concurrency, role="worker"):
        log.info("Worker ready (%d session slots)", concurrency)
        while not stop.wait(1.0):
            if supervisor_gone():
                log.warning("The `serve` that started this worker is gone: stopping")
                break
        log.info("Stopping: every session stops at its next safe point and is handed back")
