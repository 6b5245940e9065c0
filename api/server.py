"""The HTTP service: `stepline serve` runs this app — the API, the projection runner, the live
event feed and a pool of session workers, built once in the lifespan (the composition root)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI

from api import audit, batches, errors, ops, sessions, stream
from api.auth import KeyRing, RateLimiter
from api.middleware import BodyLimit, HttpMetrics, Measure
from api.services import Services
from engine.bootstrap import open_runtime
from engine.feed import EventFeed
from engine.logs import LOGGER_NAME
from engine.runner import SessionRunner
from engine.settings import Settings

log = logging.getLogger(LOGGER_NAME)


class UnsafeBinding(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(settings: Settings, host: str) -> None:
    """Dev mode (no API keys) only on loopback: anything else would be open to anyone."""
    if settings.api_keys:
        return
    if not is_loopback(host):
        raise UnsafeBinding(
            f"no API keys are configured, so the API would be open to anyone on {host}; "
            "set STEPLINE_API_KEYS (see `stepline keys new`) or bind to 127.0.0.1"
        )
    log.warning("Dev mode: no API keys configured; every request acts as 'dev' (loopback only)")


@contextmanager
def serving_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread (its lifespan included); yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the API could not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with open_runtime(settings) as runtime:
            runner = SessionRunner(runtime.loop, settings.max_concurrent_sessions)
            feed = EventFeed(runtime.app, runtime.projector.pool, settings.streaming_buffer_size)
            stop_projector = runtime.projector.start_following()
            stop_feed = feed.start()
            app.state.services = Services(
                runtime=runtime,
                runner=runner,
                feed=feed,
                keys=KeyRing(settings.api_keys),
                limiter=RateLimiter(settings.create_rate_per_minute),
            )
            runner.resume_runnable(runtime.projector)
            runner.start_expiring(runtime.projector, settings.session_ttl_ms)
            log.info("Stepline API ready")
            try:
                yield
            finally:
                runner.stop(wait=True)
                stop_feed()
                stop_projector()

    app = FastAPI(
        title="Stepline",
        version="0.1.0",
        summary="Event-sourced automation workflows written as plain-language steps.",
        lifespan=lifespan,
    )
    app.state.http = HttpMetrics()
    errors.install(app)
    for module in (sessions, stream, batches, audit, ops):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Measure, metrics=app.state.http)
    return app
