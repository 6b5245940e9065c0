"""Real processes on one database: `stepline worker` and `stepline serve`, started, killed and
stopped the way an operator or a crash would, against the example app on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from playwright.sync_api import expect

from domain.session import StepSpec, WorkflowSession
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests import workloads
from tests.conftest import allow_local_targets

STEPLINE = str(Path(sys.executable).parent / "stepline")

# The browser tests' assertions retry for as long as their actions wait (the pages' contexts
# set 20 s), not Playwright's own 5 s for `expect`, which a context's default does not change:
# a page's fetch, a debounced check or a worker's whole run can take longer on a loaded machine.
expect.set_options(timeout=20_000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """The processes of one deployment; every one of them is gone after the test."""

    def __init__(self, database_url: str, logs: Path, **settings: str) -> None:
        self.database_url = database_url
        self.logs = logs
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
        self.env = {
            **clean,
            "STEPLINE_DATABASE_URL": database_url,
            "STEPLINE_DATA_DIR": str(logs),
            "STEPLINE_LOG_LEVEL": "WARNING",
            **settings,
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{args[0]}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [STEPLINE, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def worker(self, concurrency: int = 4) -> subprocess.Popen[bytes]:
        return self.start("worker", "--concurrency", str(concurrency))

    def api(self, workers: int = 0) -> str:
        port = free_port()
        self.start("serve", "--port", str(port), "--workers", str(workers))
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code in (200, 503):
                    return base_url
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the API did not come up; see {self.logs}")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def cluster(fresh_database_url: str, tmp_path: Path) -> Iterator[Cluster]:
    deployment = Cluster(fresh_database_url, tmp_path, STEPLINE_LEASE_MS="1500")
    yield deployment
    deployment.stop_all()


@pytest.fixture
def store(fresh_database_url: str) -> Iterator[Stepline]:
    """The test's own view of the event store, to create sessions and read histories."""
    application = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
    allow_local_targets(application)  # the sessions' targets are on loopback
    yield application
    application.close()


def side_effect_steps(tag: str, slow_ms: int = 150, effects: int = 2) -> list[str]:
    """Slow reads and side effects the example app counts, by name."""
    steps = []
    for n in range(effects):
        steps += [
            f"GET /slow?ms={slow_ms}",
            f'POST /effects with {{"name": "{tag}-{n}"}}',
            "expect status 201",
        ]
    return steps


def create_sessions(store: Stepline, target: str, count: int, **kwargs: Any) -> list[UUID]:
    return [
        workloads.create_session(
            store,
            name=f"chaos {n}",
            steps=[StepSpec(text) for text in side_effect_steps(f"s{n}", **kwargs)],
            tenant="acme",
            actor="test",
            config={"executor": "http", "base_url": target},
        )
        for n in range(count)
    ]


def wait_until_ended(store: Stepline, session_ids: list[UUID], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(session_ids)
    while waiting and time.monotonic() < deadline:
        waiting = {i for i in waiting if not store.get_session(i).status.is_terminal}
        time.sleep(0.2)
    assert not waiting, f"{len(waiting)} sessions never ended"


def effects_of(target: str) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = httpx.get(f"{target}/effects").json()
    return seen


def events_of(store: Stepline, session_id: UUID) -> list[WorkflowSession.Event]:
    return store.history(session_id)
