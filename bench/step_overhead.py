"""Orchestration overhead of one deterministic step, next to raw psycopg inserts of the same
number of rows, in one run on the same PostgreSQL.

    python -m bench.step_overhead [--steps N]

Each step is a step definition mapped to a no-op command on a no-op executor, so what is timed
is the task loop itself: loading the session, the safe-point checks, and the four events a
step records (StepStarted, CommandIssued, CommandFinished, StepCompleted).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from bench.appends import bench_database, raw_inserts
from domain.session import StepSpec
from engine.app import Stepline
from engine.database import eventsourcing_env
from engine.definitions import builtin
from engine.executors import Command, Executor, Outcome
from engine.executors.kinds import ExecutorSetup
from engine.limits import session_config
from engine.secrets import Secrets
from engine.settings import Settings
from engine.task_loop import TaskLoop

STEPS_PER_SESSION = 20


class NoopExecutor:
    kind = "noop"

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

    def close(self) -> None:
        pass


def noop_executor(_: ExecutorSetup) -> Executor:
    return NoopExecutor()


def run_steps(app: Stepline, steps: int) -> tuple[float, int]:
    """Seconds to drive `steps` no-op steps, and how many events they appended."""
    definitions = builtin()
    definitions.add("noop", lambda _: [Command("noop", "noop")])
    settings = Settings(database_url=None)
    loop = TaskLoop(app, settings, definitions, Secrets({}), executor_kinds={"noop": noop_executor})
    sessions = [
        app.create_session(
            name="bench",
            steps=[StepSpec("noop")] * STEPS_PER_SESSION,
            tenant="bench",
            actor="bench",
            config=session_config(settings, {}),
        )
        for _ in range(steps // STEPS_PER_SESSION)
    ]
    before = app.recorder.max_notification_id() or 0
    started = time.perf_counter()
    for session_id in sessions:
        loop.drive(session_id, threading.Event())
    elapsed = time.perf_counter() - started
    return elapsed, (app.recorder.max_notification_id() or 0) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000)
    steps = parser.parse_args().steps // STEPS_PER_SESSION * STEPS_PER_SESSION

    with bench_database() as url:
        app = Stepline(eventsourcing_env(url))
        try:
            elapsed, events = run_steps(app, steps)
        finally:
            app.close()
        rows_per_s = raw_inserts(url, events)

    raw_s = events / rows_per_s
    print(f"{steps} no-op steps in {steps // STEPS_PER_SESSION} sessions, {events} events")
    print(f"task loop:          {elapsed:7.2f} s  {elapsed / steps * 1000:6.2f} ms/step")
    print(f"raw psycopg inserts:{raw_s:7.2f} s  ({events} rows, one per commit)")
    print(f"overhead ratio: {elapsed / raw_s:.1f}x the raw inserts of the same rows")


if __name__ == "__main__":
    main()
