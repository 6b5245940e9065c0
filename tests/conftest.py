"""A real PostgreSQL for every test that needs one.

Order of preference: `STEPLINE_TEST_DATABASE_URL` (a server URL; CI points it at the local
service), else a testcontainers PostgreSQL if a Docker engine answers, else the embedded
server. Each run creates its own fresh database and drops it at the end.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.database import (
    embedded_postgres,
    eventsourcing_env,
    temporary_database,
    with_dbname,
)
from engine.store.schema import prepare_database
from engine.tenancy.policies import Policies
from tests.scripted_model import ScriptedModel


def _docker_answers() -> bool:
    try:
        import docker  # noqa: PLC0415 - only needed without STEPLINE_TEST_DATABASE_URL

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL for a maintenance database on a real PostgreSQL server."""
    with ExitStack() as stack:
        url = os.environ.get("STEPLINE_TEST_DATABASE_URL")
        if url is None and _docker_answers():
            from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

            container = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            url = container.get_connection_url()
        if url is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = with_dbname(stack.enter_context(embedded_postgres(data_dir)), "postgres")
        yield url


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this test run."""
    with temporary_database(postgres_server_url, "stepline_test") as url:
        prepare_database(url)
        yield url


@pytest.fixture
def fresh_database_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test's own, for tests that look at the whole log."""
    with temporary_database(postgres_server_url, "stepline_test") as url:
        prepare_database(url)
        yield url


@pytest.fixture
def fresh_app(fresh_database_url: str) -> Iterator[Stepline]:
    """An application over a database of this test's own."""
    application = Stepline(eventsourcing_env(fresh_database_url))
    yield application
    application.close()


@pytest.fixture
def app(database_url: str) -> Iterator[Stepline]:
    application = Stepline(eventsourcing_env(database_url))
    yield application
    application.close()


# ---- what the tests run against: the example web app and a scripted model ---------------

PASSWORD = "s3cret-Pa55-word"
TEST_POLICY = {
    "executors": ["http", "browser", "shell"],
    "shell_allow": ["echo", "sleep", "true", "printf", "cat", "ls", "date", "touch", "wc"],
    "egress_allow": ["127.0.0.1", "localhost"],
}
"""What the operator of the tests' deployments lets their tenants (acme, globex) do: reach
the local targets on loopback and run a few programs."""
MASTER_KEY = "c3RlcGxpbmUtdGVzdHMtbWFzdGVyLWtleS0zMmJ5dGU="
"""STEPLINE_MASTER_KEY of the tests' stored secrets (32 bytes, not secret: tests only)."""
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_target() -> Any:
    """examples/target_app.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("example_target", EXAMPLES / "target_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def effects(base_url: str) -> list[str]:
    """The names of the effects the example app at `base_url` applied, in order."""
    return [e["name"] for e in httpx.get(f"{base_url}/effects").json()["applied"]]


@pytest.fixture
def target() -> Iterator[str]:
    """The example web app (login + todos) on loopback; yields its base URL."""
    with example_target().serving(password=PASSWORD) as base_url:
        yield base_url


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    """The scripted OpenAI-compatible server on loopback."""
    scripted = ScriptedModel()
    with scripted.serving():
        yield scripted


def allow_local_targets(app: Stepline, tenants: tuple[str, ...] = ("acme", "globex")) -> None:
    """Record the operator's grant of `TEST_POLICY` to the test tenants: a tenant gets the
    secure default otherwise (public internet only, no shell), and every test target is
    served on loopback."""
    policies = Policies(app, Settings(database_url=None))
    for tenant in tenants:
        policies.set(tenant, TEST_POLICY, actor="test operator")
