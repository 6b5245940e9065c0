"""One schema owner: every table made by one `prepare()` under one lock, versioned, migrated in
place, and safe to run from many processes at the same instant."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from domain.session import SessionStatus
from engine.live.projector import Projector
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env, temporary_database
from engine.store.schema import MIGRATIONS, SchemaTooNew, prepare_database

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LEGACY_SESSION = UUID("a14dd985-5c25-4c7b-9630-ccb5fa4c6372")
"""The session recorded in schema_before_versions.sql: a pg_dump of a database that the
Stepline of before schema versions (commit 8f0f91e) prepared, then created this session in."""


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """A database nothing has prepared."""
    with temporary_database(postgres_server_url, "stepline_schema") as url:
        yield url


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def recorded_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM stepline_schema ORDER BY version").fetchall()
    return [row[0] for row in rows]


def test_a_fresh_database_gets_every_table_and_the_latest_version(
    empty_database_url: str,
) -> None:
    prepare_database(empty_database_url)

    assert {
        "stepline_events",
        "stepline_snapshots",
        "stepline_schema",
        "session_leases",
        "stepline_workers",
        "tenant_quotas",
        "key_quotas",
        "executor_state",
        "tenant_secrets",
        "projection_tracking",
        "session_index",
        "audit_log",
    } <= tables(empty_database_url)
    assert recorded_versions(empty_database_url) == [m.version for m in MIGRATIONS]


def test_building_the_application_runs_no_ddl(empty_database_url: str) -> None:
    app = Stepline(eventsourcing_env(empty_database_url))
    app.close()

    assert tables(empty_database_url) == set()  # only engine.store.schema.prepare makes tables


def test_eight_preparers_at_the_same_instant_all_succeed_and_migrate_once(
    empty_database_url: str,
) -> None:
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def prepare() -> None:
        start.wait()
        try:
            prepare_database(empty_database_url)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=prepare) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert failures == []
    assert recorded_versions(empty_database_url) == [m.version for m in MIGRATIONS]


def test_a_database_made_before_schema_versions_migrates_in_place(
    empty_database_url: str,
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute((FIXTURES / "schema_before_versions.sql").read_text())  # type: ignore[arg-type]
    assert "stepline_schema" not in tables(empty_database_url)
    assert "tenant_quotas" not in tables(empty_database_url)  # the API used to make it

    prepare_database(empty_database_url)

    assert recorded_versions(empty_database_url) == [m.version for m in MIGRATIONS]
    assert {"tenant_quotas", "key_quotas"} <= tables(empty_database_url)
    app = Stepline(eventsourcing_env(empty_database_url))
    try:
        session = app.get_session(LEGACY_SESSION)  # the log it had is read as before
        assert session.name == "made before schema versions"
        assert session.status is SessionStatus.PENDING
        app.cancel(LEGACY_SESSION, reason="migrated", actor="test")  # and written on after
        with ConnectionPool(empty_database_url, kwargs={"autocommit": True}) as pool:
            Projector(app, pool).catch_up()
            with pool.connection() as conn:
                row = conn.execute(
                    "SELECT status FROM session_index WHERE session_id = %s", (LEGACY_SESSION,)
                ).fetchone()
        assert row == ("cancelled",)  # its views kept their rows and followed the log
    finally:
        app.close()


def test_a_database_migrated_by_a_newer_stepline_is_refused(empty_database_url: str) -> None:
    prepare_database(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO stepline_schema (version, name) VALUES (999, 'from the future')")

    with pytest.raises(SchemaTooNew, match="version 999"):
        prepare_database(empty_database_url)
