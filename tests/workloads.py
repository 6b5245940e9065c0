"""Sessions in every status, produced through the real application's command methods."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.errors import StandardError
from domain.session import StepSpec
from domain.waits import WaitKind
from engine.loop.replay import fork_request, replay_request
from engine.store.app import SessionRequest, Stepline

TIMEOUT = StandardError.of("TASK_LOOP_TIMEOUT", "step took too long")
NOT_FOUND = StandardError.of("VALIDATION_FAILED", "no such page")


def create(
    app: Stepline,
    steps: int = 2,
    tenant: str = "acme",
    labels: dict[str, str] | None = None,
    **config: int,
) -> UUID:
    return app.create_session(
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
    app.start_step(session_id, index)
    app.record_turn(session_id, index, reasoning="look", model="m", prompt_tokens=3)
    for n in range(commands):
        command_id = f"s{index}-c{n}-{app.get_session(session_id).version}"
        app.issue_command(
            session_id, index, command_id=command_id, executor="http", name="get", args={}
        )
        app.finish_command(session_id, index, command_id=command_id, ok=True, duration_ms=5)
    for _ in range(checks):
        app.change(
            session_id,
            lambda s: s.record_check(
                index, executor="http", name="expect_status", args={"code": 200}, ok=True
            ),
        )
    app.complete_step(session_id, index, summary=f"did step {index}")


def completed(app: Stepline) -> UUID:
    session_id = create(app)
    run_step(app, session_id, 0)
    run_step(app, session_id, 1, commands=2, checks=1)
    app.complete_session(session_id)
    return session_id


def failed(app: Stepline) -> UUID:
    session_id = create(app, steps=3)
    run_step(app, session_id, 0)
    app.start_step(session_id, 1)
    app.fail_step(session_id, 1, NOT_FOUND)
    app.fail_session(session_id, NOT_FOUND)
    return session_id


def retried(app: Stepline) -> UUID:
    session_id = create(app, max_attempts=2)
    app.start_step(session_id, 0)
    app.fail_step(session_id, 0, TIMEOUT)
    run_step(app, session_id, 0)
    run_step(app, session_id, 1)
    app.complete_session(session_id)
    return session_id


def paused_and_resumed(app: Stepline) -> UUID:
    session_id = create(app)
    run_step(app, session_id, 0)
    app.pause(session_id, reason="lunch", actor="bob")
    app.resume(session_id, reason="back", actor="bob")
    return session_id


def paused(app: Stepline) -> UUID:
    session_id = create(app)
    app.start_step(session_id, 0)
    app.pause(session_id, reason="wait", actor="bob")
    return session_id


def cancelled(app: Stepline) -> UUID:
    session_id = create(app)
    run_step(app, session_id, 0)
    app.start_step(session_id, 1)
    app.cancel(session_id, reason="not needed", actor="carol")
    return session_id


def expired(app: Stepline) -> UUID:
    session_id = create(app)
    app.start_step(session_id, 0)
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
    app.complete_session(done)
    app.cancel_batch(batch_id, reason="enough", actor="bob")
    return batch_id


def forked(app: Stepline) -> UUID:
    """A completed session forked from step 1, and the fork run to the end."""
    source = completed(app)
    request = fork_request(app.get_session(source), app.history(source), from_step=1)
    fork = app.create(request, tenant="acme", actor="carol").id
    run_step(app, fork, 1, checks=1)
    app.complete_session(fork)
    return fork


def replayed(app: Stepline) -> UUID:
    """A completed session replayed: each step done again without the model."""
    source = completed(app)
    replay = app.create(
        replay_request(app.get_session(source), strict=False), tenant="acme", actor="carol"
    ).id
    for index in (0, 1):
        app.start_step(replay, index)
        app.change(
            replay,
            lambda s, i=index: s.record_replayed(
                i, source_session_id=str(source), actions=1, turns_saved=1, tokens_saved=3
            ),
        )
        app.complete_step(replay, index, summary=f"did step {index} again")
    app.complete_session(replay)
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
    app.start_step(session_id, 0)
    due = datetime.now(UTC) + timedelta(hours=1)
    begin_wait(app, session_id, 0, WaitKind.APPROVAL, question="Ship it?", due_at=due)
    return session_id


def waited(app: Stepline) -> UUID:
    """An approval given, then a signal sent before its wait: completed."""
    session_id = waiting(app)
    app.approve(session_id, "fine", actor="bob")
    app.complete_step(session_id, 0, summary="approved")
    app.signal(session_id, "paid", {"ref": "PAY-1"}, actor="psp")
    app.start_step(session_id, 1)
    begin_wait(app, session_id, 1, WaitKind.SIGNAL, signal="paid")
    app.complete_step(session_id, 1, summary="paid")
    app.complete_session(session_id)
    return session_id


EVERY_KIND: dict[str, Callable[[Stepline], UUID]] = {
    "completed": completed,
    "failed": failed,
    "retried": retried,
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
}
