"""Where the task loop finds a step's learned action: the `learned_actions` view, one tenant's.

The key is made from the session's own log exactly as the view makes it (`domain.learning`),
so a session finds what an earlier session of the same workflow, step, executor and starting
point learned — of its own tenant only: the tenant is part of the key and of the query. The
view trails the log by the projector's lag: a session started the moment another completed
may not find what that one learned yet, and asks the model.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.application import AggregateNotFoundError
from psycopg_pool import ConnectionPool

from domain.learning import (
    LearnedActions,
    LearnedKey,
    start_base,
    starting_point,
    target_of,
    workflow_identity,
)
from domain.session import WorkflowSession
from engine.store.app import Stepline, decided
from projections.learned_actions import LearnedAction, current


class LearnedActionSource:
    """Reads learned actions for the task loop (one pool, built by the composition root)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def current(self, key: LearnedKey) -> LearnedAction | None:
        with self.pool.connection() as conn:
            return current(conn, key)


def key_of(
    history: Sequence[WorkflowSession.Event], step_index: int, step_text: str, attempt: int
) -> LearnedKey:
    """The learned-action key of one attempt of one step, from the session's history: where
    it started is the last path the session went to before the attempt's `StepStarted`."""
    created = history[0]
    assert isinstance(created, WorkflowSession.Created)
    config = created.config
    executor = str(config.get("executor") or "http")
    last_target = None
    for event in history:
        if isinstance(event, WorkflowSession.StepStarted) and (
            event.step_index,
            event.attempt,
        ) == (step_index, attempt):
            break
        if isinstance(event, WorkflowSession.CommandIssued):
            last_target = target_of(event.executor, event.name, event.args) or last_target
    texts = [step["text"] for step in created.steps]
    return LearnedKey(
        tenant=created.tenant,
        workflow=workflow_identity(created.name, config, texts),
        step_text=step_text,
        executor=executor,
        start=starting_point(executor, start_base(config), last_target),
    )


def forget(app: Stepline, tenant: str, action_id: str, actor: str) -> None:
    """Record that the tenant forgot the action: its live version is no longer used, and a
    rebuild of the view forgets it again. An id of another tenant's action forgets nothing
    (the view forgets only the tenant's own)."""

    def load() -> LearnedActions:
        try:
            found: LearnedActions = app.repository.get(LearnedActions.create_id(tenant))
        except AggregateNotFoundError:
            return LearnedActions.create(tenant)
        return found

    decided(app, load, lambda learned: learned.forget(action_id, actor), "the learned actions")
