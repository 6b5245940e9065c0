"""Workers across processes: exactly-once work, kill -9 chaos, clean hand-over, database outage."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psutil
import psycopg
from psycopg import sql

from domain.session import SessionStatus, WorkflowSession
from engine.store import locks
from engine.store.app import Stepline
from engine.store.event_store import CREATED_CHANNEL
from engine.worker import OFFER_TTL_S
from tests.e2e.conftest import (
    STEPLINE,
    Cluster,
    create_sessions,
    effects_of,
    events_of,
    side_effect_steps,
    wait_until_ended,
)
from tests.waiting import eventually


def interrupted_keys(store: Stepline, session_ids: list[UUID]) -> set[str]:
    """Idempotency keys of the commands left without a result by a dead owner."""
    keys = set()
    for session_id in session_ids:
        issued: dict[str, str] = {}
        for event in events_of(store, session_id):
            if isinstance(event, WorkflowSession.CommandIssued):
                issued[event.command_id] = event.idempotency_key
            elif isinstance(event, WorkflowSession.CommandFinished) and _interrupted(event):
                keys.add(issued[event.command_id])
    return keys


def _interrupted(finished: WorkflowSession.CommandFinished) -> bool:
    return finished.error is not None and finished.error["code"] == "COMMAND_INTERRUPTED"


def assert_every_step_ran_once(store: Stepline, session_ids: list[UUID]) -> None:
    for session_id in session_ids:
        events = events_of(store, session_id)
        starts = Counter(e.step_index for e in events if isinstance(e, WorkflowSession.StepStarted))
        completions = Counter(
            e.step_index for e in events if isinstance(e, WorkflowSession.StepCompleted)
        )
        steps = len(store.get_session(session_id).steps)
        assert starts == completions == dict.fromkeys(range(steps), 1), session_id


def test_two_workers_and_an_api_run_every_command_exactly_once(
    cluster: Cluster, store: Stepline, target: str
) -> None:
    api = cluster.api(workers=0)
    cluster.worker(concurrency=4)
    cluster.worker(concurrency=4)
    session_ids = []
    with httpx.Client(base_url=api, timeout=30) as client:
        for n in range(30):
            body = {
                "name": f"exactly once {n}",
                "executor": "http",
                "base_url": target,
                "steps": side_effect_steps(f"s{n}", slow_ms=50),
            }
            response = client.post("/v1/sessions", json=body)
            assert response.status_code == 201, response.text
            session_ids.append(UUID(response.json()["session_id"]))
    wait_until_ended(store, session_ids)

    assert {store.get_session(i).status for i in session_ids} == {SessionStatus.COMPLETED}
    seen = effects_of(target)
    names = Counter(d["effect"] for d in seen["delivered"])
    assert names == {f"s{n}-{e}": 1 for n in range(30) for e in range(2)}  # each sent once
    assert len(seen["applied"]) == 60
    assert interrupted_keys(store, session_ids) == set()  # nothing was taken from anybody
    assert_every_step_ran_once(store, session_ids)


def test_a_new_session_runs_and_reads_as_ended_before_any_view_shows_it(
    cluster: Cluster, store: Stepline, target: str, fresh_database_url: str
) -> None:
    """The API announces a session it saved, and a worker with a free slot takes it at once;
    a read of the session folds in what the views have not applied. Here no process can
    lead the views (the test holds their lock): the session index never shows the session,
    and still it runs to the end, and the API reads it completed without a view caught up."""
    with psycopg.connect(fresh_database_url, autocommit=True) as views_lock:
        views_lock.execute("SELECT pg_advisory_lock(%s)", (locks.PROJECTOR,))
        api = cluster.api(workers=0)
        cluster.worker(concurrency=2)
        eventually(lambda: _listening_for_new_sessions(views_lock), "a worker listening", 60)
        body = {
            "name": "announced",
            "executor": "http",
            "base_url": target,
            "steps": ["GET /slow?ms=0", "expect status 200"],
        }
        with httpx.Client(base_url=api, timeout=30) as client:
            response = client.post("/v1/sessions", json=body)
            assert response.status_code == 201, response.text
            session_id = UUID(response.json()["session_id"])
            wait_until_ended(store, [session_id], timeout_s=60)
            read = client.get(f"/v1/sessions/{session_id}").json()
        assert (read["status"], read["completed_steps"]) == ("completed", 2)
        positions = dict(views_lock.execute("SELECT view, position FROM projection_tracking"))
        assert positions.get("session_index", 0) == positions.get("session_progress", 0) == 0
        indexed = views_lock.execute("SELECT count(*) FROM session_index").fetchone()
        assert indexed == (0,)


def test_forged_or_malformed_offers_neither_stop_a_worker_nor_drive_a_session(
    cluster: Cluster, store: Stepline, target: str, fresh_database_url: str
) -> None:
    """Anything that can NOTIFY may send the workers a bad offer: garbage, a non-text id, a
    blank tenant, an id of no session, or a real session named as another tenant's. None stops
    the worker's follower or claim loop, and none gets a session driven: only an offer the log
    bears out (the session is there, and the named tenant's) is taken. The views are held
    still (the test holds their lock), so offers are the only way a session starts here."""
    with psycopg.connect(fresh_database_url, autocommit=True) as views_lock:
        views_lock.execute("SELECT pg_advisory_lock(%s)", (locks.PROJECTOR,))
        cluster.worker(concurrency=2)
        eventually(lambda: _listening_for_new_sessions(views_lock), "a worker listening", 60)
        [session_id] = create_sessions(store, target, 1, slow_ms=0, effects=1)  # acme's
        forged = [
            "not json",
            json.dumps([1, "acme"]),
            json.dumps([["x"], "acme"]),
            json.dumps([str(session_id), ""]),
            json.dumps([str(session_id), None]),
            json.dumps([str(UUID(int=7)), "acme"]),
            json.dumps([str(session_id), "globex"]),
        ]
        log = cluster.logs / "worker-0.log"
        sent_at = -OFFER_TTL_S

        def forged_offers_dropped() -> bool:
            nonlocal sent_at
            if time.monotonic() - sent_at > OFFER_TTL_S / 2:  # on a busy machine an offer
                for payload in forged:  # may wait out its time for a slot: sent again
                    views_lock.execute("SELECT pg_notify(%s, %s)", (CREATED_CHANNEL, payload))
                sent_at = time.monotonic()
            return log.read_text().count("an offer the log does not bear out") >= 2

        eventually(forged_offers_dropped, "the offers the log does not bear out dropped", 60)
        assert store.get_session(session_id).status is SessionStatus.PENDING
        count_leases = "SELECT count(*) FROM session_leases"
        eventually(  # the leases the forged offers took were dropped
            lambda: views_lock.execute(count_leases).fetchone() == (0,), "no lease left"
        )
        assert store.get_session(session_id).status is SessionStatus.PENDING

        views_lock.execute(
            "SELECT pg_notify(%s, %s)", (CREATED_CHANNEL, json.dumps([str(session_id), "acme"]))
        )
        wait_until_ended(store, [session_id], timeout_s=60)
    assert store.get_session(session_id).status is SessionStatus.COMPLETED


def _listening_for_new_sessions(conn: psycopg.Connection[Any]) -> bool:
    """Whether a worker listens for new sessions (the last channel its follower LISTENs to)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
        (f'LISTEN "{CREATED_CHANNEL}"',),
    ).fetchone()
    return bool(row and row[0])


