"""Sessions that wait, across real processes: `stepline serve` and `stepline worker` on one
database, killed with SIGKILL while sessions wait, answered through the API and the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest

from api.http.auth import new_key
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.store.app import Stepline
from tests import workloads
from tests.e2e.conftest import STEPLINE, Cluster, effects_of, events_of
from tests.waiting import eventually

W = WorkflowSession


@dataclass
class Deployment:
    """A cluster whose API serves two keys of tenant acme (alice, carol) and one of globex."""

    cluster: Cluster
    keys: dict[str, str]

    def client(self, api: str, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=api, headers=headers, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [STEPLINE, "sessions", *args],
            env=self.cluster.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done


@pytest.fixture
def deployment(fresh_database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    keys, setting = {}, {}
    for name, tenant in (("alice", "acme"), ("carol", "acme"), ("eve", "globex")):
        keys[name], digest = new_key()
        setting[name] = {"tenant": tenant, "sha256": digest}
    cluster = Cluster(
        fresh_database_url,
        tmp_path,
        STEPLINE_LEASE_MS="1500",
        STEPLINE_API_KEYS=json.dumps(setting),
    )
    yield Deployment(cluster, keys)
    cluster.stop_all()


def created(store: Stepline, target: str, *steps: str) -> UUID:
    return workloads.create_session(
        store,
        name="payment",
        steps=[StepSpec(text) for text in steps],
        tenant="acme",
        actor="alice",
        config={"executor": "http", "base_url": target},
    )


def reaches(store: Stepline, session_id: UUID, status: SessionStatus, within_s: float = 60) -> None:
    eventually(
        lambda: store.get_session(session_id).status is status,
        f"session {session_id} {status.value}",
        within_s,
    )


def live_leases(database_url: str, session_id: UUID) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM session_leases WHERE session_id = %s AND lease_until > now()",
            (session_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def lease_owner_pid(database_url: str, session_id: UUID) -> int | None:
    """The pid of the worker holding the session's lease now (worker ids are host:pid:…)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT owner FROM session_leases WHERE session_id = %s AND lease_until > now()",
            (session_id,),
        ).fetchone()
    return int(row[0].split(":")[1]) if row and row[0] else None


def wait_ends(store: Stepline, session_id: UUID) -> list[W.WaitEnded]:
    return [e for e in events_of(store, session_id) if isinstance(e, W.WaitEnded)]


def test_a_second_key_of_the_tenant_approves_and_the_session_completes(
    deployment: Deployment, store: Stepline, target: str
) -> None:
    api = deployment.cluster.api(workers=0)
    deployment.cluster.worker()
    with deployment.client(api, "alice") as alice:
        body = {
            "name": "payment",
            "executor": "http",
            "base_url": target,
            "steps": ["wait for approval: Send 1200 EUR?", 'POST /effects with {"name": "sent"}'],
        }
        session_id = UUID(alice.post("/v1/sessions", json=body).json()["session_id"])
    reaches(store, session_id, SessionStatus.WAITING)

    assert live_leases(deployment.cluster.database_url, session_id) == 0
    with deployment.client(api, "eve") as eve:
        assert eve.post(f"/v1/sessions/{session_id}/approve", json={}).status_code == 404
    with deployment.client(api, "carol") as carol:
        answer = carol.post(f"/v1/sessions/{session_id}/approve", json={"comment": "ok"})
    assert answer.status_code == 200, answer.text
    reaches(store, session_id, SessionStatus.COMPLETED)

    [ended] = wait_ends(store, session_id)
    assert (ended.outcome, ended.actor, ended.comment) == ("approved", "carol", "ok")
    assert [d["effect"] for d in effects_of(target)["delivered"]] == ["sent"]


def test_a_rejection_through_the_cli_fails_the_step_with_its_comment(
    deployment: Deployment, store: Stepline, target: str
) -> None:
    api = deployment.cluster.api(workers=2)
    session_id = created(store, target, "wait for approval", 'POST /effects with {"name": "x"}')
    reaches(store, session_id, SessionStatus.WAITING)

    deployment.cli(
        "reject",
        str(session_id),
        "--comment",
        "wrong IBAN",
        "--api",
        api,
        "--key",
        deployment.keys["carol"],
    )
    reaches(store, session_id, SessionStatus.FAILED)

    error = store.get_session(session_id).steps[0].error
    assert error is not None
    assert (error["code"], error["details"]["comment"]) == ("APPROVAL_REJECTED", "wrong IBAN")
    assert effects_of(target)["delivered"] == []


