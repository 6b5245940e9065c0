"""The webhook outbox: a delivery queued for each status a session's webhook names, once,
however often the view is replayed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from psycopg_pool import ConnectionPool

from domain.errors import StandardError
from domain.session import StepSpec
from engine.live.projector import Projector
from engine.store.app import SessionRequest, Stepline
from tests import workloads

HOOK = "https://hooks.example.com/stepline"


@pytest.fixture
def projector(fresh_app: Stepline, fresh_database_url: str) -> Iterator[Projector]:
    with ConnectionPool(fresh_database_url, kwargs={"autocommit": True}) as pool:
        yield Projector(fresh_app, pool)


def hooked_session(app: Stepline, *events: str) -> UUID:
    config: dict[str, Any] = {"executor": "shell", "webhook": {"url": HOOK, "events": list(events)}}
    request = SessionRequest("hooked", [StepSpec("run `true`")], config=config, labels={"a": "b"})
    return app.create(request, tenant="acme", actor="alice").id


def queued(projector: Projector) -> list[tuple[str, str, str]]:
    projector.catch_up()
    with projector.pool.connection() as conn:
        rows = conn.execute(
            "SELECT webhook_id, event_type, state FROM webhook_deliveries ORDER BY created_at"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_only_the_statuses_its_webhook_names_are_queued(
    fresh_app: Stepline, projector: Projector
) -> None:
    session_id = hooked_session(fresh_app, "session.paused", "session.failed")
    workloads.start_step(fresh_app, session_id, 0)
    fresh_app.pause(session_id, actor="alice")
    fresh_app.resume(session_id, actor="alice")
    fresh_app.fail_session(session_id, StandardError.of("STEP_FAILED", "it broke"))
    assert [kind for _, kind, _ in queued(projector)] == ["session.paused", "session.failed"]


def test_a_session_without_a_webhook_queues_nothing(
    fresh_app: Stepline, projector: Projector
) -> None:
    request = SessionRequest("plain", [StepSpec("run `true`")], config={"executor": "shell"})
    session_id = fresh_app.create(request, tenant="acme", actor="alice").id
    workloads.start_step(fresh_app, session_id, 0)
    workloads.complete_step(fresh_app, session_id, 0, summary="ok", evidence=[])
    workloads.complete_session(fresh_app, session_id)
    assert queued(projector) == []


def test_a_rebuilt_outbox_queues_no_webhook_twice(
    fresh_app: Stepline, projector: Projector
) -> None:
    session_id = hooked_session(fresh_app, "session.completed")
    workloads.start_step(fresh_app, session_id, 0)
    workloads.complete_step(fresh_app, session_id, 0, summary="ok", evidence=[])
    workloads.complete_session(fresh_app, session_id)
    before = queued(projector)
    with projector.pool.connection() as conn:
        conn.execute("UPDATE webhook_deliveries SET state = 'delivered'")
    projector.rebuild(["webhook_outbox"])
    assert [(i, kind) for i, kind, _ in queued(projector)] == [(i, kind) for i, kind, _ in before]
    assert [state for _, _, state in queued(projector)] == ["delivered"]