def test_workers_killed_at_random_lose_nothing_and_repeat_only_what_was_in_flight(
    cluster: Cluster, store: Stepline, target: str
) -> None:
    session_ids = create_sessions(store, target, 20, slow_ms=250, effects=3)
    workers = [cluster.worker(concurrency=3), cluster.worker(concurrency=3)]
    chance = random.Random(8)
    kills = 0
    deadline = time.monotonic() + 120
    while kills < 10 and time.monotonic() < deadline:
        time.sleep(chance.uniform(0.1, 0.6))  # a random moment to strike, not a wait
        driving = [w for w in workers if w.pid in _pids_holding_leases(cluster.database_url)]
        if not driving:
            continue  # nobody is mid-session yet: a kill now would prove nothing
        victim = chance.choice(driving)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        kills += 1
        workers[workers.index(victim)] = cluster.worker(concurrency=3)
    wait_until_ended(store, session_ids)

    assert kills == 10, f"only {kills} workers were caught driving a session before the deadline"
    assert _takeovers(cluster.database_url) > 0  # the kills did hit sessions being driven
    assert {store.get_session(i).status for i in session_ids} == {SessionStatus.COMPLETED}
    assert_every_step_ran_once(store, session_ids)
    seen = effects_of(target)
    by_name: dict[str, set[str]] = defaultdict(set)
    for delivery in seen["delivered"]:
        by_name[delivery["effect"]].add(delivery["key"])
    assert set(by_name) == {f"s{n}-{e}" for n in range(20) for e in range(3)}
    in_flight = interrupted_keys(store, session_ids)
    for name, keys in by_name.items():
        assert len(keys) == 1, f"{name} was sent under different keys: {keys}"
    repeated = {d["key"] for d in seen["delivered"]} - {
        key for key, n in Counter(d["key"] for d in seen["delivered"]).items() if n == 1
    }
    assert repeated <= in_flight  # only commands in flight at a kill were sent again
    assert len(seen["applied"]) == 60  # and the app applied each effect once, by its key


