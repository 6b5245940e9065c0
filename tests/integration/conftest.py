"""Real targets for the task loop: the example web app, the scripted model, a task loop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from domain.session import StepSpec, WorkflowSession
from engine.ai.provider import AiProvider
from engine.live.projector import Projector
from engine.loop.builtin_steps import builtin
from engine.loop.learned import LearnedActionSource
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.ownership.executor_state import ExecutorStates
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.policies import Policies
from engine.tenancy.secret_store import MasterKey, SecretStore
from engine.tracing import Tracing
from tests import workloads
from tests.conftest import MASTER_KEY, PASSWORD, allow_local_targets
from tests.scripted_model import ScriptedModel


@pytest.fixture
def projector(app: Stepline, fresh_database_url: str) -> Iterator[Projector]:
    """The views, in the test's own database, fed from `app`'s log."""
    with ConnectionPool(fresh_database_url, kwargs={"autocommit": True}) as pool:
        runner = Projector(app, pool)
        runner.prepare()
        yield runner


@pytest.fixture
def secret_store(database_url: str) -> Iterator[SecretStore]:
    """The tenants' stored secrets: acme and globex each have DEMO_PASSWORD, bound to the
    origin of the base URL of the workflow that uses it (the dev tenant's comes from the
    environment, as `Secrets` given to the task loop)."""
    with ConnectionPool(database_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        store = SecretStore(pool, master_key_of_tests())
        for tenant in ("acme", "globex"):
            store.put(tenant, "DEMO_PASSWORD", PASSWORD, origins=[])
        yield store


def master_key_of_tests() -> MasterKey:
    return MasterKey(Settings(master_key=MASTER_KEY).master_key_bytes())


def kept_states(pool: ConnectionPool, keep_after_end_s: int = 0) -> ExecutorStates:
    """Executor state kept outside the log (sealed under the tests' master key)."""
    return ExecutorStates(pool, master_key_of_tests(), keep_after_end_s)


LoopFactory = Callable[..., TaskLoop]


@pytest.fixture
def make_loop(
    app: Stepline, tmp_path: Path, model: ScriptedModel, secret_store: SecretStore
) -> Iterator[LoopFactory]:
    providers: list[AiProvider] = []
    loops: list[TaskLoop] = []

    def build(
        ai: bool = True,
        states: ExecutorStates | None = None,
        ai_base_url: str | None = None,
        ai_timeout_s: float = 60.0,
        learned: LearnedActionSource | None = None,
        **settings: Any,
    ) -> TaskLoop:
        provider = None
        if ai:
            provider = AiProvider(
                model="scripted-model",
                api_key="test-key",
                base_url=ai_base_url or model.base_url,
                timeout_s=ai_timeout_s,
                max_retries=2,
            )
            providers.append(provider)
        loop_settings = Settings(
            database_url=None, data_dir=tmp_path, retry_backoff_ms=10, **settings
        )
        allow_local_targets(app)  # the targets are on loopback
        loop = TaskLoop(
            app,
            loop_settings,
            builtin(),
            Secrets({"DEMO_PASSWORD": PASSWORD}),
            provider,
            executor_states=states,
            policies=Policies(app, loop_settings),
            secret_store=secret_store,
            tracing=Tracing.of(loop_settings),  # off unless `otel_endpoint` is given
            learned=learned,
        )
        loops.append(loop)
        return loop

    yield build
    for loop in loops:
        loop.close()
        loop.tracing.shutdown()
    for provider in providers:
        provider.close()


def start_session(
    loop: TaskLoop,
    steps: list[str | StepSpec],
    base_url: str | None = None,
    executor: str = "http",
    tenant: str = "acme",
    **config: Any,
) -> UUID:
    specs = [s if isinstance(s, StepSpec) else StepSpec(s) for s in steps]
    return workloads.create_session(
        loop.app,
        name="task loop test",
        steps=specs,
        tenant=tenant,
        actor="alice",
        config=session_config(
            loop.settings, {"executor": executor, "base_url": base_url, **config}
        ),
    )


def script_sign_in(model: ScriptedModel) -> None:
    """Two turns of the scripted model: open the login form, then sign in as demo."""
    model.calls("http_request", reasoning="open the form", method="GET", url="/login")
    model.calls(
        "http_request",
        reasoning="sign in",
        method="POST",
        url="/login",
        body={"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"},
    )


def wait_for(
    condition: Callable[[], bool], timeout_s: float = 30, what: str = "the condition"
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def drive(loop: TaskLoop, session_id: UUID) -> WorkflowSession:
    """Run the session in this thread until it ends or pauses."""
    loop.drive(session_id, threading.Event())
    return loop.app.get_session(session_id)


def assert_secret_recorded_nowhere(database_url: str, logs: str, model: ScriptedModel) -> None:
    """PASSWORD is in no stored event or snapshot, no log line and no prompt (whose
    placeholder is)."""
    assert_stored_nowhere(database_url, PASSWORD)
    assert PASSWORD not in logs
    prompts = json.dumps(model.requests)
    assert "{{secrets.DEMO_PASSWORD}}" in prompts
    assert PASSWORD not in prompts


def assert_stored_nowhere(database_url: str, value: str) -> None:
    """`value` is in no stored event or snapshot (and some are stored)."""
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT state FROM stepline_events UNION ALL SELECT state FROM stepline_snapshots"
        ).fetchall()
    assert stored
    assert not [row for row in stored if value.encode() in bytes(row[0])]


def event_types(app: Stepline, session_id: UUID) -> list[str]:
    return [type(e).__name__ for e in app.history(session_id)]
