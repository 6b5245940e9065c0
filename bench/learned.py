"""An AI workflow's first run against its second (the action cache), and the hit rate when the
target changed one step: model calls, tokens and wall time, in the same run.

    python -m bench.learned [--steps 10] [--model-latency-ms 400]

The model is the tests' scripted OpenAI-compatible server on loopback, answering each call
after `--model-latency-ms` (a hosted model's time to a short tool call); the target a page
server on loopback. Each of the `--steps` plain-language steps takes two model turns (open a
page, then complete_step). The first run asks the model and its steps are learned; the second
is a new session of the same workflow, which does the learned commands with no model call.
Then one page moves: the third run misses on that step only, and the model takes it over.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from uuid import UUID

from psycopg_pool import ConnectionPool

from bench.appends import bench_database
from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.ai.provider import AiProvider
from engine.live.projector import Projector
from engine.loop.builtin_steps import builtin
from engine.loop.learned import LearnedActionSource
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests import workloads
from tests.pages_target import Pages
from tests.scripted_model import ScriptedModel


def script(model: ScriptedModel, paths: list[str], latency_s: float) -> None:
    def wait() -> None:
        time.sleep(latency_s)

    for path in paths:
        model.calls("http_request", before=wait, tokens=(900, 40), method="GET", url=path)
        model.calls("complete_step", before=wait, tokens=(1000, 30), summary=f"{path} is up")


class Run:
    """One session of the workflow, driven to its end, and what it cost."""

    def __init__(self, loop: TaskLoop, projector: Projector, steps: list[StepSpec]) -> None:
        config = session_config(loop.settings, {"executor": "http", "base_url": PAGES.base_url})
        session_id = workloads.create_session(
            loop.app, name="bench", steps=steps, tenant=DEV_TENANT, actor="bench", config=config
        )
        started = time.perf_counter()
        status = loop.drive(session_id, threading.Event())
        self.seconds = time.perf_counter() - started
        assert status is SessionStatus.COMPLETED, status
        projector.catch_up()
        history = loop.app.history(session_id)
        turns = [e for e in history if isinstance(e, WorkflowSession.TurnRecorded)]
        self.tokens = sum(t.prompt_tokens + t.completion_tokens for t in turns)
        used = [e for e in history if isinstance(e, WorkflowSession.LearnedActionUsed)]
        self.hits = sum(1 for u in used if u.hit)
        self.session_id: UUID = session_id


PAGES = Pages()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model-latency-ms", type=int, default=400)
    arguments = parser.parse_args()
    latency_s = arguments.model_latency_ms / 1000
    paths = [f"/page/{n}" for n in range(arguments.steps)]
    PAGES.paths.update(paths)
    steps = [StepSpec(f"Check that page {n} answers") for n in range(arguments.steps)]
    model = ScriptedModel()
    with (
        bench_database() as url,
        tempfile.TemporaryDirectory() as data_dir,
        PAGES.serving(),
        model.serving(),
        ConnectionPool(url, kwargs={"autocommit": True}) as pool,
    ):
        app = Stepline(eventsourcing_env(url))
        projector = Projector(app, pool)
        projector.prepare()
        settings = Settings(database_url=None, data_dir=Path(data_dir))
        ai = AiProvider(model="scripted-model", api_key="k", base_url=model.base_url)
        loop = TaskLoop(
            app, settings, builtin(), Secrets({}), ai, learned=LearnedActionSource(pool)
        )
        script(model, paths, latency_s)
        first = Run(loop, projector, steps)
        first_calls = len(model.requests)
        second = Run(loop, projector, steps)
        second_calls = len(model.requests) - first_calls
        moved = paths[len(paths) // 2]
        PAGES.move(moved, moved + "-v2")
        script(model, [moved + "-v2"], latency_s)
        third = Run(loop, projector, steps)
        third_calls = len(model.requests) - first_calls - second_calls
        loop.close()
        ai.close()
        app.close()

    steps_n = arguments.steps
    print(f"{steps_n} AI steps, model answering in {arguments.model_latency_ms} ms, one run")
    print(f"{'run':<36} {'wall s':>8} {'model calls':>12} {'tokens':>8} {'hit rate':>9}")
    rows = (
        ("first run (the model; learns)", first, first_calls),
        ("second run (learned actions)", second, second_calls),
        ("target changed one step", third, third_calls),
    )
    for label, run, calls in rows:
        rate = f"{run.hits}/{steps_n}"
        print(f"{label:<36} {run.seconds:>8.3f} {calls:>12} {run.tokens:>8} {rate:>9}")
    print(
        f"second run: {first.seconds / second.seconds:.0f}x faster, "
        f"{first_calls - second_calls} model calls and {first.tokens - second.tokens} tokens "
        f"saved; with one step changed: {third.hits}/{steps_n} hits, {third_calls} model calls"
    )


if __name__ == "__main__":
    main()
