"""A fork of an ended session starts with its source's cookies, kept sealed for a while after
the source ended, and says plainly when they are gone."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from domain.session import SessionStatus
from engine.live.projector import Projector
from engine.loop.replay import fork_request
from engine.ownership.executor_state import ExecutorStates
from engine.ownership.leases import Leases
from engine.ownership.sweep import Sweep
from engine.store import schema
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env, temporary_database
from tests.integration.conftest import (
    LoopFactory,
    drive,
    kept_states,
    master_key_of_tests,
    start_session,
)

LOGIN = 'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}'
SIGNED_IN_READ = [LOGIN, "GET /todos", "expect status 200"]
DAY_S = 86_400
LEGACY_DUMP = Path(__file__).resolve().parents[1] / "fixtures" / "schema_before_versions.sql"
"""A database as Stepline prepared it before schema versions, when cookies were kept in clear."""


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of the test's own, which its views are built in too."""
    return fresh_app


def tidy_up(app: Stepline, projector: Projector, states: ExecutorStates) -> None:
    """What the TTL sweep does once a session has ended (no session is past its TTL here)."""
    leases = Leases(projector.pool, lease_s=15)
    assert Sweep(app, projector, leases, states, ttl_ms=3_600_000).once() == []


def ended_session(loop_of: LoopFactory, states: ExecutorStates, target: str) -> UUID:
    loop = loop_of(ai=False, states=states)
    source = start_session(loop, list(SIGNED_IN_READ), target)
    assert drive(loop, source).status is SessionStatus.COMPLETED
    return source


def fork_from(loop_of: LoopFactory, states: ExecutorStates, source: UUID, step: int) -> UUID:
    loop = loop_of(ai=False, states=states)
    request = fork_request(loop.app.get_session(source), loop.app.history(source), from_step=step)
    return loop.app.create(request, tenant="acme", actor="alice").id


def test_a_fork_of_an_ended_session_from_after_its_sign_in_is_still_signed_in(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector
) -> None:
    states = kept_states(projector.pool, keep_after_end_s=DAY_S)
    source = ended_session(make_loop, states, target)
    tidy_up(app, projector, states)  # the source has ended: the sweep has been by

    forked = fork_from(make_loop, states, source, step=1)
    session = drive(make_loop(ai=False, states=states), forked)

    assert session.status is SessionStatus.COMPLETED, session.error  # GET /todos: 200, not 401
    assert states.gone_for_fork(source, 1) is None


def test_kept_cookies_are_sealed_not_in_clear(
    make_loop: LoopFactory, target: str, projector: Projector, fresh_database_url: str
) -> None:
    states = kept_states(projector.pool, keep_after_end_s=DAY_S)
    source = ended_session(make_loop, states, target)

    cookie = states.load(source)["http"]["cookies"][0]["value"]
    with psycopg.connect(fresh_database_url) as conn:
        rows = conn.execute("SELECT row_to_json(e)::text FROM executor_state e").fetchall()
    stored = " ".join(row[0] for row in rows)
    assert rows
    assert cookie not in stored
    assert cookie.encode().hex() not in stored  # nor as the bytes of a bytea


def test_a_fork_after_its_sources_cookies_were_forgotten_says_they_are_gone(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector
) -> None:
    states = kept_states(projector.pool, keep_after_end_s=0)  # forgotten once it has ended
    source = ended_session(make_loop, states, target)
    tidy_up(app, projector, states)

    notice = states.gone_for_fork(source, 1)
    forked = fork_from(make_loop, states, source, step=1)
    session = drive(make_loop(ai=False, states=states), forked)

    assert states.load(source) == {}
    assert notice is not None
    assert "the source's http cookies are gone" in notice
    assert "fork from the sign-in step instead" in notice
    assert states.gone_for_fork(source, 0) is None  # from the start it signs in itself
    assert session.status is SessionStatus.FAILED  # signed out: 401
    assert session.steps[2].error is not None
    assert "expected status 200, got 401" in session.steps[2].error["message"]


def test_state_an_older_version_kept_in_clear_is_sealed_by_the_schema_migration(
    postgres_server_url: str,
) -> None:
    session_id = UUID(int=7)
    state = {"cookies": [{"name": "session", "value": "in-clear-1234", "domain": "", "path": "/"}]}
    with temporary_database(postgres_server_url, "stepline_sealing") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(LEGACY_DUMP.read_text())  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO public.executor_state VALUES (%s, 'http', %s, now())",
                (session_id, Jsonb(state)),
            )
        app = Stepline(eventsourcing_env(url))
        try:
            with ConnectionPool(url, kwargs={"autocommit": True}) as pool:
                schema.prepare(pool, app, master_key_of_tests())
                states = kept_states(pool)
                assert states.load(session_id) == {"http": state}
            with psycopg.connect(url) as conn:
                stored = conn.execute(
                    "SELECT row_to_json(e)::text FROM executor_state e"
                ).fetchall()
        finally:
            app.close()
    assert "in-clear-1234" not in json.dumps(stored)
