"""The API served for real: uvicorn on loopback in a thread, over a database of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.http.auth import digest
from api.http.server import create_app, serving_in_background
from api.http.services import Services
from engine.settings import ApiKey, Settings
from tests.conftest import allow_local_targets

KEYS = {"alice": ("acme", "sk_alice_0123456789"), "bob": ("acme", "sk_bob_0123456789")}
KEYS["eve"] = ("globex", "sk_eve_0123456789")
KEYS["mallory"] = ("initech", "sk_mallory_0123456789")
"""initech has no policy of its own: the secure default (http and browser, public internet)."""
OPERATOR_KEY = "sk_operator_0123456789"
"""The operator's metrics key: the full /health and /metrics (no tenant's key is one)."""


@dataclass
class Api:
    base_url: str
    app: FastAPI

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def client(self, who: str | None = "alice", **headers: str) -> httpx.Client:
        if who is not None:
            headers["Authorization"] = f"Bearer {KEYS[who][1]}"
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def operator(self) -> httpx.Client:
        """A client with the operator's metrics key."""
        headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)


ApiFactory = Callable[..., Any]


@pytest.fixture
def start_api(fresh_database_url: str, tmp_path: Path) -> Iterator[ApiFactory]:
    """Start the API with settings overridden; stopped at the end of the test."""
    stack: list[Any] = []

    def start(keys: bool = True, workers: int | None = None, **overrides: Any) -> Api:
        api_keys = {
            name: ApiKey(tenant=tenant, sha256=digest(key)) for name, (tenant, key) in KEYS.items()
        }
        settings = Settings(
            database_url=fresh_database_url,
            data_dir=tmp_path,
            api_keys=api_keys if keys else {},
            sse_heartbeat_s=0.5,
            **{"metrics_key_sha256": digest(OPERATOR_KEY), **overrides},
        )
        app = create_app(settings, workers=workers)
        context = serving_in_background(app)
        base_url = context.__enter__()
        stack.append(context)
        allow_local_targets(app.state.services.runtime.app)  # the targets are on loopback
        return Api(base_url, app)

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def api(start_api: ApiFactory) -> Api:
    started: Api = start_api()
    return started


def shell_workflow(*commands: str, name: str = "api test", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "executor": "shell",
        "steps": [f"run `{command}`" for command in commands],
        "config": {"shell_allow": ["echo", "sleep", "true"]},
        **extra,
    }
