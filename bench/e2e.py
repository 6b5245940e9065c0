"""End to end, the way a user meets it: a small job through Stepline's HTTP API, next to the
same job as a DBOS Transact workflow started from a FastAPI endpoint, in one run.

    python -m bench.e2e [--sessions 400] [--steps 3] [--rounds-of 100]
                        [--shapes single,in-process,split,dbos]

The job: `GET /slow?ms=0`, `expect status 200`, `expect body contains "slept_ms"` (the example
app, examples/target_app.py, has no /ping: /slow?ms=0 answers 200 with {"slept_ms": 0} at once);
with `--steps 10`, the same three repeated in order to ten steps. The systems:

- `single`: one `stepline serve` as it starts by default: the API, and its slots (the default
  10) in the worker process it starts;
- `in-process`: one `stepline serve --worker-processes 0`, driving the sessions in its own
  process;
- `split`: `stepline serve --workers 0` for the API, two `stepline worker`s (10 slots each);
- `dbos`: bench/dbos_e2e_app.py under uvicorn, whose POST starts a workflow of one
  checkpointed `@DBOS.step` per step of the job and whose GET answers its status.

Each runs on its own fresh database of the same PostgreSQL server, against the same target app
(a process of its own). The same client for all: after a few sessions to warm up, it creates
sessions over HTTP one after another, in rounds of `--rounds-of`; after each round's POSTs it
polls every open session of the round through the API (Stepline: GET /v1/sessions/{id}; DBOS:
GET /workflows/{id}), each about every 20 ms (or once a pass over the open ones, when a pass
takes longer: one request at a time), until all have completed, then starts the next round.
Printed per system: sessions/s (the first POST to the last completion seen), POST -> completed
latency p50/p99 as the poller saw it, and the CPU per session of all the system's processes
(server, workers, their children) and of the PostgreSQL backends serving its database, both
measured over the run; then Stepline's shapes against DBOS as ratios. Uses the server of
STEPLINE_DATABASE_URL if set, else the embedded PostgreSQL. DBOS comes with the `bench` extra
(`pip install -e '.[bench]'`); without it the `dbos` shape is left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.api import example_target, free_port, percentiles, session_body, wait_until_up
from bench.appends import bench_database
from bench.stream import STEPLINE, busiest, environment, sampled, started, working_share
from bench.workers import backend_cpu, cpu_seconds, wait_for_workers
from domain.session import ENDED, SessionStatus, values
from engine.store.database import temporary_database
from engine.store.schema import prepare_database

PATH = "/slow?ms=0"
TEXT = "slept_ms"
JOB = [f"GET {PATH}", "expect status 200", f'expect body contains "{TEXT}"']
SHAPES = ("single", "in-process", "split", "dbos")
SPLIT_WORKERS = 2
WARM_UP = 10
POLL_S = 0.02
DEADLINE_S = 600


def job_steps(steps: int) -> list[str]:
    """The job's three steps, repeated in order to `steps`."""
    return [JOB[n % len(JOB)] for n in range(steps)]


@dataclass(frozen=True)
class Api:
    """How the client speaks to one system: where it posts the job, where it reads its status."""

    create_path: str
    body: dict[str, Any]
    id_field: str
    status_path: str
    completed: str
    failed: frozenset[str]


def stepline_api(target: str, steps: int) -> Api:
    return Api(
        "/v1/sessions",
        session_body(target, job_steps(steps)),
        "session_id",
        "/v1/sessions/{}",
        SessionStatus.COMPLETED.value,
        frozenset(values(ENDED)) - {SessionStatus.COMPLETED.value},
    )