def test_sigterm_hands_sessions_to_another_worker_without_waiting_for_expiry(
    cluster: Cluster, store: Stepline, target: str
) -> None:
    # A lease far longer than the test: a session that moves to the second worker can only
    # have been handed back, never left to expire.
    cluster.env["STEPLINE_LEASE_MS"] = "600000"
    session_ids = create_sessions(store, target, 4, slow_ms=400, effects=3)
    leaving = cluster.worker(concurrency=4)
    eventually(
        lambda: _lease_owners(cluster.database_url, session_ids) == set(session_ids),
        "the first worker holds all four sessions",
        within_s=60,
    )
    cluster.worker(concurrency=4)

    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=60) == 0
    wait_until_ended(store, session_ids, timeout_s=120)

    assert {store.get_session(i).status for i in session_ids} == {SessionStatus.COMPLETED}
    assert interrupted_keys(store, session_ids) == set()  # stopped at safe points, cleanly
    assert_every_step_ran_once(store, session_ids)
    assert _takeovers(cluster.database_url) == 0  # handed back, never taken from a dead owner


def test_serve_drives_sessions_in_a_worker_process_it_restarts_after_kill_9(
    cluster: Cluster, store: Stepline, target: str
) -> None:
    api = cluster.api(workers=3)  # its slots in the worker process `serve` starts by default
    serve = psutil.Process(cluster.processes[0].pid)
    session_ids = _posted(api, target, 6)
    eventually(
        lambda: _pids_holding_leases(cluster.database_url) & _children(serve),
        "serve's worker process drives sessions",
        within_s=60,
    )
    (first,) = _children(serve)
    assert serve.pid not in _pids_holding_leases(cluster.database_url)

    psutil.Process(first).kill()
    eventually(lambda: _children(serve) - {first}, "serve starts another worker", within_s=30)
    wait_until_ended(store, session_ids)

    assert {store.get_session(i).status for i in session_ids} == {SessionStatus.COMPLETED}
    assert _takeovers(cluster.database_url) > 0  # the kill did hit sessions being driven
    assert_every_step_ran_once(store, session_ids)
    applied = effects_of(target)["applied"]
    assert sorted(a["name"] for a in applied) == sorted(
        f"s{n}-{e}" for n in range(6) for e in range(3)
    )  # each effect applied once, the ones in flight at the kill included
    assert httpx.get(f"{api}/health").json()["worker"] is True


def test_a_worker_process_whose_serve_is_killed_hands_its_sessions_back_and_stops(
    cluster: Cluster, store: Stepline, target: str
) -> None:
    # A lease far longer than the test: a session another worker finishes can only have been
    # handed back by the orphaned worker, never left to expire.
    cluster.env["STEPLINE_LEASE_MS"] = "600000"
    api = cluster.api(workers=4)
    serve = psutil.Process(cluster.processes[0].pid)
    session_ids = _posted(api, target, 4)
    eventually(
        lambda: _lease_owners(cluster.database_url, session_ids) == set(session_ids),
        "serve's worker process holds all four sessions",
        within_s=60,
    )
    (orphan,) = (psutil.Process(pid) for pid in _children(serve))

    serve.kill()
    orphan.wait(timeout=30)  # it sees its serve gone and stops (psutil raises on a timeout)
    cluster.worker(concurrency=4)
    wait_until_ended(store, session_ids, timeout_s=120)

    assert {store.get_session(i).status for i in session_ids} == {SessionStatus.COMPLETED}
    assert interrupted_keys(store, session_ids) == set()  # stopped at safe points, cleanly
    assert_every_step_ran_once(store, session_ids)
    assert _takeovers(cluster.database_url) == 0  # handed back, never taken from a dead owner


def _posted(api: str, target: str, count: int) -> list[UUID]:
    session_ids = []
    with httpx.Client(base_url=api, timeout=30) as client:
        for n in range(count):
            body = {
                "name": f"through serve {n}",
                "executor": "http",
                "base_url": target,
                "steps": side_effect_steps(f"s{n}", slow_ms=300, effects=3),
            }
            response = client.post("/v1/sessions", json=body)
            assert response.status_code == 201, response.text
            session_ids.append(UUID(response.json()["session_id"]))
    return session_ids


def _children(process: psutil.Process) -> set[int]:
    return {child.pid for child in process.children() if child.is_running()}


