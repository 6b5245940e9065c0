"""What the HTTP layer works with, built once per process by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from api.auth import Caller, KeyRing, RateLimiter
from engine.bootstrap import Runtime
from engine.feed import EventFeed
from engine.follower import LogFollower
from engine.worker import SessionWorker


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    worker: SessionWorker | None
    """None when this process serves the API only (`serve --workers 0`)."""
    follower: LogFollower
    feed: EventFeed
    keys: KeyRing
    limiter: RateLimiter

    def read_your_writes(self) -> None:
        """Let the views catch up with everything in the log when the request came in, so a
        read never shows less than the caller has already written or seen (bounded wait).
        Reads call this; writes answer from the write model and do not wait."""
        projector = self.runtime.projector
        projector.wait_until(projector.head(), timeout=2.0)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    return _services(request).keys.caller(authorization, x_api_key)


ServicesDep = Annotated[Services, Depends(_services)]
CallerDep = Annotated[Caller, Depends(_caller)]
