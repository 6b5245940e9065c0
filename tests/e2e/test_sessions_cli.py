"""`stepline sessions` as a person runs it: a real process, against the database directly and
against a real `stepline serve`, while real workers run the sessions."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api.http.auth import new_key
from domain.session import StepSpec, WorkflowSession
from engine.store.app import Stepline
from tests import workloads
from tests.e2e.conftest import STEPLINE, Cluster, events_of
from tests.integration.conftest import wait_for


def slow_session(store: Stepline, target: str, name: str, tenant: str, steps: int = 8) -> UUID:
    return workloads.create_session(
        store,
        name=name,
        steps=[StepSpec("GET /slow?ms=400")] * steps,
        tenant=tenant,
        actor="test",
        config={"executor": "http", "base_url": target},
        labels={"team": "ops", "run": name},
    )


class Cli:
    """`stepline sessions …` in a process of its own, with the deployment's settings."""

    def __init__(self, env: dict[str, str], *where: str, columns: int = 200) -> None:
        self.env = {**env, "COLUMNS": str(columns)}
        self.where = list(where)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [STEPLINE, "sessions", *args, *self.where],
            env=self.env,
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


def session_with_id(store: Stepline, session_id: str, name: str, tenant: str) -> UUID:
    """A session whose id the test chooses, so that ids can share their first characters."""
    session = WorkflowSession._create(
        WorkflowSession.Created,
        id=UUID(session_id),
        name=name,
        steps=[{"text": "GET /slow?ms=10", "expect": None}],
        config={"executor": "http", "base_url": "http://127.0.0.1:9"},
        tenant=tenant,
        labels={},
        actor="test",
        replay_of=None,
        forked_from=None,
    )
    store.save(session)
    return session.id


