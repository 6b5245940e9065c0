"""`stepline audit verify` and `stepline db grants`, run as an operator runs them."""

from __future__ import annotations

import json

import psycopg

from engine.audit.chain import read_head
from engine.audit.chain_verify import last_verification
from engine.store.app import Stepline
from engine.store.schema import EVENTS_TABLE
from tests.integration.test_audit_chain import sessions_with_events, tamper
from tests.integration.test_cli import stepline


def test_verify_exits_0_on_a_clean_log_and_prints_the_head_to_keep(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)

    result = stepline("audit", "verify", STEPLINE_DATABASE_URL=fresh_database_url)

    assert result.returncode == 0, result.stderr
    with psycopg.connect(fresh_database_url) as conn:
        head = read_head(conn, EVENTS_TABLE)
        recorded = last_verification(conn)
    assert head.hash is not None
    assert "The chain holds: 8 events, positions 1 to 8" in result.stdout
    assert f"Head: 8:{head.hash.hex()}" in result.stdout
    assert recorded is not None  # for the dashboard
    assert (recorded.clean, recorded.to_position, recorded.head_hash) == (True, 8, head.hash)


def test_verify_exits_1_naming_the_first_break_and_records_it(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    tamper(fresh_database_url, "DELETE FROM stepline_events WHERE notification_id = 3")

    result = stepline("audit", "verify", "--json", STEPLINE_DATABASE_URL=fresh_database_url)

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["clean"] is False
    assert report["breaks"][0]["position"] == 3
    assert report["breaks"][0]["kind"] == "missing"
    with psycopg.connect(fresh_database_url) as conn:
        recorded = last_verification(conn)
    assert recorded is not None
    assert (recorded.clean, recorded.first_break) == (False, 3)


def test_verify_holds_the_log_to_a_head_kept_elsewhere(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    with psycopg.connect(fresh_database_url) as conn:
        head = read_head(conn, EVENTS_TABLE)
    assert head.hash is not None
    kept = f"{head.position}:{head.hash.hex()}"
    before = stepline("audit", "verify", "--head", kept, STEPLINE_DATABASE_URL=fresh_database_url)
    tamper(fresh_database_url, "DELETE FROM stepline_events WHERE notification_id = 8")

    after = stepline("audit", "verify", "--head", kept, STEPLINE_DATABASE_URL=fresh_database_url)

    assert before.returncode == 0, before.stderr
    assert after.returncode == 1, after.stderr
    assert "position 8" in after.stdout
    assert "past the log's end (7): rows were removed from the end" in after.stdout


def test_verify_refuses_a_head_that_is_not_one(fresh_database_url: str) -> None:
    result = stepline(
        "audit", "verify", "--head", "8:abc", STEPLINE_DATABASE_URL=fresh_database_url
    )

    assert result.returncode == 2
    assert "a head is 64 hex digits, or POSITION:HASH" in result.stderr


def test_db_grants_prints_the_roles_sql_and_refuses_a_name_it_cannot_quote() -> None:
    printed = stepline("db", "grants", "--role", "ops_app")
    refused = stepline("db", "grants", "--role", "app; DROP TABLE x")

    assert printed.returncode == 0, printed.stderr
    assert "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON stepline_events FROM ops_app;" in (
        printed.stdout
    )
    assert refused.returncode == 2
    assert "DROP TABLE" not in refused.stdout