def dbos_api(target: str, steps: int) -> Api:
    return Api(
        "/workflows",
        {"url": f"{target}{PATH}", "text": TEXT, "steps": steps},
        "workflow_id",
        "/workflows/{}",
        "SUCCESS",
        frozenset({"ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}),
    )


@dataclass(frozen=True)
class System:
    """A running deployment: its API, its processes and its database."""

    base_url: str
    pids: list[int]
    database_url: str


# ---- the deployments -----------------------------------------------------------------------


@contextmanager
def stepline(shape: str, server_url: str) -> Iterator[System]:
    with ExitStack() as stack:
        url = stack.enter_context(temporary_database(server_url, "stepline_e2e"))
        prepare_database(url)
        data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        env = environment(url, data_dir)
        port = free_port()
        serve = [STEPLINE, "serve", "--port", str(port)]
        if shape == "split":
            serve += ["--workers", "0"]
        if shape == "in-process":
            serve += ["--worker-processes", "0"]
        processes = [stack.enter_context(started(serve, env))]
        if shape == "split":
            for _ in range(SPLIT_WORKERS):
                processes.append(stack.enter_context(started([STEPLINE, "worker"], env)))
            wait_for_workers(url, SPLIT_WORKERS, Path(data_dir))
        base_url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base_url}/health")
        yield System(base_url, [p.pid for p in processes], url)


@contextmanager
def dbos(server_url: str) -> Iterator[System]:
    with temporary_database(server_url, "stepline_e2e_dbos") as url:
        port = free_port()
        command = [sys.executable, "-m", "bench.dbos_e2e_app", url, str(port)]
        with started(command, dict(os.environ)) as process:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base_url}/workflows/none")
            yield System(base_url, [process.pid], url)


DEPLOYMENTS = {
    "single": "stepline serve",
    "in-process": "stepline serve --worker-processes 0",
    "split": f"stepline serve --workers 0 + {SPLIT_WORKERS} workers",
    "dbos": "DBOS + FastAPI",
}


@contextmanager
def deployed(shape: str, server_url: str) -> Iterator[System]:
    if shape == "dbos":
        with dbos(server_url) as system:
            yield system
    else:
        with stepline(shape, server_url) as system:
            yield system


# ---- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    shape: str
    sessions: int
    seconds: float
    latencies_ms: list[float]
    cpu_s: float
    """The system's processes (server, workers, their children) over the run."""
    database_cpu_s: float
    """The PostgreSQL backends serving the system's database over the run."""

    @property
    def per_s(self) -> float:
        return self.sessions / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.sessions * 1000

    @property
    def database_cpu_ms(self) -> float:
        return self.database_cpu_s / self.sessions * 1000


def measure(
    shape: str,
    system: System,
    api: Api,
    arguments: argparse.Namespace,
) -> Result:
    sessions, rounds_of = arguments.sessions, arguments.rounds_of
    profile = f"{arguments.profile}.{shape}" if arguments.profile and shape != "dbos" else None
    with httpx.Client(base_url=system.base_url, timeout=60) as client:
        in_rounds(client, api, WARM_UP, rounds_of)  # connections, caches, first-use setup
        cpu_before = processes_cpu(system.pids)
        database_before = backend_cpu(system.database_url)
        with sampled(system.pids[0], profile):
            posted, completed = in_rounds(client, api, sessions, rounds_of)
        cpu_s = processes_cpu(system.pids) - cpu_before
        database_cpu_s = sum(backend_cpu(system.database_url, since=database_before).values())
    seconds = max(completed.values()) - min(posted.values())
    latencies = [(completed[key] - posted[key]) * 1000 for key in posted]
    return Result(shape, sessions, seconds, latencies, cpu_s, database_cpu_s)


