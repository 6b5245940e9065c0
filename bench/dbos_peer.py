"""The peer people would pick instead: DBOS Transact checkpointing no-op steps on the same
PostgreSQL, timed the way `bench.step_overhead` times Stepline.

    python -m bench.dbos_peer URL --steps N --steps-per-workflow K --concurrent C

Prints one JSON object: {"sequential_s": ..., "concurrent_s": ..., "steps": ...}. Run in its own
process by `bench.step_overhead` (DBOS is a process-wide singleton with its own threads);
installed with the `bench` extra (`pip install -e '.[bench]'`), never needed at run time.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dbos import DBOS, DBOSConfig  # type: ignore[import-not-found, unused-ignore]


@DBOS.step()  # type: ignore[untyped-decorator, unused-ignore]
def noop_step() -> None:
    return None


@DBOS.workflow()  # type: ignore[untyped-decorator, unused-ignore]
def noop_workflow(steps: int) -> None:
    for _ in range(steps):
        noop_step()


def _timed_workflows(workflows: int, steps_each: int, concurrent: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrent) as pool:
        list(pool.map(lambda _: noop_workflow(steps_each), range(workflows)))
    return time.perf_counter() - started


def measure(url: str, steps: int, steps_per_workflow: int, concurrent: int) -> dict[str, Any]:
    config: DBOSConfig = {"name": "stepline-bench", "system_database_url": url}
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config=config)
    DBOS.launch()
    try:
        noop_workflow(steps_per_workflow)  # warm up: tables, connections, registry
        workflows = steps // steps_per_workflow
        return {
            "steps": workflows * steps_per_workflow,
            "sequential_s": _timed_workflows(workflows, steps_per_workflow, 1),
            "concurrent_s": _timed_workflows(workflows, steps_per_workflow, concurrent),
        }
    finally:
        DBOS.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--steps-per-workflow", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.url, args.steps, args.steps_per_workflow, args.concurrent)))


if __name__ == "__main__":
    main()
