"""A deployment started all at once on a fresh database comes up: the processes' schema work
waits on one lock instead of racing (before, two processes running DDL together died with
`tuple concurrently updated` or a duplicate `pg_type` key)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from engine.store.database import temporary_database
from tests.e2e.conftest import Cluster, free_port
from tests.waiting import eventually

ROUNDS = 20
REFUSED_TARGET = "http://127.0.0.1:9"
"""Nothing listens there: `run` records a session whose one step fails with
HTTP_REQUEST_FAILED (exit 1) having reached nothing. A crash at start-up exits 2."""


@pytest.mark.timeout(900)  # twenty deployments started and stopped: minutes on 2 cores
def test_eight_processes_started_together_on_a_fresh_database_all_come_up(
    postgres_server_url: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "refused.yaml"
    workflow.write_text(f"name: start-up race\nsteps:\n  - GET {REFUSED_TARGET}/\n")
    for round_number in range(ROUNDS):
        logs = tmp_path / f"round-{round_number}"
        logs.mkdir()
        with temporary_database(postgres_server_url, "stepline_startup") as url:
            cluster = Cluster(url, logs)
            try:
                _start_all_and_check(cluster, workflow, f"round {round_number}")
            finally:
                cluster.stop_all()


def _start_all_and_check(cluster: Cluster, workflow: Path, label: str) -> None:
    ports = [free_port(), free_port()]
    servers = [cluster.start("serve", "--port", str(p), "--workers", "0") for p in ports]
    workers = [cluster.worker(concurrency=1) for _ in range(2)]
    runs = [cluster.start("run", str(workflow)) for _ in range(2)]
    lists = [cluster.start("sessions", "list") for _ in range(2)]

    for process in runs + lists:
        process.wait(timeout=120)
    output = _logs(cluster)
    assert [p.returncode for p in lists] == [0, 0], f"{label}: sessions list failed\n{output}"
    assert [p.returncode for p in runs] == [1, 1], f"{label}: run crashed\n{output}"
    assert output.count("failed: HTTP_REQUEST_FAILED") == 2, (
        f"{label}: the runs never ran\n{output}"
    )
    for port in ports:
        eventually(_healthy(port), f"{label}: serve on {port} answers /health", within_s=60)
    eventually(
        lambda: _registered_workers(cluster.database_url) == {w.pid for w in workers},
        f"{label}: both workers registered",
        within_s=60,
    )
    assert all(p.poll() is None for p in servers + workers), f"{label}: one died\n{output}"


def _healthy(port: int) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    return answers


def _registered_workers(database_url: str) -> set[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT pid FROM stepline_workers WHERE role = 'worker'").fetchall()
    return {row[0] for row in rows}


def _logs(cluster: Cluster) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')}"
        for log in sorted(cluster.logs.glob("*.log"))
    )
