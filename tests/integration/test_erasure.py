"""Erasing a session destroys its data key: the database keeps none of what it said, the
views keep a tombstone, the audit trail says who erased it and why, and the log still
verifies and rebuilds the views exactly."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from api.http.event_views import event_view
from domain.errors import ScheduleNotFound, SessionErased
from domain.schedule import Schedule, Timing
from domain.session import ERASED, SessionStatus, StepSpec
from engine.audit.chain_verify import verify
from engine.live.projector import Projector
from engine.loop.replay import fork_request, replay_request
from engine.privacy.erasure import Erasure
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.tenancy.secret_store import MasterKey
from projections import ai_usage
from tests import workloads
from tests.integration.test_projections import dump
from tests.integration.test_sealing import found

STEP_TEXT = "Renew the membership of Ottoline Brackenbury-Quince"
REQUEST_BODY = '{"member": "ottoline.bq@example.org", "plan": "heliotrope-gold"}'
REASONING = "The form asks for the heliotrope-gold plan of Ms Brackenbury-Quince"
SECRETS = ["Brackenbury-Quince", "ottoline.bq@example.org", "heliotrope-gold"]


def pg_dump(url: str) -> bytes:
    return subprocess.run(["/usr/bin/pg_dump", url], capture_output=True, check=True).stdout


@pytest.fixture
def sealed(fresh_database_url: str) -> Iterator[Stepline]:
    application = Stepline(
        eventsourcing_env(fresh_database_url), master_key=MasterKey(os.urandom(32))
    )
    yield application
    application.close()


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(fresh_database_url, kwargs={"autocommit": True}) as opened:
        yield opened


@pytest.fixture
def projector(sealed: Stepline, pool: ConnectionPool) -> Projector:
    runner = Projector(sealed, pool)
    runner.prepare()
    return runner


@pytest.fixture
def erasure(sealed: Stepline, pool: ConnectionPool, tmp_path: object) -> Erasure:
    return Erasure(sealed, pool, tmp_path)  # type: ignore[operator]


def a_session_that_said_things(app: Stepline, *, finish: bool = True) -> UUID:
    session_id = workloads.create_session(
        app,
        name="Membership renewal",
        steps=[StepSpec(STEP_TEXT, expect="the plan is heliotrope-gold")],
        tenant="acme",
        actor="alice",
        labels={"member": "Brackenbury-Quince"},
        # Its webhook's delivery carries the labels: the erasure must reach the queue too.
        config={"webhook": {"url": "http://127.0.0.1:9/hook", "events": ["session.completed"]}},
    )
    workloads.start_step(app, session_id, 0)
    workloads.record_turn(
        app,
        session_id,
        0,
        reasoning=REASONING,
        model="scripted",
        prompt_tokens=40,
        completion_tokens=9,
        latency_ms=3,
    )
    workloads.issue_command(
        app,
        session_id,
        0,
        command_id="c1",
        executor="http",
        name="post",
        args={"url": "http://127.0.0.1:9/renew", "body": REQUEST_BODY},
    )
    workloads.finish_command(app, session_id, 0, command_id="c1", ok=True, output=REQUEST_BODY)
    if finish:
        workloads.complete_step(app, session_id, 0, summary="Renewed heliotrope-gold", evidence=[])
        workloads.complete_session(app, session_id, outcome="Brackenbury-Quince renewed")
    return session_id


def test_after_erasure_the_database_holds_none_of_what_the_session_said(
    sealed: Stepline, projector: Projector, erasure: Erasure, fresh_database_url: str
) -> None:
    session_id = a_session_that_said_things(sealed)
    projector.catch_up()
    before = pg_dump(fresh_database_url)
    with psycopg.connect(fresh_database_url) as conn:
        queued = conn.execute("SELECT body FROM webhook_deliveries").fetchall()
    assert len(queued) == 1
    assert "Brackenbury-Quince" in queued[0][0]

    erasure.erase(session_id, "GDPR request 17", "dpo@acme")
    projector.catch_up()
    after = pg_dump(fresh_database_url)

    assert all(found(secret, before) for secret in SECRETS)
    assert [secret for secret in SECRETS if found(secret, after)] == []


def test_the_views_keep_a_tombstone_and_the_audit_says_who_erased_it_and_why(
    sealed: Stepline, projector: Projector, erasure: Erasure, pool: ConnectionPool
) -> None:
    session_id = a_session_that_said_things(sealed)

    erasure.erase(session_id, "GDPR request 17", "dpo@acme")
    projector.catch_up()

    with pool.connection() as conn:
        index = conn.execute(
            "SELECT tenant, name, status, labels, erased_at IS NOT NULL FROM session_index "
            "WHERE session_id = %s",
            (session_id,),
        ).fetchone()
        steps = conn.execute(
            "SELECT count(*) FROM step_history WHERE session_id = %s", (session_id,)
        ).fetchone()
        audit = conn.execute(
            "SELECT event_type, actor, description FROM audit_log WHERE session_id = %s "
            "ORDER BY position",
            (session_id,),
        ).fetchall()
    assert index == ("acme", ERASED, "completed", {}, True)
    assert steps == (0,)
    assert audit[-1] == ("Erased", "dpo@acme", "erased: GDPR request 17")
    assert audit[0] == ("Created", "alice", ERASED)


def test_an_erased_session_loads_as_its_tombstone_and_refuses_replay_and_fork(
    sealed: Stepline, erasure: Erasure, fresh_database_url: str
) -> None:
    session_id = a_session_that_said_things(sealed)
    erasure.erase(session_id, "GDPR request 17", "dpo@acme")
    other_process = Stepline(
        eventsourcing_env(fresh_database_url),
        master_key=sealed.data_keys.master,  # type: ignore[union-attr]
    )
    try:
        loaded = other_process.get_session(session_id)
        history = other_process.history(session_id)
    finally:
        other_process.close()

    assert (loaded.erased, loaded.name, loaded.status) == (True, ERASED, SessionStatus.COMPLETED)
    assert [type(e).__name__ for e in history][-2:] == ["Redacted", "Erased"]
    with pytest.raises(SessionErased):
        replay_request(loaded, strict=False)
    with pytest.raises(SessionErased):
        fork_request(loaded, history, from_step=0)


def test_a_rebuild_reproduces_the_views_and_the_chain_still_verifies(
    sealed: Stepline,
    projector: Projector,
    erasure: Erasure,
    pool: ConnectionPool,
    fresh_database_url: str,
) -> None:
    erased = a_session_that_said_things(sealed)
    a_session_that_said_things(sealed)  # kept
    erasure.erase(erased, "GDPR request 17", "dpo@acme")
    projector.catch_up()
    live = dump(pool)

    Projector(
        Stepline(eventsourcing_env(fresh_database_url), master_key=sealed.data_keys.master), pool
    ).rebuild()  # type: ignore[union-attr]
    with psycopg.connect(fresh_database_url) as conn:
        verification = verify(conn, sealed.events_table)

    assert dump(pool) == live
    assert verification.clean


def test_an_erased_sessions_turns_count_the_same_rebuilt_one_event_per_batch(
    sealed: Stepline,
    projector: Projector,
    erasure: Erasure,
    pool: ConnectionPool,
    fresh_database_url: str,
) -> None:
    erased = a_session_that_said_things(sealed, finish=False)
    workloads.record_turn(
        sealed, erased, 0, reasoning=REASONING, model="scripted", prompt_tokens=1, latency_ms=3
    )
    erasure.erase(erased, "GDPR request 18", "dpo@acme")
    projector.catch_up()
    with pool.connection() as conn:
        live = ai_usage.of_session(conn, erased)

    Projector(
        Stepline(eventsourcing_env(fresh_database_url), master_key=sealed.data_keys.master),
        pool,
        batch_size=1,  # its two turns, redacted, in batches of their own
    ).rebuild(["ai_usage"])  # type: ignore[union-attr]

    with pool.connection() as conn:
        assert ai_usage.of_session(conn, erased) == live
    assert [(u.turns, u.prompt_tokens) for u in live] == [(2, 41)]


def test_a_session_erased_while_running_is_cancelled_first(
    sealed: Stepline, erasure: Erasure
) -> None:
    session_id = a_session_that_said_things(sealed, finish=False)

    erased = erasure.erase(session_id, "asked to stop and forget", "dpo@acme")

    history = sealed.history(session_id)
    assert (erased.cancelled, erased.shredded) == (True, True)
    assert [type(e).__name__ for e in history][-2:] == ["Redacted", "Erased"]
    assert history[-1].status == "cancelled"  # type: ignore[attr-defined]


def test_erasing_a_tenant_erases_its_sessions_secrets_and_schedules(
    sealed: Stepline, erasure: Erasure, pool: ConnectionPool, projector: Projector
) -> None:
    leaving = [a_session_that_said_things(sealed) for _ in range(2)]
    staying = workloads.create_session(
        sealed, name="Globex", steps=[StepSpec("stay")], tenant="globex", actor="bob"
    )
    schedules = {tenant: a_schedule(sealed, tenant) for tenant in ("acme", "globex")}
    projector.catch_up()
    with pool.connection() as conn:
        for table in ("tenant_secrets", "tenant_webhook_secrets"):
            conn.execute(
                f"INSERT INTO {table} (tenant, nonce, ciphertext, created_at"
                + (", name, origins, updated_at)" if table == "tenant_secrets" else ")")
                + " VALUES ('acme', '\\x00', '\\x00', now()"
                + (", 'TOKEN', '{}', now())" if table == "tenant_secrets" else ")")
            )

    erased = erasure.erase_tenant("acme", "the tenant left", "operator")

    with pool.connection() as conn:
        secrets = conn.execute(
            "SELECT (SELECT count(*) FROM tenant_secrets), "
            "(SELECT count(*) FROM tenant_webhook_secrets)"
        ).fetchone()
    assert sorted(e.session_id for e in erased) == sorted(leaving)
    assert all(sealed.get_session(s).erased for s in leaving)
    assert not sealed.get_session(staying).erased
    assert secrets == (0, 0)
    with pytest.raises(ScheduleNotFound):
        sealed.get_schedule(schedules["acme"])  # deleted
    assert not sealed.get_schedule(schedules["globex"]).deleted


def a_schedule(app: Stepline, tenant: str) -> UUID:
    schedule = Schedule(
        tenant=tenant,
        name="nightly",
        workflow={"name": "nightly", "steps": ["GET /"]},
        timing=Timing.of(None, "1h", "UTC").to_dict(),
        catch_up="one",
        paused=False,
        webhook=None,
        starts_at="2026-01-01T00:00:00+00:00",
        actor="alice",
    )
    app.save(schedule)
    return schedule.id


def test_the_events_of_an_erased_session_are_shown_as_what_is_left_of_them(
    sealed: Stepline, erasure: Erasure
) -> None:
    session_id = a_session_that_said_things(sealed)
    erasure.erase(session_id, "GDPR request 17", "dpo@acme")

    shown = [event_view(event) for event in sealed.history(session_id)]

    redacted = [e.model_dump(mode="json") for e in shown if e.type == "Redacted"]
    assert redacted[0]["data"] == {"event_type": "TurnRecorded"}
    assert shown[-1].model_dump(mode="json")["data"]["reason"] == "GDPR request 17"
