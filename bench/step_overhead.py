"""The cost of one deterministic step, next to DBOS Transact and raw psycopg inserts, in one
run on the same PostgreSQL server.

    python -m bench.step_overhead [--steps N] [--concurrent 10,50]

Each Stepline step is a step definition mapped to a no-op command on a no-op executor, so what
is timed is the task loop and its writes: the step's start, its command issued (durable before
the command runs), the command's result and the step's end. Sessions run one after another,
then N at once in one process (group commit gathers their writes). DBOS runs the same number
of no-op `@DBOS.step`s in workflows of the same length, in its own process and database on the
same server, when the `bench` extra is installed (`pip install -e '.[bench]'`). The floor is
raw psycopg: one single-row INSERT per commit. Last, steps that also make a check, the check
recorded as one event (as the task loop does) next to the same check recorded as an issued
command and its result (as it did before).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from bench.appends import bench_database, raw_inserts
from domain.session import StepSpec
from engine.executors import Command, Executor, Outcome
from engine.executors.kinds import ExecutorSetup
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env, temporary_database
from engine.tenancy.secret_store import MasterKey
from tests import workloads

STEPS_PER_SESSION = 20


class NoopExecutor:
    kind = "noop"

    def __init__(self, checks: frozenset[str] = frozenset()) -> None:
        self.checks = checks

    def run(self, command: Command) -> Outcome:
        return Outcome(True, "")

    def restore(self, command: Command, output: str) -> None:
        pass

    def state(self) -> dict[str, Any] | None:
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        return None

    def tools(self) -> list[dict[str, Any]]:
        return []

    def command_for_tool(self, name: str, arguments: dict[str, Any]) -> Command | None:
        return None

    def briefing(self) -> str | None:
        return None

    def close(self, *, ended: bool = True) -> None:
        pass


def noop_executor(_: ExecutorSetup) -> Executor:
    return NoopExecutor()


def checking_executor(_: ExecutorSetup) -> Executor:
    """`check` is a check, recorded as one event (not an issued command and its result)."""
    return NoopExecutor(frozenset({"check"}))


@dataclass(frozen=True)
class Run:
    label: str
    steps: int
    seconds: float
    commits: int | None = None
    events: int | None = None

    @property
    def ms_per_step(self) -> float:
        return self.seconds / self.steps * 1000

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    def line(self) -> str:
        grouping = ""
        if self.commits:
            grouping = f"  {self.commits:6d} commits, {self.events} events"
        rate = f"{self.ms_per_step:8.2f} ms/step{self.steps_per_s:9.0f} steps/s"
        return f"{self.label:34s}{rate}{grouping}"


def noop_loop(app: Stepline, checks_as_events: bool = True) -> TaskLoop:
    """Steps `noop` (one command) and `noop and check` (a command, then a check)."""
    definitions = builtin()
    definitions.add("noop", lambda _: [Command("noop", "noop")])
    definitions.add("noop and check", lambda _: [Command("noop", "noop"), Command("noop", "check")])
    settings = Settings(database_url=None)
    kind = checking_executor if checks_as_events else noop_executor
    return TaskLoop(app, settings, definitions, Secrets({}), executor_kinds={"noop": kind})


def noop_sessions(app: Stepline, loop: TaskLoop, steps: int, text: str = "noop") -> list[UUID]:
    return [
        workloads.create_session(
            app,
            name="bench",
            steps=[StepSpec(text)] * STEPS_PER_SESSION,
            tenant="bench",
            actor="bench",
            config=session_config(loop.settings, {}),
        )
        for _ in range(steps // STEPS_PER_SESSION)
    ]


def run_steps(
    app: Stepline,
    steps: int,
    concurrent: int = 1,
    label: str = "",
    grouped: bool = True,
    check: bool | None = None,
) -> Run:
    """Drive `steps` no-op steps in sessions of 20, `concurrent` sessions at a time;
    `grouped=False` writes each session's events in a commit of their own. `check`: each step
    also makes a check, recorded as one event (True) or as a command pair (False)."""
    loop = noop_loop(app, checks_as_events=check is not False)
    if not grouped:
        loop.writer.max_events = 1
    sessions = noop_sessions(app, loop, steps, "noop" if check is None else "noop and check")
    before = app.recorder.max_notification_id() or 0
    commits_before = loop.writer.commits
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrent) as pool:
        list(pool.map(lambda session_id: loop.drive(session_id, threading.Event()), sessions))
    elapsed = time.perf_counter() - started
    events = (app.recorder.max_notification_id() or 0) - before
    commits = loop.writer.commits - commits_before
    return Run(label or f"stepline, {concurrent} at once", steps, elapsed, commits, events)


def dbos_runs(server_url: str, steps: int, concurrent: int) -> list[Run]:
    """DBOS Transact in its own process and database on the same server; [] if absent."""
    if importlib.util.find_spec("dbos") is None:
        return []
    with temporary_database(server_url, "stepline_bench_dbos") as url:
        command = [
            sys.executable,
            "-m",
            "bench.dbos_peer",
            url,
            f"--steps={steps}",
            f"--steps-per-workflow={STEPS_PER_SESSION}",
            f"--concurrent={concurrent}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        Run("dbos, sequential", measured["steps"], measured["sequential_s"]),
        Run(f"dbos, {concurrent} at once", measured["steps"], measured["concurrent_s"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--concurrent", default="10,50", help="comma-separated session counts")
    parser.add_argument(
        "--clear",
        action="store_true",
        help="store events in clear (no master key, no data keys): the cost of sealing is the "
        "difference from a run without it",
    )
    args = parser.parse_args()
    steps = args.steps // STEPS_PER_SESSION * STEPS_PER_SESSION
    counts = [int(n) for n in args.concurrent.split(",") if n]

    with bench_database() as url:
        master_key = None if args.clear else MasterKey(os.urandom(32))
        app = Stepline(
            eventsourcing_env(url, pool_size=max(counts, default=1) + 2), master_key=master_key
        )
        try:
            run_steps(app, STEPS_PER_SESSION * 5)  # warm up: connections, prepared statements
            ours = [run_steps(app, steps, 1, "stepline, sequential")]
            for n in counts:
                ours.append(run_steps(app, steps, n))
                ours.append(run_steps(app, steps, n, "  the same, no group commit", False))
            checked = [
                run_steps(app, steps, 1, "a command + a check, sequential", check=True),
                run_steps(app, steps, 1, "  the check as an issued command", check=False),
            ]
        finally:
            app.close()
        raw_per_s = raw_inserts(url, steps)
        peers = dbos_runs(url, steps, counts[0] if counts else 10)

    sealing = "in clear" if args.clear else "sealed with data keys"
    print(
        f"{steps} no-op steps in sessions of {STEPS_PER_SESSION}, same PostgreSQL, one run, "
        f"events {sealing}"
    )
    for run in [*ours, *peers]:
        print(run.line())
    print(
        f"{'raw psycopg, 1 row/commit':34s}{1000 / raw_per_s:8.2f} ms/row {raw_per_s:9.0f} rows/s"
    )
    for run in checked:
        print(run.line())
    _ratios(ours, peers)
    as_event, as_pair = checked
    print(
        f"a check as one event: {as_event.steps_per_s / as_pair.steps_per_s:.1f}x the steps/s "
        f"of the check as an issued command ({as_event.commits} vs {as_pair.commits} commits)"
    )


def _ratios(ours: list[Run], peers: list[Run]) -> None:
    if not peers:
        print("(DBOS not installed: pip install -e '.[bench]' to compare)")
        return
    sequential, at_once = ours[0], ours[1] if len(ours) > 1 else ours[0]
    ungrouped = [run for run in ours if "no group" in run.label]
    if ungrouped:
        print(
            f"group commit, {at_once.label.split(', ')[1]}: "
            f"{at_once.steps_per_s / ungrouped[0].steps_per_s:.1f}x the steps/s without it"
        )
    dbos_sequential, dbos_at_once = peers
    print(
        f"per step, sequential: {dbos_sequential.ms_per_step / sequential.ms_per_step:.1f}x "
        f"faster than DBOS; {at_once.label.split(', ')[1]}: "
        f"{at_once.steps_per_s / dbos_at_once.steps_per_s:.1f}x DBOS's steps/s"
    )


if __name__ == "__main__":
    main()
