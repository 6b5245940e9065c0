"""A session using an MCP server whose worker is killed mid-call: the server dies with the
worker, another worker starts a server of its own and finishes the session."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.policies import Policies
from tests import workloads
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Cluster, events_of, wait_until_ended
from tests.integration.test_mcp import MCP_POLICY, SERVER, processes_marked

STEPS = [
    'call todo_add with {"title": "before the crash"}',
    "call server_id",
    'call pause with {"ms": 3000}',  # the worker dies during this one
    'call todo_add with {"title": "after the crash"}',
    "call todo_list",
    'expect result contains "after the crash"',
]


@pytest.fixture
def mcp_cluster(fresh_database_url: str, tmp_path: Path) -> Iterator[Cluster]:
    deployment = Cluster(
        fresh_database_url,
        tmp_path,
        STEPLINE_LEASE_MS="1500",
        STEPLINE_MCP_PATHS=json.dumps([str(EXAMPLES)]),
    )
    yield deployment
    deployment.stop_all()


def test_a_killed_workers_mcp_session_restarts_its_server_elsewhere_and_completes(
    mcp_cluster: Cluster, store: Stepline
) -> None:
    Policies(store, Settings(database_url=None)).set("acme", MCP_POLICY, actor="test operator")
    marker = uuid4().hex
    session_id = workloads.create_session(
        store,
        name="mcp chaos",
        steps=[StepSpec(text) for text in STEPS],
        tenant="acme",
        actor="test",
        config={
            "executor": "mcp",
            "mcp": {"command": ["python", SERVER], "env": {"MARKER": marker}},
        },
    )
    first = mcp_cluster.worker(concurrency=1)
    deadline = time.monotonic() + 60
    while not any(_is_pause(e) for e in events_of(store, session_id)):
        assert time.monotonic() < deadline, "the slow call was never issued"
        time.sleep(0.02)
    assert processes_marked(marker)  # the first worker's server is running
    first.send_signal(signal.SIGKILL)  # mid-call: the tool takes 3 s to answer
    first.wait(timeout=10)
    _wait_until_gone(marker)  # the jail dies with its worker: no server is left behind
    mcp_cluster.worker(concurrency=1)
    wait_until_ended(store, [session_id], timeout_s=120)

    assert store.get_session(session_id).status is SessionStatus.COMPLETED
    results = [
        e for e in events_of(store, session_id) if isinstance(e, WorkflowSession.CommandFinished)
    ]
    interrupted = [r for r in results if r.error and r.error["code"] == "COMMAND_INTERRUPTED"]
    assert len(interrupted) == 1  # the slow call, and nothing else, was cut off
    first_server = json.loads(results[1].output)["result"]
    pause_again = json.loads(results[results.index(interrupted[0]) + 1].output)
    assert pause_again["tool"] == "pause"  # called again, by another server process
    assert first_server not in pause_again["result"]
    todo_list = json.loads(results[-1].output)
    assert todo_list["structured"] == {"result": ["after the crash"]}  # a fresh server's memory
    mcp_cluster.stop_all()
    assert processes_marked(marker) == []


def _is_pause(event: WorkflowSession.Event) -> bool:
    return isinstance(event, WorkflowSession.CommandIssued) and event.name == "pause"


def _wait_until_gone(marker: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while processes_marked(marker):
        assert time.monotonic() < deadline, "the killed worker's MCP server is still running"
        time.sleep(0.05)
