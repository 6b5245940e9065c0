"""Throughput and start latency with 1, 2 and 4 worker processes on one database.

    python -m bench.workers [--sessions 200] [--workers 1,2,4] [--concurrency 10]

For each count, a fresh database, that many `stepline worker` processes, and `--sessions`
sessions of 5 quick HTTP steps against the example app on loopback, created from this process
as fast as it can. Printed: sessions/s (first creation to last completion), the CPU seconds
all of Stepline's processes spent per 1,000 steps of that burst (this process and every
worker, their children included: what must stay flat as workers are added, so throughput can
grow with machines), the same for the PostgreSQL backends of the bench's database, the p50/p99
time from a session's creation to its first step starting, and, as the baseline measured in
the same run, how long raw psycopg inserts of the same number of event rows take.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from uuid import UUID

import httpx
import psutil
import psycopg

from api.cli.examples import EXAMPLES
from bench.api import percentiles
from bench.appends import bench_database, raw_inserts
from domain.dev_mode import DEV_TENANT
from domain.session import StepSpec, WorkflowSession
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests import workloads

STEPLINE = str(Path(sys.executable).parent / "stepline")
IDLE_SAMPLES = 20
ENDINGS = ("Completed", "Failed", "Cancelled", "Expired")
STEPS = ["GET /login", "expect status 200", "GET /todos", "expect status 401", "GET /login"]


@dataclass(frozen=True)
class Round:
    workers: int
    sessions: int
    seconds: float
    start_ms: list[float]
    idle_start_ms: list[float]
    events: int
    cpu_s: float
    """Stepline's processes (this one and the workers) during the burst."""
    database_cpu_s: float
    """The PostgreSQL backends serving the bench's database during the burst."""

    @property
    def steps(self) -> int:
        return self.sessions * len(STEPS)