def test_an_approval_nobody_gives_in_time_fails_the_step(
    deployment: Deployment, store: Stepline, target: str
) -> None:
    deployment.cluster.worker()
    session_id = created(store, target, "wait for approval within 2 seconds", "GET /effects")

    reaches(store, session_id, SessionStatus.FAILED)

    error = store.get_session(session_id).steps[0].error
    assert error is not None
    assert error["code"] == "APPROVAL_TIMED_OUT"
    assert [e.outcome for e in wait_ends(store, session_id)] == ["timed_out"]


def test_an_approval_given_after_the_worker_was_killed_is_carried_on_by_another(
    deployment: Deployment, store: Stepline, target: str
) -> None:
    first = deployment.cluster.worker()
    session_id = created(store, target, "wait for approval", 'POST /effects with {"name": "ok"}')
    reaches(store, session_id, SessionStatus.WAITING)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    deployment.cli("approve", str(session_id), "--comment", "fine", "--tenant", "acme")
    assert store.get_session(session_id).status is SessionStatus.RUNNING  # nobody drives it
    deployment.cluster.worker()
    reaches(store, session_id, SessionStatus.COMPLETED)

    [ended] = wait_ends(store, session_id)
    assert (ended.outcome, ended.comment) == ("approved", "fine")
    assert [d["effect"] for d in effects_of(target)["delivered"]] == ["ok"]


def test_a_timer_survives_its_worker_and_wakes_once_on_time(
    deployment: Deployment, store: Stepline, target: str
) -> None:
    workers = [deployment.cluster.worker(concurrency=2), deployment.cluster.worker(concurrency=2)]
    session_id = created(
        store, target, "GET /slow?ms=1500", "wait 3 seconds", 'POST /effects with {"name": "t"}'
    )
    url = deployment.cluster.database_url
    owner = eventually(lambda: lease_owner_pid(url, session_id), "a worker drives the session")
    reaches(store, session_id, SessionStatus.WAITING)
    [victim] = [w for w in workers if w.pid == owner]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)

    reaches(store, session_id, SessionStatus.COMPLETED)

    events = events_of(store, session_id)
    [started] = [e for e in events if isinstance(e, W.WaitStarted)]
    [ended] = [e for e in events if isinstance(e, W.WaitEnded)]  # exactly one wake-up
    assert started.due_at is not None
    assert started.due_at - started.started_at == timedelta(seconds=3)
    assert started.due_at <= ended.timestamp <= started.due_at + timedelta(seconds=2)
    assert ended.outcome == "due"
    assert events[-1].timestamp >= started.due_at


def test_signals_sent_before_and_during_the_wait_reach_the_next_step(
    deployment: Deployment, store: Stepline, target: str
) -> None:
    api = deployment.cluster.api(workers=0)
    deployment.cluster.worker()
    session_id = created(
        store,
        target,
        'wait for signal "first"',
        'wait for signal "payment.received" within 1h',
        'POST /effects with {"name": "{{vars.first}} {{vars.payment_received}}"}',
    )
    reaches(store, session_id, SessionStatus.WAITING)

    early = deployment.cli(  # before its wait: kept in the mailbox
        "signal",
        str(session_id),
        "payment.received",
        "--data",
        '{"ref": "PAY-1"}',
        "--tenant",
        "acme",
        "--json",
    )
    assert json.loads(early.stdout)["taken"] is False
    during = deployment.cli(  # the one the session waits for now
        "signal",
        str(session_id),
        "first",
        "--data",
        '"A"',
        "--api",
        api,
        "--key",
        deployment.keys["alice"],
        "--json",
    )
    assert json.loads(during.stdout)["taken"] is True
    reaches(store, session_id, SessionStatus.COMPLETED)

    assert [d["effect"] for d in effects_of(target)["delivered"]] == ['A {"ref": "PAY-1"}']
    first, payment = wait_ends(store, session_id)
    assert (first.actor, payment.data) == ("alice", {"ref": "PAY-1"})
