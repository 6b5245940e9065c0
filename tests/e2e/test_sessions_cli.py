"""`stepline sessions` as a person runs it: a real process, against the database directly and
against a real `stepline serve`, while real workers run the sessions."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api.auth import new_key
from domain.session import StepSpec
from engine.app import Stepline
from tests.e2e.conftest import STEPLINE, Cluster, events_of, wait_until_ended
from tests.integration.conftest import wait_for


def slow_session(store: Stepline, target: str, name: str, tenant: str, steps: int = 8) -> UUID:
    return store.create_session(
        name=name,
        steps=[StepSpec("GET /slow?ms=400")] * steps,
        tenant=tenant,
        actor="test",
        config={"executor": "http", "base_url": target},
        labels={"team": "ops", "run": name},
    )


class Cli:
    """`stepline sessions …` in a process of its own, with the deployment's settings."""

    def __init__(self, env: dict[str, str], *where: str) -> None:
        self.env = env
        self.where = list(where)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [STEPLINE, "sessions", *args, *self.where],
            env={**self.env, "COLUMNS": "200"},
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self(*args, "--json").stdout.splitlines()]


def status_of(cli: Cli, session_id: UUID) -> str:
    status: str = cli.json("show", str(session_id))["session"]["status"]
    return status


def wait_for_status(cli: Cli, session_id: UUID, status: str) -> None:
    wait_for(lambda: status_of(cli, session_id) == status, timeout_s=60, what=status)


@dataclass
class Keyed:
    """A deployment whose API serves two tenants' keys."""

    cluster: Cluster
    alice: str  # tenant acme
    bob: str  # tenant globex


@pytest.fixture
def deployment(fresh_database_url: str, tmp_path: Path) -> Iterator[Keyed]:
    alice, alice_sha = new_key()
    bob, bob_sha = new_key()
    keys = {
        "alice": {"tenant": "acme", "sha256": alice_sha},
        "bob": {"tenant": "globex", "sha256": bob_sha},
    }
    # A one-event stream buffer: the server cuts a follower's stream at every step's commit,
    # so `events --follow` through the API resumes with Last-Event-ID all along the way (the
    # dashboard's test counts such reconnections).
    cluster = Cluster(
        fresh_database_url,
        tmp_path,
        STEPLINE_API_KEYS=json.dumps(keys),
        STEPLINE_STREAMING_BUFFER_SIZE="1",
    )
    yield Keyed(cluster, alice, bob)
    cluster.stop_all()


def test_against_the_database_a_tenant_lists_follows_and_controls_its_sessions(
    deployment: Keyed, store: Stepline, target: str
) -> None:
    deployment.cluster.worker(concurrency=2)
    cli = Cli(deployment.cluster.env, "--tenant", "acme")
    first = slow_session(store, target, "first", "acme", steps=2)
    second = slow_session(store, target, "second", "acme", steps=100)  # cancelled below
    slow_session(store, target, "someone else's", "globex", steps=1)

    followed = cli("events", str(first), "--follow")  # returns when the session ends
    lines = followed.stdout.strip().splitlines()
    assert len(lines) == len(events_of(store, first))
    assert "Completed" in lines[-1]

    wait_for_status(cli, second, "running")
    paused = cli.json("pause", str(second), "--reason", "look first")
    assert paused["status"] == "paused"
    wait_for_status(cli, second, "paused")
    listed = cli.json("list", "--status", "paused")
    assert [s["session_id"] for s in listed["items"]] == [str(second)]
    assert cli.json("resume", str(second))["status"] == "running"

    everything = cli.json("list")["items"]
    assert {s["name"] for s in everything} == {"first", "second"}
    assert cli.json("list", "--label", "run=first")["items"][0]["session_id"] == str(first)
    shown = cli.json("show", str(first))
    assert shown["session"]["status"] == "completed"
    assert [s["status"] for s in shown["steps"]] == ["completed", "completed"]

    cancelled = cli.json("cancel", str(second), "--reason", "enough")
    assert cancelled["status"] == "cancelled"
    history = cli.json_lines("events", str(second))
    assert [e["version"] for e in history] == list(range(1, len(history) + 1))
    commands = [(e["type"], e["actor"], e["data"].get("reason")) for e in history]
    actor = commands[-1][1]
    assert actor.startswith("cli")
    assert ("Paused", actor, "look first") in commands
    assert ("Cancelled", actor, "enough") in commands

    other = Cli(deployment.cluster.env, "--tenant", "globex")
    assert {s["name"] for s in other.json("list")["items"]} == {"someone else's"}
    refused = other("pause", str(second), ok=False)
    assert refused.returncode == 2
    assert "SESSION_NOT_FOUND" in refused.stderr


def test_through_the_api_with_a_key_the_same_commands_work(
    deployment: Keyed, store: Stepline, target: str
) -> None:
    api = deployment.cluster.api(workers=2)
    as_alice = Cli(
        {**deployment.cluster.env, "STEPLINE_API_URL": api, "STEPLINE_API_KEY": deployment.alice}
    )
    as_bob = Cli(deployment.cluster.env, "--api", api, "--key", deployment.bob)
    session_id = slow_session(store, target, "through the api", "acme", steps=30)

    wait_for_status(as_alice, session_id, "running")
    assert as_alice.json("pause", str(session_id), "--reason", "hold")["status"] == "paused"
    wait_for_status(as_alice, session_id, "paused")
    assert as_alice.json("list", "--status", "paused")["items"][0]["name"] == "through the api"
    assert as_alice.json("resume", str(session_id))["status"] == "running"

    followed = as_alice.json_lines("events", str(session_id), "--follow")
    assert [e["version"] for e in followed] == [
        e.originator_version for e in events_of(store, session_id)
    ]
    assert followed[-1]["type"] == "Completed"
    paused = next(e for e in followed if e["type"] == "Paused")
    assert (paused["actor"], paused["data"]["reason"]) == ("alice", "hold")
    table = as_alice("show", str(session_id)).stdout
    assert "through the api" in table
    assert "completed" in table

    assert as_bob.json("list")["items"] == []
    for args in (["show", str(session_id)], ["cancel", str(session_id)]):
        refused = as_bob(*args, ok=False)
        assert refused.returncode == 2
        assert "SESSION_NOT_FOUND" in refused.stderr
    wrong_key = Cli(deployment.cluster.env, "--api", api, "--key", "sk_not_a_key")("list", ok=False)
    assert "UNAUTHORIZED" in wrong_key.stderr


def test_watch_shows_the_running_sessions_until_interrupted(
    deployment: Keyed, store: Stepline, target: str
) -> None:
    deployment.cluster.worker(concurrency=1)
    session_id = slow_session(store, target, "watched", "acme", steps=20)
    watch = subprocess.Popen(
        [STEPLINE, "sessions", "watch", "--tenant", "acme", "--interval", "0.3"],
        env={**deployment.cluster.env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
    finally:
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    assert str(session_id) in out
    assert "watched" in out
    assert "running" in out
    store.cancel(session_id, reason="done watching", actor="test")
    wait_until_ended(store, [session_id])
