"""The HTTP service: `stepline serve` runs this app — the API, the projection runner, the live
event feed and a pool of session workers, built once in the lifespan (the composition root)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