def test_a_session_is_named_by_the_start_of_its_id_within_the_tenant(
    deployment: Keyed, store: Stepline
) -> None:
    first = session_with_id(store, "5e55a000-0000-4000-8000-000000000001", "first", "acme")
    second = session_with_id(store, "5e55b000-0000-4000-8000-000000000002", "second", "acme")
    theirs = session_with_id(store, "5e55c000-0000-4000-8000-000000000003", "theirs", "globex")
    api = deployment.cluster.api()
    env = deployment.cluster.env
    through_api = ("--api", api, "--key")
    for cli, other in (
        (Cli(env, "--tenant", "acme"), Cli(env, "--tenant", "globex")),
        (Cli(env, *through_api, deployment.alice), Cli(env, *through_api, deployment.bob)),
    ):
        assert cli.json("show", "5e55a")["session"]["name"] == "first"
        assert cli.json("show", "5E55A000-0000")["session"]["session_id"] == str(first)
        assert other.json("show", "5e55")["session"]["session_id"] == str(theirs)
        assert [e["type"] for e in cli.json_lines("events", "5e55b")] == ["Created"]

        ambiguous = cli("show", "5e55", ok=False)
        assert ambiguous.returncode == 2
        assert "SESSION_ID_AMBIGUOUS" in ambiguous.stderr
        assert str(first) in ambiguous.stderr
        assert str(second) in ambiguous.stderr
        assert str(theirs) not in ambiguous.stderr
        assert "SESSION_NOT_FOUND" in cli("show", "5e55c", ok=False).stderr
        assert "too short" in cli("show", "5e5", ok=False).stderr

    assert Cli(env, "--tenant", "acme").json("cancel", "5e55b")["status"] == "cancelled"
    history = subprocess.run(
        [STEPLINE, "history", "5e55b", "--tenant", "acme", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert [e["type"] for e in json.loads(history.stdout)] == ["Created", "Cancelled"]


def test_the_list_says_why_a_session_failed_and_shows_every_status_whole_at_120_columns(
    deployment: Keyed, store: Stepline
) -> None:
    failed = workloads.failed(store)
    # a name, labels and steps that need room, as real ones do
    completed = workloads.create_session(
        store,
        name="nightly import of the customer accounts",
        steps=[StepSpec(f"step {n}") for n in range(12)],
        tenant="acme",
        actor="test",
        labels={"team": "ops", "suite": "smoke", "run": "nightly"},
    )
    for n in range(12):
        workloads.start_step(store, completed, n)
        workloads.complete_step(store, completed, n, summary="imported")
    workloads.complete_session(store, completed)
    cli = Cli(deployment.cluster.env, "--tenant", "acme", columns=120)

    table = cli("list").stdout

    assert max(len(line) for line in table.splitlines()) <= 120
    for session_id, status in ((failed, "failed"), (completed, "completed")):
        row = next(line for line in table.splitlines() if str(session_id)[:8] in line)
        assert f" {status} " in row
    assert "VALIDATION_FAILED:" in table
    assert "no such page" in table
    listed = {s["session_id"]: s for s in cli.json("list")["items"]}
    assert (listed[str(failed)]["error_code"], listed[str(failed)]["error_message"]) == (
        "VALIDATION_FAILED",
        "no such page",
    )
    assert "failed because VALIDATION_FAILED: no such page" in cli("show", str(failed)).stdout


def test_a_session_gone_on_past_a_failed_step_is_listed_completed_with_the_failure_shown(
    deployment: Keyed, store: Stepline
) -> None:
    session_id = workloads.continued(store)  # step 1 failed, on_failure: continue
    cli = Cli(deployment.cluster.env, "--tenant", "acme", columns=160)

    listed = cli("list").stdout
    shown = cli("show", str(session_id)).stdout

    row = next(line for line in listed.splitlines() if str(session_id)[:8] in line)
    assert " completed " in row
    assert "2/3 100%, 1 failed" in row
    assert "2/3 steps, 1 failed and went on past" in shown
    assert "failed, continued" in shown
    assert "max_turns 2, on_failure continue" in shown  # step 1's own policy, under its text
    assert "retries 2, retry_backoff_ms 0, timeout_ms 500" in shown


class Lines:
    """A process's stdout, read line by line as it comes, without blocking the test."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self.process = process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.seen.append(line)

    def wait_for(self, *words: str) -> str:
        """The first line holding every one of `words`, once it has been printed."""

        def found() -> str | None:
            return next((line for line in self.seen if all(w in line for w in words)), None)

        wait_for(lambda: found() is not None, timeout_s=60, what=f"a line with {words}")
        line = found()
        assert line is not None
        return line


def test_watch_off_a_terminal_prints_a_line_for_each_change(
    deployment: Keyed, store: Stepline
) -> None:
    watch = subprocess.Popen(
        [STEPLINE, "sessions", "watch", "--tenant", "acme", "--interval", "0.2"],
        env=deployment.cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(watch)
        session_id = workloads.create(store)
        short = str(session_id)[:8]
        lines.wait_for(short, "pending", "0/2", "2-step workflow")
        workloads.start_step(store, session_id, 0)
        lines.wait_for(short, "running")
        store.cancel(session_id, reason="done watching", actor="test")
        lines.wait_for(short, "cancelled")
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=30)
    assert watch.stderr is not None
    assert watch.returncode == 0, watch.stderr.read()
    assert [line for line in lines.seen if short in line and "pending" in line] == [
        lines.wait_for(short, "pending")
    ]  # a line for a change, not one per redraw


def test_watch_on_a_terminal_redraws_a_table_of_the_sessions_not_yet_ended(
    deployment: Keyed, store: Stepline
) -> None:
    session_id = workloads.create(store)
    workloads.start_step(store, session_id, 0)
    ended = workloads.completed(store)
    terminal, screen = pty.openpty()
    watch = subprocess.Popen(
        [STEPLINE, "sessions", "watch", "--tenant", "acme", "--interval", "0.2"],
        env={**deployment.cluster.env, "COLUMNS": "200", "TERM": "xterm"},
        stdout=screen,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(screen)
    shown = ""
    try:

        def table_drawn() -> bool:
            nonlocal shown
            if select.select([terminal], [], [], 0.5)[0]:
                shown += os.read(terminal, 65536).decode(errors="replace")
            return str(session_id)[:8] in shown and "Ctrl-C stops" in shown

        wait_for(table_drawn, timeout_s=60, what="the table")
    finally:
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
        os.close(terminal)
    assert watch.returncode == 0, err
    assert "running" in shown
    assert str(ended)[:8] not in shown
