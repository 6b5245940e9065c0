"""The application role of `stepline db grants`: Stepline runs as it, appending to the log,
and PostgreSQL refuses it every rewrite of the log. Roles are the cluster's, not the
database's: each test makes its own, named for the run, and drops it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg import errors

from domain.session import StepSpec
from engine.audit.chain_verify import verify
from engine.bootstrap import Runtime, open_runtime
from engine.settings import Settings
from engine.store.database import DatabaseUnavailable
from engine.store.schema import EVENTS_TABLE, application_grants
from tests import workloads


@pytest.fixture
def application_url(fresh_database_url: str) -> Iterator[str]:
    """The URL of a role made by the grants `stepline db grants` prints, run by the owner."""
    role = f"stepline_app_{uuid4().hex[:12]}"
    with psycopg.connect(fresh_database_url, autocommit=True) as owner:
        owner.execute(application_grants(role))
    user = fresh_database_url.replace("//postgres@", f"//{role}@", 1)
    assert role in user, "the tests' server URL names its user postgres"
    yield user
    with psycopg.connect(fresh_database_url, autocommit=True) as owner:
        owner.execute(f"DROP OWNED BY {role}")  # its grants and default privileges here
        owner.execute(f"DROP ROLE {role}")


@pytest.fixture
def runtime(application_url: str, fresh_database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """Stepline as an operator runs it: the owner's URL to migrate, the application's to run."""
    settings = Settings(
        database_url=application_url,
        migration_database_url=fresh_database_url,
        data_dir=tmp_path,
    )
    with open_runtime(settings) as opened:
        yield opened


def test_stepline_runs_as_the_application_role_and_appends_to_the_chain(
    runtime: Runtime, application_url: str
) -> None:
    session_id = workloads.create_session(
        runtime.app, name="as the app", steps=[StepSpec("GET /")], tenant="acme", actor="alice"
    )
    workloads.start_step(runtime.app, session_id, 0)
    runtime.projector.catch_up()

    with runtime.projector.pool.connection() as conn:
        user = conn.execute("SELECT current_user").fetchone()
        indexed = conn.execute(
            "SELECT status FROM session_index WHERE session_id = %s", (session_id,)
        ).fetchone()
    assert user is not None
    assert user[0] in application_url
    assert indexed == ("running",)
    with psycopg.connect(application_url) as conn:
        assert verify(conn, EVENTS_TABLE).events == 2


@pytest.mark.parametrize(
    "rewrite",
    [
        "UPDATE stepline_events SET state = state || 'x'",
        "DELETE FROM stepline_events",
        "TRUNCATE stepline_events",
        "INSERT INTO stepline_events (originator_id, originator_version, topic, state) "
        "SELECT originator_id, 99, topic, state FROM stepline_events",
    ],
    ids=["update", "delete", "truncate", "insert-around-the-chain"],
)
def test_postgresql_refuses_the_application_role_any_rewrite_of_the_log(
    runtime: Runtime, rewrite: str
) -> None:
    workloads.create_session(
        runtime.app, name="kept", steps=[StepSpec("GET /")], tenant="acme", actor="a"
    )

    with (
        runtime.projector.pool.connection() as conn,
        pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
    ):
        conn.execute(rewrite)


def test_without_the_owners_url_the_application_role_is_told_to_give_it(
    application_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=application_url, data_dir=tmp_path)

    with (
        pytest.raises(DatabaseUnavailable, match="STEPLINE_MIGRATION_DATABASE_URL"),
        open_runtime(settings),
    ):
        pass
