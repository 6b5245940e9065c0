"""A recorded AI workflow against its replay: wall time and model calls, in the same run.

    python -m bench.replay [--steps 10] [--model-latency-ms 400]

The model is the tests' scripted OpenAI-compatible server on loopback, answering each call
after `--model-latency-ms` (a realistic hosted model's time to a short tool call); the target is
the example app in a process of its own. Each of the `--steps` plain-language steps takes two
model turns (a request, then complete_step). The first run asks the model; the replay issues the
recorded commands with no model call and compares each result with the recorded one.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from uuid import UUID

from bench.api import example_target
from bench.appends import bench_database
from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus, StepSpec
from engine.ai.provider import AiProvider
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.replay import replay_request
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests import workloads
from tests.scripted_model import ScriptedModel


def script(model: ScriptedModel, steps: int, latency_s: float) -> None:
    def wait() -> None:
        time.sleep(latency_s)

    for n in range(steps):
        model.calls("http_request", before=wait, method="GET", url=f"/slow?ms=0&n={n}")
        model.calls("complete_step", before=wait, summary=f"page {n} answered")


def timed_drive(loop: TaskLoop, session_id: UUID) -> float:
    started = time.perf_counter()
    status = loop.drive(session_id, threading.Event())
    elapsed = time.perf_counter() - started
    assert status is SessionStatus.COMPLETED, status
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model-latency-ms", type=int, default=400)
    arguments = parser.parse_args()
    model = ScriptedModel()
    with (
        bench_database() as url,
        tempfile.TemporaryDirectory() as data_dir,
        example_target() as target,
        model.serving(),
    ):
        app = Stepline(eventsourcing_env(url))
        settings = Settings(database_url=None, data_dir=Path(data_dir))
        ai = AiProvider(model="scripted-model", api_key="k", base_url=model.base_url)
        loop = TaskLoop(app, settings, builtin(), Secrets({}), ai)
        script(model, arguments.steps, arguments.model_latency_ms / 1000)
        steps = [StepSpec(f"Check that page {n} answers") for n in range(arguments.steps)]
        config = session_config(settings, {"executor": "http", "base_url": target})
        source = workloads.create_session(
            app, name="bench", steps=steps, tenant=DEV_TENANT, actor="bench", config=config
        )
        first_s = timed_drive(loop, source)
        first_calls = len(model.requests)
        replay = app.create(
            replay_request(app.get_session(source), strict=True), tenant=DEV_TENANT, actor="bench"
        ).id
        replay_s = timed_drive(loop, replay)
        replay_calls = len(model.requests) - first_calls
        loop.close()
        ai.close()
        app.close()

    print(
        f"{arguments.steps} AI steps, model answering in {arguments.model_latency_ms} ms, one run"
    )
    print(f"{'run':<28} {'wall s':>8} {'model calls':>12}")
    print(f"{'first run (the model)':<28} {first_s:>8.2f} {first_calls:>12}")
    print(f"{'replay (no model)':<28} {replay_s:>8.3f} {replay_calls:>12}")
    saved = first_calls - replay_calls
    print(f"replay: {first_s / replay_s:.0f}x faster, {saved} model calls saved")


if __name__ == "__main__":
    main()
