"""Sessions in every status, and the commands that drive them there.

The product drives sessions through the task loop; tests and benches drive them step by step,
each command one unit of work over the real application (`Stepline.change`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from domain.errors import StandardError
from domain.loops import Loop
from domain.session import StepSpec, WorkflowSession
from domain.step_policy import OnFailure, StepPolicy
from domain.waits import WaitKind
from domain.workflow import Reference
from engine.loop.replay import fork_request, replay_request
from engine.store.app import SessionRequest, Stepline
from engine.workflows.registry import (
    RegisteredRun,
    WorkflowDocument,
    push,
    registered_request,
    roll_back,
)

TIMEOUT = StandardError.of("TASK_LOOP_TIMEOUT", "step took too long")
NOT_FOUND = StandardError.of("VALIDATION_FAILED", "no such page")


# ---- commands, one unit of work each -----------------------------------------------------


def create_session(
    app: Stepline,
    *,
    name: str,
    steps: list[StepSpec],
    tenant: str,
    actor: str,
    config: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> UUID:
    request = SessionRequest(name, steps, config or {}, labels or {})
    return app.create(request, tenant=tenant, actor=actor).id


def start_step(app: Stepline, session_id: UUID, index: int) -> int:
    """The attempt started: 1, then one more after each retryable failure."""
    return app.change(session_id, lambda s: s.start_step(index))


def record_turn(app: Stepline, session_id: UUID, index: int, **turn: Any) -> int:
    return app.change(session_id, lambda s: s.record_turn(index, **turn))


def issue_command(app: Stepline, session_id: UUID, index: int, **command: Any) -> None:
    app.change(session_id, lambda s: s.issue_command(index, **command))


def finish_command(app: Stepline, session_id: UUID, index: int, **result: Any) -> None:
    app.change(session_id, lambda s: s.finish_command(index, **result))


def complete_step(app: Stepline, session_id: UUID, index: int, **outcome: Any) -> None:
    app.change(session_id, lambda s: s.complete_step(index, **outcome))


def fail_step(app: Stepline, session_id: UUID, index: int, error: StandardError) -> None:
    app.change(
        session_id,
        lambda s: s.fail_step(index, error=error.to_dict(), retryable=error.retryable),
    )


def complete_session(app: Stepline, session_id: UUID, outcome: str = "") -> None:
    app.change(session_id, lambda s: s.complete(outcome))


# ---- sessions in every status ------------------------------------------------------------


def create(
    app: Stepline,
    steps: int = 2,
    tenant: str = "acme",
    labels: dict[str, str] | None = None,
    **config: int,
) -> UUID:
    return create_session(
        app,
        name=f"{steps}-step workflow",
        steps=[StepSpec(f"step {i}") for i in range(steps)],
        tenant=tenant,
        actor="alice",
        config=config,
        labels=labels or {"suite": "smoke"},
    )


def run_step(
    app: Stepline, session_id: UUID, index: int, commands: int = 1, checks: int = 0
) -> None:
    start_step(app, session_id, index)
    record_turn(app, session_id, index, reasoning="look", model="m", prompt_tokens=3)
    for n in range(commands):
        command_id = f"s{index}-c{n}-{app.get_session(session_id).version}"
        issue_command(
            app, session_id, index, command_id=command_id, executor="http", name="get", args={}
        )
        finish_command(app, session_id, index, command_id=command_id, ok=True, duration_ms=5)
    for _ in range(checks):
        app.change(
            session_id,
            lambda s: s.record_check(
                index, executor="http", name="expect_status", args={"code": 200}, ok=True
            ),
        )
    complete_step(app, session_id, index, summary=f"did step {index}")


def completed(app: Stepline) -> UUID:
    session_id = create(app)
    run_step(app, session_id, 0)
    run_step(app, session_id, 1, commands=2, checks=1)
    complete_session(app, session_id)
    return session_id


def failed(app: Stepline) -> UUID:
    session_id = create(app, steps=3)
    run_step(app, session_id, 0)
    start_step(app, session_id, 1)
    fail_step(app, session_id, 1, NOT_FOUND)
    app.fail_session(session_id, NOT_FOUND)
    return session_id


def retried(app: Stepline) -> UUID:
    session_id = create(app, max_attempts=2)
    start_step(app, session_id, 0)
    fail_step(app, session_id, 0, TIMEOUT)
    run_step(app, session_id, 0)
    run_step(app, session_id, 1)
    complete_session(app, session_id)
    return session_id


def continued(app: Stepline) -> UUID:
    """Steps with policies of their own: the first retried under its own retries, the second
    failed and gone on past (on_failure: continue); completed."""
    session_id = create_session(
        app,
        name="per-step policies",
        steps=[
            StepSpec("step 0", policy=StepPolicy(retries=2, retry_backoff_ms=0, timeout_ms=500)),
            StepSpec("step 1", policy=StepPolicy(max_turns=2, on_failure=OnFailure.CONTINUE)),
            StepSpec("step 2"),
        ],
        tenant="acme",
        actor="alice",
        config={"max_attempts": 1},
    )
    start_step(app, session_id, 0)
    fail_step(app, session_id, 0, TIMEOUT)
    run_step(app, session_id, 0)
    start_step(app, session_id, 1)
    fail_step(app, session_id, 1, NOT_FOUND)
    app.change(session_id, lambda s: s.continue_after_failure(1))
    run_step(app, session_id, 2)
    complete_session(app, session_id)
    return session_id


def looping_steps() -> list[StepSpec]:
    """A loop over `inputs.items` of two steps, the first only for an item other than "b";
    then a last step."""
    loop = Loop("item", "inputs.items", ({"text": "step for {{item}}", "expect": None,
                "policy": {}, "if": "item != \"b\""}, {"text": "after", "expect": None,
                "policy": {}}))  # fmt: skip
    return [StepSpec(loop.header, loop=loop), StepSpec("last step")]


def looped(app: Stepline) -> UUID:
    """A step skipped (its if: false), a loop over two items whose iterations' steps came in
    after it (one skipped by its own if:), the step after the loop moved down; and a fork of
    it from inside the loop, which carries the skipped step and the loop over. Completed."""
    session_id = create_session(
        app,
        name="conditions and loops",
        steps=[StepSpec("step 0", condition="inputs.items == []"), *looping_steps()],
        tenant="acme",
        actor="alice",
        config={"inputs": {"items": ["a", "b"]}},
    )
    app.change(session_id, lambda s: s.skip_step(0, "skipped: if inputs.items == [] was false"))
    start_step(app, session_id, 1)
    app.change(session_id, lambda s: s.expand_loop(1, ["a", "b"]))
    run_step(app, session_id, 2)
    run_step(app, session_id, 3)
    app.change(session_id, lambda s: s.skip_step(4, 'skipped: if item != "b" was false'))
    run_step(app, session_id, 5)
    run_step(app, session_id, 6)
    complete_session(app, session_id)
    source = app.get_session(session_id)
    fork = app.create(
        fork_request(source, app.history(session_id), from_step=3), tenant="acme", actor="bob"
    )
    run_step(app, fork.id, 3)
    app.change(fork.id, lambda s: s.skip_step(4, 'skipped: if item != "b" was false'))
    run_step(app, fork.id, 5)
    run_step(app, fork.id, 6)
    complete_session(app, fork.id)
    return session_id


def paused_and_resumed(app: Stepline) -> UUID:
    session_id = create(app)
    run_step(app, session_id, 0)
    app.pause(session_id, reason="lunch", actor="bob")
    app.resume(session_id, reason="back", actor="bob")
    return session_id


def paused(app: Stepline) -> UUID:
    session_id = create(app)
    start_step(app, session_id, 0)
    app.pause(session_id, reason="wait", actor="bob")
    return session_id


def cancelled(app: Stepline) -> UUID:
    session_id = create(app)
    run_step(app, session_id, 0)
    start_step(app, session_id, 1)
    app.cancel(session_id, reason="not needed", actor="carol")
    return session_id


def expired(app: Stepline) -> UUID:
    session_id = create(app)
    start_step(app, session_id, 0)
    app.pause(session_id, actor="bob")
    app.expire(session_id)
    return session_id


def pending(app: Stepline) -> UUID:
    return create(app, tenant="globex", labels={"suite": "nightly"})


def batch_cancelled(app: Stepline) -> UUID:
    """A batch of two sessions, one run to the end, then the batch cancelled."""
    request = SessionRequest(name="batched", steps=[StepSpec("step 0")])
    batch_id, (done, _) = app.create_batch([request, request], tenant="acme", actor="alice")
    run_step(app, done, 0)
    complete_session(app, done)
    app.cancel_batch(batch_id, reason="enough", actor="bob")
    return batch_id


def forked(app: Stepline) -> UUID:
    """A completed session forked from step 1, and the fork run to the end."""
    source = completed(app)
    request = fork_request(app.get_session(source), app.history(source), from_step=1)
    fork = app.create(request, tenant="acme", actor="carol").id
    run_step(app, fork, 1, checks=1)
    complete_session(app, fork)
    return fork


def _replayed_step(session: WorkflowSession, index: int, source: UUID) -> None:
    session.record_replayed(
        index, source_session_id=str(source), actions=1, turns_saved=1, tokens_saved=3
    )


def replayed(app: Stepline) -> UUID:
    """A completed session replayed: each step done again without the model."""
    source = completed(app)
    replay = app.create(
        replay_request(app.get_session(source), strict=False), tenant="acme", actor="carol"
    ).id
    for index in (0, 1):
        start_step(app, replay, index)
        app.change(replay, partial(_replayed_step, index=index, source=source))
        complete_step(app, replay, index, summary=f"did step {index} again")
    complete_session(app, replay)
    return replay


def begin_wait(
    app: Stepline,
    session_id: UUID,
    index: int,
    kind: WaitKind,
    question: str | None = None,
    signal: str | None = None,
    due_at: datetime | None = None,
) -> None:
    app.change(
        session_id,
        lambda s: s.begin_wait(
            index, kind=kind, key=f"k{index}", question=question, signal=signal, due_at=due_at
        ),
    )


def waiting(app: Stepline) -> UUID:
    """A session waiting for an approval asked in its first step, due in an hour."""
    session_id = create(app)
    start_step(app, session_id, 0)
    due = datetime.now(UTC) + timedelta(hours=1)
    begin_wait(app, session_id, 0, WaitKind.APPROVAL, question="Ship it?", due_at=due)
    return session_id


def waited(app: Stepline) -> UUID:
    """An approval given, then a signal sent before its wait: completed."""
    session_id = waiting(app)
    app.approve(session_id, "fine", actor="bob")
    complete_step(app, session_id, 0, summary="approved")
    app.signal(session_id, "paid", {"ref": "PAY-1"}, actor="psp")
    start_step(app, session_id, 1)
    begin_wait(app, session_id, 1, WaitKind.SIGNAL, signal="paid")
    complete_step(app, session_id, 1, summary="paid")
    complete_session(app, session_id)
    return session_id


def registered(app: Stepline) -> UUID:
    """A workflow pushed twice, rolled back to its first version, and a session of that;
    again, a version pushed anew (the first pushed again changes nothing)."""
    first = {"name": "registered", "steps": ["GET /{{inputs.page}}"], "inputs": {"page":
             {"type": "string", "default": "login"}}}  # fmt: skip
    for document in (first, {**first, "labels": {"v": "2"}}):
        push(app, WorkflowDocument.model_validate(document), tenant="acme", actor="alice")
    workflow = roll_back(app, tenant="acme", name="registered", to_version=1, actor="bob")
    run = RegisteredRun(Reference("registered"), {"page": "todos"})
    app.create(registered_request(app, "acme", run), tenant="acme", actor="carol")
    return workflow.id


EVERY_KIND: dict[str, Callable[[Stepline], UUID]] = {
    "completed": completed,
    "failed": failed,
    "retried": retried,
    "continued": continued,
    "looped": looped,
    "paused_and_resumed": paused_and_resumed,
    "paused": paused,
    "cancelled": cancelled,
    "expired": expired,
    "pending": pending,
    "batch_cancelled": batch_cancelled,
    "forked": forked,
    "replayed": replayed,
    "waiting": waiting,
    "waited": waited,
    "registered": registered,
}