@contextmanager
def target_process() -> Iterator[str]:
    """The example app in a process of its own, so this one's work does not slow it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "target_app.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base_url}/login", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_workers(
    url: str, count: int, concurrency: int, logs: Path
) -> list[subprocess.Popen[bytes]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env = {**clean, "STEPLINE_DATABASE_URL": url, "STEPLINE_LOG_LEVEL": "WARNING"}
    return [
        subprocess.Popen(
            [STEPLINE, "worker", "--concurrency", str(concurrency)],
            env={**env, "STEPLINE_DATA_DIR": str(logs)},
            stdout=(logs / f"worker-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(count)
    ]


def wait_for_workers(url: str, count: int, logs: Path) -> None:
    import psycopg  # noqa: PLC0415

    for _ in range(600):
        with psycopg.connect(url) as conn:
            table = conn.execute("SELECT to_regclass('stepline_workers')").fetchone()
            if table and table[0]:
                row = conn.execute("SELECT count(*) FROM stepline_workers").fetchone()
                if row and row[0] >= count:
                    return
        time.sleep(0.1)
    output = "\n".join(log.read_text() for log in logs.glob("*.log"))
    raise RuntimeError(f"the workers did not start:\n{output}")


def run_round(workers: int, sessions: int, concurrency: int, target: str) -> Round:
    with bench_database() as url, TemporaryDirectory() as logs:
        processes = start_workers(url, workers, concurrency, Path(logs))
        app = Stepline(eventsourcing_env(url), cache_size=0)
        try:
            wait_for_workers(url, workers, Path(logs))
            idle = []
            for n in range(IDLE_SAMPLES):  # one at a time: the start latency of idle workers
                idle.append(create(app, target, n))
                wait_until_ended(url, n + 1)
            stepline = [psutil.Process(), *(psutil.Process(p.pid) for p in processes)]
            cpu_before, database_before = cpu_seconds(stepline), backend_cpu(url)
            ids = [create(app, target, n) for n in range(sessions)]
            wait_until_ended(url, IDLE_SAMPLES + sessions)
            cpu_s = cpu_seconds(stepline) - cpu_before
            database_cpu_s = sum(backend_cpu(url, since=database_before).values())
            return measure(app, workers, ids, idle, (cpu_s, database_cpu_s))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
            app.close()


def create(app: Stepline, target: str, n: int) -> UUID:
    return workloads.create_session(
        app,
        name=f"bench {n}",
        steps=[StepSpec(text) for text in STEPS],
        tenant=DEV_TENANT,
        actor="bench",
        config={"executor": "http", "base_url": target},
    )


def wait_until_ended(url: str, count: int) -> None:
    """Count the sessions' ending events in the log: cheap enough not to slow the workers."""
    ends = [f"domain.session:WorkflowSession.{end}" for end in ENDINGS]
    deadline = time.monotonic() + 600
    with psycopg.connect(url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM stepline_events WHERE topic = ANY(%s)", (ends,)
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            time.sleep(0.05)
    raise RuntimeError("the sessions did not end in time")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system time of the processes and of their children that have ended."""
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
    return total


def backend_cpu(url: str, since: dict[int, float] | None = None) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the bench's database (less what it
    had used by `since`, for a backend that was there then)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    used = {}
    for (pid,) in rows:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue  # it ended meanwhile
        used[pid] = times.user + times.system - (since or {}).get(pid, 0.0)
    return used


def measure(
    app: Stepline, workers: int, ids: list[UUID], idle: list[UUID], cpu: tuple[float, float]
) -> Round:
    first_created, last_ended, start_ms, events = float("inf"), 0.0, [], 0
    for session_id in ids:
        history = app.history(session_id)
        created = history[0].timestamp.timestamp()
        first_created = min(first_created, created)
        last_ended = max(last_ended, history[-1].timestamp.timestamp())
        start_ms.append(start_latency_ms(history))
        events += len(history)
    idle_ms = [start_latency_ms(app.history(session_id)) for session_id in idle]
    seconds = last_ended - first_created
    return Round(workers, len(ids), seconds, start_ms, idle_ms, events, *cpu)


def start_latency_ms(history: list[WorkflowSession.Event]) -> float:
    if not isinstance(history[-1], WorkflowSession.Completed):
        raise RuntimeError(f"a session ended {type(history[-1]).__name__}")
    started = next(e for e in history if isinstance(e, WorkflowSession.StepStarted))
    return (started.timestamp - history[0].timestamp).total_seconds() * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=10, help="slots per worker")
    arguments = parser.parse_args()
    counts = [int(n) for n in arguments.workers.split(",")]

    with target_process() as target:
        rounds = [run_round(n, arguments.sessions, arguments.concurrency, target) for n in counts]
    with bench_database() as url:
        raw_per_s = raw_inserts(url, rounds[0].events)

    print(
        f"{arguments.sessions} sessions of {len(STEPS)} HTTP steps, "
        f"{arguments.concurrency} slots per worker, on {os.cpu_count()} cores"
    )
    header = (
        "workers",
        "sessions/s",
        "vs 1",
        "CPU s/1k steps",
        "vs 1",
        "db CPU s/1k steps",
        "start p50/p99 ms",
        "idle start p50/p99 ms",
    )
    print("{:>7} {:>10} {:>6} {:>14} {:>6} {:>17} {:>18} {:>22}".format(*header))
    for result in rounds:
        p50, p99 = percentiles(result.start_ms)
        idle50, idle99 = percentiles(result.idle_start_ms)
        rate = result.sessions / result.seconds
        base = rounds[0].sessions / rounds[0].seconds
        cpu = result.cpu_s / result.steps * 1000
        cpu_base = rounds[0].cpu_s / rounds[0].steps * 1000
        database_cpu = result.database_cpu_s / result.steps * 1000
        print(
            f"{result.workers:>7} {rate:>10.1f} {rate / base:>5.2f}x {cpu:>14.2f} "
            f"{cpu / cpu_base:>5.2f}x {database_cpu:>17.2f} "
            f"{p50:>9.1f} /{p99:>7.1f} {idle50:>13.1f} /{idle99:>7.1f}"
        )
    raw_s = rounds[0].events / raw_per_s
    print(
        f"baseline: raw psycopg inserts of the same {rounds[0].events} event rows take "
        f"{raw_s:.2f} s ({rounds[0].sessions / raw_s:.0f} sessions' worth of rows a second)"
    )


if __name__ == "__main__":
    main()
