from __future__ import annotations

import pytest

from engine.store.database import DatabaseUrlError, eventsourcing_env, redacted, with_dbname


def test_a_url_becomes_the_libraries_postgres_settings() -> None:
    env = eventsourcing_env("postgresql://app:s3cret@db.internal:6432/stepline")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.internal", "6432")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_USER"]) == ("stepline", "app")
    assert env["POSTGRES_PASSWORD"] == "s3cret"
    assert "POSTGRES_ENABLE_DB_FUNCTIONS" not in env


def test_a_unix_socket_url_keeps_its_directory() -> None:
    env = eventsourcing_env("postgresql://postgres:@/stepline?host=/tmp/pg")
    assert (env["POSTGRES_HOST"], env["POSTGRES_DBNAME"]) == ("/tmp/pg", "stepline")


def test_unsupported_url_parameters_are_refused_with_advice() -> None:
    with pytest.raises(DatabaseUrlError, match="PGSSLMODE"):
        eventsourcing_env("postgresql://u@h/db?sslmode=require")


def test_another_database_on_the_same_server() -> None:
    assert with_dbname("postgresql://u:p@h:5/a", "b") == "postgresql://u:p@h:5/b"
    assert with_dbname("postgresql://u:@/a?host=/tmp/s", "b") == "postgresql://u:@/b?host=/tmp/s"


def test_passwords_are_redacted_for_logs() -> None:
    assert redacted("postgresql://u:hunter2@h/db") == "postgresql://u:***@h/db"
