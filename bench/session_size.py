"""Whether an event's cost grows with its session: no-op steps of 5 commands each, driven in
sessions of 20 steps and in one session of 500, and the cold load of a 10,000-event session
with and without snapshots, in one run on the same PostgreSQL.

    python -m bench.session_size
"""

from __future__ import annotations

import statistics
import threading
import time
from uuid import UUID

from bench.appends import bench_database
from bench.step_overhead import noop_executor
from domain.session import StepSpec
from engine.executors import Command
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline, replay
from engine.store.database import eventsourcing_env
from tests import workloads

COMMANDS_PER_STEP = 5
STEPS = 500


def loop_of(app: Stepline, commands_per_step: int) -> TaskLoop:
    definitions = builtin()
    definitions.add("noop", lambda _: [Command("noop", "noop")] * commands_per_step)
    settings = Settings(database_url=None)
    return TaskLoop(app, settings, definitions, Secrets({}), executor_kinds={"noop": noop_executor})


def new_session(app: Stepline, loop: TaskLoop, steps: int) -> UUID:
    return workloads.create_session(
        app,
        name="size",
        steps=[StepSpec("noop")] * steps,
        tenant="bench",
        actor="bench",
        config=session_config(loop.settings, {}),
    )


def per_event_ms(app: Stepline, steps_per_session: int, commands_per_step: int) -> float:
    """Drive STEPS steps in sessions of `steps_per_session`; ms per event appended."""
    loop = loop_of(app, commands_per_step)
    sessions = [
        new_session(app, loop, steps_per_session) for _ in range(STEPS // steps_per_session)
    ]
    before = app.recorder.max_notification_id() or 0
    started = time.perf_counter()
    for session_id in sessions:
        loop.drive(session_id, threading.Event())
    elapsed = time.perf_counter() - started
    events = (app.recorder.max_notification_id() or 0) - before
    return elapsed / events * 1000


def cold_load_ms(url: str, session_id: UUID, snapshots: bool, repeats: int = 5) -> float:
    """The median time to load the session in a new process's application (nothing cached)."""
    timings = []
    for _ in range(repeats):
        app = Stepline(eventsourcing_env(url), cache_size=0)
        try:
            started = time.perf_counter()
            if snapshots:
                app.get_session(session_id)
            else:
                replay(None, app.history(session_id))
            timings.append((time.perf_counter() - started) * 1000)
        finally:
            app.close()
    return statistics.median(timings)


def main() -> None:
    with bench_database() as url:
        app = Stepline(eventsourcing_env(url))
        try:
            per_event_ms(app, 20, COMMANDS_PER_STEP)  # warm up
            small = per_event_ms(app, 20, COMMANDS_PER_STEP)
            big = per_event_ms(app, STEPS, COMMANDS_PER_STEP)
            loop = loop_of(app, 9)  # 500 steps of 20 events: a 10,001-event session
            large = new_session(app, loop, STEPS)
            loop.drive(large, threading.Event())
            events = app.get_session(large).version
        finally:
            app.close()
        with_snapshots = cold_load_ms(url, large, snapshots=True)
        without = cold_load_ms(url, large, snapshots=False)

    print(f"no-op steps of {COMMANDS_PER_STEP} commands, {STEPS} steps each way, one run")
    print(f"sessions of 20 steps:      {small:6.3f} ms/event")
    print(f"one session of {STEPS} steps: {big:6.3f} ms/event  ({big / small:.2f}x)")
    print(f"cold load of a {events}-event session:")
    print(f"  from its latest snapshot: {with_snapshots:7.1f} ms")
    print(f"  replaying every event:    {without:7.1f} ms")


if __name__ == "__main__":
    main()