def in_rounds(
    client: httpx.Client, api: Api, sessions: int, rounds_of: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Create `sessions` in rounds, each polled to its end before the next: when each was
    posted and when it was first seen completed."""
    posted: dict[str, float] = {}
    completed: dict[str, float] = {}
    for first in range(0, sessions, rounds_of):
        round_ids = []
        for _ in range(min(rounds_of, sessions - first)):
            at = time.perf_counter()
            response = client.post(api.create_path, json=api.body)
            if response.status_code != 201:
                raise RuntimeError(
                    f"POST {api.create_path}: {response.status_code} {response.text}"
                )
            created = str(response.json()[api.id_field])
            posted[created] = at
            round_ids.append(created)
        until_completed(client, api, round_ids, completed)
    return posted, completed


def until_completed(
    client: httpx.Client, api: Api, open_ids: list[str], completed: dict[str, float]
) -> None:
    """Poll each open one about every POLL_S (one request at a time) until all completed."""
    deadline = time.monotonic() + DEADLINE_S
    while open_ids:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(open_ids)} did not complete in {DEADLINE_S} s")
        began = time.perf_counter()
        still_open = []
        for key in open_ids:
            status = client.get(api.status_path.format(key)).json()["status"]
            if status == api.completed:
                completed[key] = time.perf_counter()
            elif status in api.failed:
                raise RuntimeError(f"{key} ended {status}")
            else:
                still_open.append(key)
        open_ids = still_open
        time.sleep(max(0.0, began + POLL_S - time.perf_counter()))  # pacing, not waiting


def processes_cpu(pids: list[int]) -> float:
    """CPU seconds of the processes, of their children that ended and of their live ones."""
    roots = [psutil.Process(pid) for pid in pids]
    total = cpu_seconds(roots)
    for root in roots:
        for child in root.children(recursive=True):
            try:
                total += cpu_seconds([child])
            except psutil.Error:
                continue  # it ended meanwhile: counted by its parent once waited for
    return total


# ---- the report ----------------------------------------------------------------------------


def report(arguments: argparse.Namespace, results: list[Result]) -> None:
    repeated = "" if arguments.steps == len(JOB) else f", repeated to {arguments.steps} steps"
    print(
        f"{arguments.sessions} sessions of [{', '.join(JOB)}]{repeated}, created in rounds of "
        f"{arguments.rounds_of}, each round polled to its end; on {os.cpu_count()} cores"
    )
    header = ("system", "sessions/s", "p50 ms", "p99 ms", "CPU ms/session", "db CPU ms/session")
    print("{:<40} {:>10} {:>8} {:>8} {:>14} {:>17}".format(*header))
    for result in results:
        p50, p99 = percentiles(result.latencies_ms)
        print(
            f"{DEPLOYMENTS[result.shape]:<40} {result.per_s:>10.1f} {p50:>8.1f} {p99:>8.1f} "
            f"{result.cpu_ms:>14.1f} {result.database_cpu_ms:>17.1f}"
        )
    peer = next((result for result in results if result.shape == "dbos"), None)
    if peer is None:
        return
    for ours in (result for result in results if result.shape != "dbos"):
        with_database = (ours.cpu_ms + ours.database_cpu_ms) / (peer.cpu_ms + peer.database_cpu_ms)
        print(
            f"{DEPLOYMENTS[ours.shape]} / DBOS: {ours.per_s / peer.per_s:.2f}x the sessions/s, "
            f"{ours.cpu_ms / peer.cpu_ms:.2f}x the CPU per session "
            f"({with_database:.2f}x with the database's)"
        )


PATH_OF_A_SESSION = [
    ("POST /v1/sessions", "new_session"),
    ("  admission (policy, definitions, secrets)", "admitted"),
    ("GET /v1/sessions/{id}", "session_state"),
    ("the session worker claiming", "SessionWorker._claim_loop"),
    ("  driving a session", "SessionWorker._drive"),
    ("  the steps (task loop)", "SessionRun.to_the_end"),
    ("  group commit", "GroupWriter.write"),
    ("the views catching up", "Projector.catch_up"),
    ("the live feed", "EventFeed._deliver"),
    ("webhook deliveries", "WebhookSender._once_quietly"),
]
"""Where a session's cost goes in the serving process: (what, a function on the stack)."""


def print_profile(raw: str, shape: str) -> None:
    """What py-spy saw the serving process do while the sessions ran (`--profile`)."""
    share = working_share(raw, [name for _, name in PATH_OF_A_SESSION])
    print(f"\n{DEPLOYMENTS[shape]}: the serving process's working samples (py-spy)")
    for label, name in PATH_OF_A_SESSION:
        print(f"  {share[name]:5.1f}%  {label} ({name})")
    print("  busiest functions: leaf %, on stack %")
    for function, leaf, on_stack in busiest(raw):
        print(f"  {leaf:5.1f}% {on_stack:5.1f}%  {function}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds-of", type=int, default=100)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    parser.add_argument(
        "--profile", metavar="FILE", help="py-spy the serving process into FILE.<shape>"
    )
    arguments = parser.parse_args()
    shapes = [shape for shape in arguments.shapes.split(",") if shape]
    if unknown := set(shapes) - set(SHAPES):
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    if "dbos" in shapes and importlib.util.find_spec("dbos") is None:
        print("(DBOS not installed: pip install -e '.[bench]' to compare)")
        shapes.remove("dbos")

    results = []
    with bench_database() as server_url, example_target() as target:
        for shape in shapes:
            api = (dbos_api if shape == "dbos" else stepline_api)(target, arguments.steps)
            with deployed(shape, server_url) as system:
                results.append(measure(shape, system, api, arguments))
    report(arguments, results)
    for result in results:
        if arguments.profile and result.shape != "dbos":
            print_profile(f"{arguments.profile}.{result.shape}", result.shape)


if __name__ == "__main__":
    main()