def test_the_deployment_rides_out_a_database_outage(
    cluster: Cluster, store: Stepline, target: str, postgres_server_url: str
) -> None:
    api = cluster.api(workers=2)
    cluster.worker(concurrency=3)
    session_ids = create_sessions(store, target, 8, slow_ms=300, effects=3)
    database = psycopg.conninfo.conninfo_to_dict(cluster.database_url)["dbname"]
    eventually(lambda: _under_way(store, session_ids), "sessions are under way")

    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        _refuse_connections(admin, str(database), refuse=True)
        try:
            health = _wait_for_health(api, 503)
        finally:
            _refuse_connections(admin, str(database), refuse=False)
    assert health["database"] is False
    recovered = _wait_for_health(api, 200)
    wait_until_ended(store, session_ids)

    assert recovered["database"] is True
    assert {store.get_session(i).status for i in session_ids} == {SessionStatus.COMPLETED}
    assert_every_step_ran_once(store, session_ids)
    assert len(effects_of(target)["applied"]) == 24  # every effect once, whatever was re-sent


def test_stepline_workers_lists_each_worker_with_its_sessions(
    cluster: Cluster, store: Stepline, target: str
) -> None:
    # Still running when listed, however slow the command line is to start on a busy machine.
    session_ids = create_sessions(store, target, 2, slow_ms=3_000, effects=3)
    process = cluster.worker(concurrency=4)
    eventually(
        lambda: _lease_owners(cluster.database_url, session_ids) == set(session_ids),
        "the worker holds both sessions",
        within_s=60,
    )

    listed = subprocess.run(
        [STEPLINE, "workers", "--json"], env=cluster.env, capture_output=True, check=True
    )

    (row,) = json.loads(listed.stdout)
    assert row["worker_id"].split(":")[1] == str(process.pid)
    assert row["role"] == "worker"
    assert {lease["session_id"] for lease in row["sessions"]} == {str(i) for i in session_ids}


def test_stepline_run_drives_its_session_under_a_lease_no_worker_touches(
    cluster: Cluster, store: Stepline, target: str, tmp_path: Path
) -> None:
    cluster.worker(concurrency=4)
    workflow = tmp_path / "slow.yaml"
    steps = "".join(f"  - {json.dumps(step)}\n" for step in side_effect_steps("run", 300, 3))
    workflow.write_text(f"name: run under a lease\nbase_url: {target}\nsteps:\n{steps}")
    run = cluster.start("run", str(workflow))
    owners: set[str] = set()
    deadline = time.monotonic() + 120
    while run.poll() is None:
        assert time.monotonic() < deadline, "stepline run never finished"
        owners |= _owner_roles(cluster.database_url)
        time.sleep(0.05)

    assert run.returncode == 0
    assert owners == {"run"}  # the worker never held it
    assert _takeovers(cluster.database_url) == 0
    assert Counter(d["effect"] for d in effects_of(target)["delivered"]) == {
        "run-0": 1,
        "run-1": 1,
        "run-2": 1,
    }


def _live_leases(database_url: str) -> list[tuple[UUID, str]]:
    """(session, owner) of every unexpired lease; none while no worker has made the table.
    An owner is host:pid:role:suffix."""
    with psycopg.connect(database_url) as conn:
        if not _has_lease_table(conn):
            return []
        return conn.execute(
            "SELECT session_id, owner FROM session_leases WHERE lease_until > now()"
        ).fetchall()


def _owner_roles(database_url: str) -> set[str]:
    return {owner.split(":")[2] for _, owner in _live_leases(database_url)}


def _lease_owners(database_url: str, session_ids: list[UUID]) -> set[UUID]:
    return {session_id for session_id, _ in _live_leases(database_url)} & set(session_ids)


def _pids_holding_leases(database_url: str) -> set[int]:
    return {int(owner.split(":")[1]) for _, owner in _live_leases(database_url)}


def _has_lease_table(conn: psycopg.Connection[Any]) -> bool:
    found = conn.execute("SELECT to_regclass('session_leases')").fetchone()
    return found is not None and found[0] is not None


def _takeovers(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(takeovers), 0) FROM stepline_workers").fetchone()
    assert row is not None
    return int(row[0])


def _under_way(store: Stepline, session_ids: list[UUID]) -> bool:
    """Some session has finished a command: the outage will cut sessions mid-way."""
    return any(
        isinstance(event, WorkflowSession.CommandFinished)
        for session_id in session_ids
        for event in events_of(store, session_id)
    )


def _refuse_connections(admin: psycopg.Connection[object], database: str, refuse: bool) -> None:
    """The database goes away for everyone: no new connections, every open one cut."""
    allow = sql.SQL("false" if refuse else "true")
    admin.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(database), allow)
    )
    if refuse:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )


def _wait_for_health(api: str, status: int) -> dict[str, object]:
    def answered() -> dict[str, object] | None:
        response = httpx.get(f"{api}/health", timeout=10)
        return response.json() if response.status_code == status else None  # type: ignore[no-any-return]

    return eventually(answered, f"/health answers {status}", within_s=60)
