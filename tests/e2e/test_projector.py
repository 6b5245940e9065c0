"""One projector per deployment, across real processes: a leader, and another when it dies."""

from __future__ import annotations

import signal
from uuid import UUID

import httpx
import psycopg

from domain.session import SessionStatus
from engine.live.leadership import current_leader
from engine.store.app import Stepline
from engine.store.locks import PROJECTOR
from projections import session_progress
from tests.e2e.conftest import Cluster, side_effect_steps, wait_until_ended
from tests.waiting import eventually


def leader_pid(database_url: str) -> int | None:
    """The pid of the process leading the views now (its holder is host:pid:role)."""
    with psycopg.connect(database_url) as conn:
        leader = current_leader(conn)
    return None if leader is None else int(leader.holder.split(":")[1])


def lock_holders(database_url: str) -> int:
    """How many backends hold the projector's lock."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = %s AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (PROJECTOR,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def progress_statuses(database_url: str, session_ids: list[UUID]) -> dict[UUID, str | None]:
    with psycopg.connect(database_url) as conn:
        rows = {i: session_progress.find(conn, i) for i in session_ids}
    return {i: None if row is None else row.status for i, row in rows.items()}


def create_through(api: str, target: str, count: int) -> list[UUID]:
    with httpx.Client(base_url=api, timeout=30) as client:
        session_ids = []
        for n in range(count):
            body = {
                "name": f"leader chaos {n}",
                "executor": "http",
                "base_url": target,
                # Slow enough that the views, which lag the log, catch the sessions running
                # (two 150 ms steps could start and end between two catch-ups under load).
                "steps": side_effect_steps(f"s{n}", slow_ms=600),
            }
            response = client.post("/v1/sessions", json=body)
            assert response.status_code == 201, response.text
            session_ids.append(UUID(response.json()["session_id"]))
    return session_ids


def test_killing_the_views_leader_hands_the_lead_to_another_process_and_the_views_keep_up(
    cluster: Cluster, target: str, store: Stepline
) -> None:
    url = cluster.database_url
    workers = [cluster.worker(concurrency=4) for _ in range(3)]
    first = eventually(lambda: leader_pid(url), "a worker leads the views")
    victim = next(w for w in workers if w.pid == first)
    api = cluster.api(workers=0)  # it stands in reserve: a worker leads while one is up
    session_ids = create_through(api, target, 12)
    eventually(
        lambda: "running" in progress_statuses(url, session_ids).values(),
        "the views show sessions running",
    )
    assert lock_holders(url) == 1

    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)

    second = eventually(
        lambda: (pid := leader_pid(url)) not in (None, first) and pid,
        "another process took the lead",
    )
    assert second in {w.pid for w in workers if w is not victim}
    assert lock_holders(url) == 1
    wait_until_ended(store, session_ids)
    completed = dict.fromkeys(session_ids, SessionStatus.COMPLETED.value)
    eventually(
        lambda: progress_statuses(url, session_ids) == completed,
        "every session's progress view reached its final state",
    )
    with httpx.Client(base_url=api, timeout=30) as client:  # a read waits for the new leader
        assert {client.get(f"/v1/sessions/{i}").json()["status"] for i in session_ids} == {
            SessionStatus.COMPLETED.value
        }
