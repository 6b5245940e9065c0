"""A mix of runs for the analytics, driven through the domain, and the same numbers recounted
straight from the sessions' events (`app.history`), as the analytics API answers them.

`checkout` version 1: its second step flaky (failed with a timeout, passed on the retry) in
one of two sessions; version 2: its second step failing (not found) in two sessions of three;
an inline session (version 0) beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from api.http.usage import cost_of, total_cost
from domain.session import StepSpec
from domain.session import WorkflowSession as W
from domain.workflow import Reference
from engine.settings import ModelPrice
from engine.store.app import Stepline
from engine.workflows.registry import RegisteredRun, WorkflowDocument, push, registered_request
from tests.workloads import (
    NOT_FOUND,
    TIMEOUT,
    complete_session,
    create_session,
    fail_step,
    run_step,
    start_step,
)

WORKFLOW = "checkout"
PRICES = {"m": ModelPrice(prompt_per_1k=1.5, completion_per_1k=2.0)}


def _version(app: Stepline, tenant: str, steps: list[str]) -> None:
    document = {"name": WORKFLOW, "steps": steps, "config": {"max_attempts": 2}}
    push(app, WorkflowDocument.model_validate(document), tenant=tenant, actor="alice")


def _session(app: Stepline, tenant: str) -> UUID:
    request = registered_request(app, tenant, RegisteredRun(Reference(WORKFLOW)))
    return app.create(request, tenant=tenant, actor="alice").id


def seed(app: Stepline, tenant: str = "acme") -> list[UUID]:
    """The mix; its sessions' ids."""
    sessions = []
    _version(app, tenant, ["GET /cart", "GET /pay"])
    passed, flaky = _session(app, tenant), _session(app, tenant)
    for session_id in (passed, flaky):
        run_step(app, session_id, 0)
    run_step(app, passed, 1)
    start_step(app, flaky, 1)
    fail_step(app, flaky, 1, TIMEOUT)
    run_step(app, flaky, 1)
    for session_id in (passed, flaky):
        complete_session(app, session_id)
    sessions += [passed, flaky]

    _version(app, tenant, ["GET /cart", "GET /pay now"])
    for fails in (True, True, False):
        session_id = _session(app, tenant)
        run_step(app, session_id, 0)
        if fails:
            start_step(app, session_id, 1)
            fail_step(app, session_id, 1, NOT_FOUND)
            app.fail_session(session_id, NOT_FOUND)
        else:
            run_step(app, session_id, 1)
            complete_session(app, session_id)
        sessions.append(session_id)

    sessions.append(_inline(app, tenant))
    return sessions


def _inline(app: Stepline, tenant: str) -> UUID:
    session_id = create_session(
        app, name="inline smoke", steps=[StepSpec("GET /health")], tenant=tenant, actor="alice"
    )
    run_step(app, session_id, 0)
    complete_session(app, session_id)
    return session_id


# ---- the recount ------------------------------------------------------------------------------


@dataclass
class Attempt:
    workflow: str
    version: int
    place: str
    text: str
    run: tuple[UUID, int]
    number: int
    started: datetime
    duration_ms: int | None = None
    outcome: str = "running"
    code: str | None = None


@dataclass
class Turn:
    workflow: str
    version: int
    place: str
    day: Any
    model: str
    prompt: int
    completion: int


def read(app: Stepline, session_ids: Iterable[UUID]) -> tuple[list[Attempt], list[Turn]]:
    """Every attempt and turn of the sessions, from their events (no loops in the mix)."""
    attempts: list[Attempt] = []
    turns: list[Turn] = []
    for session_id in session_ids:
        events = app.history(session_id)
        created = events[0]
        assert isinstance(created, W.Created)
        workflow = created.name
        version = (created.config.get("workflow") or {}).get("version", 0)
        texts = [step["text"] for step in created.steps]
        under_way: dict[int, Attempt] = {}
        for event in events:
            match event:
                case W.StepStarted(step_index=index, attempt=number):
                    under_way[index] = Attempt(
                        workflow, version, str(index), texts[index], (session_id, index),
                        number, event.timestamp,
                    )  # fmt: skip
                    attempts.append(under_way[index])
                case W.StepCompleted(step_index=index) | W.StepFailed(step_index=index):
                    attempt = under_way.pop(index)
                    elapsed = event.timestamp - attempt.started
                    attempt.duration_ms = int(elapsed.total_seconds() * 1000)
                    failed = isinstance(event, W.StepFailed)
                    attempt.outcome = "failed" if failed else "completed"
                    attempt.code = event.error["code"] if isinstance(event, W.StepFailed) else None
                case W.TurnRecorded(step_index=index, model=model):
                    day = event.timestamp.astimezone(UTC).date()
                    turns.append(
                        Turn(workflow, version, str(index), day, model,
                             event.prompt_tokens, event.completion_tokens)
                    )  # fmt: skip
    return attempts, turns


def percentile(values: list[int], fraction: float) -> int | None:
    """The least value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    for rank, value in enumerate(ordered, start=1):
        if rank / len(ordered) >= fraction:
            return value
    return None


def _grouped(items: Iterable[Any], key: Callable[[Any], Hashable]) -> dict[Any, list[Any]]:
    found: dict[Any, list[Any]] = {}
    for item in items:
        found.setdefault(key(item), []).append(item)
    return found


def recount(
    attempts: list[Attempt],
    turns: list[Turn],
    key: Callable[[Attempt], Hashable],
    turn_key: Callable[[Turn], Hashable],
    prices: Mapping[str, ModelPrice] = PRICES,
) -> dict[Any, dict[str, Any]]:
    """The numbers the API gives, grouped by `key` (of a run's first attempt) and `turn_key`."""
    runs = _grouped(attempts, lambda a: a.run)
    spent = _grouped(turns, turn_key)
    counted: dict[Any, dict[str, Any]] = {}
    for group, group_runs in _grouped(runs.values(), lambda r: key(r[0])).items():
        lasts = [max(run, key=lambda a: a.number) for run in group_runs]
        durations = [a.duration_ms for run in group_runs for a in run if a.duration_ms is not None]
        failed_by_code: dict[str, int] = {}
        for last in lasts:
            if last.outcome == "failed":
                failed_by_code[last.code or ""] = failed_by_code.get(last.code or "", 0) + 1
        group_turns = spent.get(group, [])
        by_model = _grouped(group_turns, lambda t: t.model)
        completed = sum(1 for last in lasts if last.outcome == "completed")
        counted[group] = {
            "runs": len(group_runs),
            "completed": completed,
            "failed": sum(failed_by_code.values()),
            "failed_by_code": dict(sorted(failed_by_code.items())),
            "retries": sum(len(run) - 1 for run in group_runs),
            "p50_ms": percentile(durations, 0.5),
            "p95_ms": percentile(durations, 0.95),
            "prompt_tokens": sum(t.prompt for t in group_turns),
            "completion_tokens": sum(t.completion for t in group_turns),
            "cost": total_cost(
                [
                    cost_of(prices, model, sum(t.prompt for t in ts), sum(t.completion for t in ts))
                    for model, ts in by_model.items()
                ]
            ),
            "flaky": any(
                any(a.outcome == "failed" for a in run)
                and max(run, key=lambda a: a.number).outcome == "completed"
                for run in group_runs
            )
            or (completed > 0 and sum(failed_by_code.values()) > 0),
        }
    return counted
