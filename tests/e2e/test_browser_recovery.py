"""A browser session whose worker is killed: another worker reopens its page and finishes it."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.store.app import Stepline
from tests import workloads
from tests.conftest import PASSWORD
from tests.e2e.conftest import Cluster, events_of, wait_until_ended

STEPS = [
    "open /app/login",
    'fill "User" with "demo"',
    'fill "Password" with "{{secrets.DEMO_PASSWORD}}"',
    'click "Sign in"',
    'click "Refresh slowly"',  # the worker dies during this one
    'fill "New todo" with "written after the crash"',
    'click "Add"',
    'expect page contains "written after the crash"',
]


@pytest.fixture
def browser_cluster(fresh_database_url: str, tmp_path: Path) -> Iterator[Cluster]:
    deployment = Cluster(
        fresh_database_url,
        tmp_path,
        STEPLINE_LEASE_MS="1500",
        STEPLINE_SECRET_DEMO_PASSWORD=PASSWORD,
    )
    yield deployment
    deployment.stop_all()


def test_a_killed_workers_browser_session_reopens_its_page_signed_in_elsewhere(
    browser_cluster: Cluster, store: Stepline, target: str
) -> None:
    session_id = workloads.create_session(
        store,
        name="browser chaos",
        steps=[StepSpec(text) for text in STEPS],
        tenant=DEV_TENANT,  # whose secrets are the environment's: no API keys here
        actor="test",
        config={"executor": "browser", "base_url": target},
    )
    first = browser_cluster.worker(concurrency=1)
    deadline = time.monotonic() + 60
    while not any(_is_slow_click(e) for e in events_of(store, session_id)):
        assert time.monotonic() < deadline, "the slow click was never issued"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # mid-request: the page takes 1.5 s to answer
    first.wait(timeout=10)
    browser_cluster.worker(concurrency=1)
    wait_until_ended(store, [session_id], timeout_s=120)

    assert store.get_session(session_id).status is SessionStatus.COMPLETED
    events = events_of(store, session_id)
    results = [e for e in events if isinstance(e, WorkflowSession.CommandFinished)]
    interrupted = [r for r in results if r.error and r.error["code"] == "COMMAND_INTERRUPTED"]
    assert len(interrupted) == 1  # the slow click, and nothing else, was cut off
    after_crash = [json.loads(r.output) for r in results[results.index(interrupted[0]) + 1 :]]
    assert after_crash[0]["url"] == f"{target}/app/todos?delay_ms=1500"  # re-sent, still in
    assert all("/app/login" not in page["url"] for page in after_crash)  # never signed out
    with httpx.Client(base_url=target) as client:
        client.post("/login", json={"user": "demo", "password": PASSWORD})
        titles = [item["title"] for item in client.get("/todos").json()["items"]]
    assert titles == ["written after the crash"]


def _is_slow_click(event: WorkflowSession.Event) -> bool:
    return (
        isinstance(event, WorkflowSession.CommandIssued)
        and event.args.get("target") == "Refresh slowly"
    )
