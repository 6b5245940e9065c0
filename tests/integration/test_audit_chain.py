"""The hash chain over the log: written by the append function, recomputed by the verifier,
broken by every kind of tampering at the position it happened."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from domain.session import StepSpec
from engine.audit.chain import GENESIS, Head, HeadLog, link, read_head
from engine.audit.chain_verify import KeptHead, Verification, verify
from engine.logs import LOGGER_NAME
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env, temporary_database
from engine.store.schema import EVENTS_TABLE, prepare_database
from engine.store.writer import GroupWriter
from tests import workloads
from tests.integration.test_write_path import write_all_queued

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(fresh_database_url, kwargs={"autocommit": True}) as opened:
        yield opened


def new_sessions(app: Stepline, count: int) -> list[UUID]:
    """`count` sessions, one event each (Created)."""
    return [
        workloads.create_session(
            app, name=f"chained {n}", steps=[StepSpec("GET /")], tenant="acme", actor="alice"
        )
        for n in range(count)
    ]


def sessions_with_events(app: Stepline, count: int = 4) -> list[UUID]:
    """`count` sessions of two events each (Created, StepStarted), one after the other."""
    ids = []
    for session_id in new_sessions(app, count):
        workloads.start_step(app, session_id, 0)
        ids.append(session_id)
    return ids


def verified(url: str, **options: Any) -> Verification:
    with psycopg.connect(url) as conn:
        return verify(conn, EVENTS_TABLE, **options)


def tamper(url: str, statement: str, *params: object) -> None:
    """What someone with write access to the database does behind Stepline's back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def head_of(url: str) -> Head:
    with psycopg.connect(url) as conn:
        return read_head(conn, EVENTS_TABLE)


def rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state, hash "
            "FROM stepline_events ORDER BY notification_id"
        ).fetchall()


def breaks(report: Verification) -> list[tuple[int | None, str]]:
    return [(found.position, found.kind) for found in report.breaks]


# ---- the chain as written --------------------------------------------------------------------


def test_each_row_carries_the_documented_hash_of_its_row_and_the_one_before(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app, 3)

    previous = GENESIS
    for position, aggregate_id, version, topic, state, stored in rows(fresh_database_url):
        encoded = (
            previous
            + position.to_bytes(8, "big")
            + aggregate_id.bytes
            + version.to_bytes(8, "big")
            + len(topic.encode()).to_bytes(4, "big")
            + topic.encode()
            + state
        )
        assert stored == hashlib.sha256(encoded).digest(), position
        previous = stored


def test_a_clean_log_verifies_from_its_first_position_to_its_head(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app, 5)

    report = verified(fresh_database_url)

    assert report.clean
    assert (report.chain_start, report.unchained, report.events) == (1, 0, 10)
    head = head_of(fresh_database_url)
    assert (report.last_position, report.last_hash) == (head.position, head.hash) == (10, head.hash)


def test_events_of_many_sessions_in_one_group_commit_chain_in_order(
    fresh_app: Stepline, fresh_database_url: str, pool: ConnectionPool
) -> None:
    loaded = [fresh_app.get_session(session_id) for session_id in new_sessions(fresh_app, 12)]
    writer = GroupWriter(fresh_app)

    errors = write_all_queued(writer, pool, loaded)  # each starts its step: one event each

    assert errors == {}
    assert (writer.commits, writer.batches) == (2, 12)  # eleven sessions in one append
    assert [row[0] for row in rows(fresh_database_url)] == list(range(1, 25))
    assert verified(fresh_database_url).clean


def test_a_group_commit_that_fails_leaves_no_gap_in_the_positions(
    fresh_app: Stepline, fresh_database_url: str, pool: ConnectionPool
) -> None:
    loaded = [fresh_app.get_session(session_id) for session_id in new_sessions(fresh_app, 12)]
    fresh_app.pause(loaded[-1].id, reason="taken first", actor="bob")  # the group conflicts
    writer = GroupWriter(fresh_app)

    errors = write_all_queued(writer, pool, loaded)  # the group fails, then one by one

    assert set(errors) == {loaded[-1].id}
    assert [row[0] for row in rows(fresh_database_url)] == list(range(1, 12 + 1 + 11 + 1))
    assert verified(fresh_database_url).clean


# ---- tampering, found where it happened ------------------------------------------------------


def test_an_updated_row_is_found_at_its_position(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    tamper(
        fresh_database_url,
        "UPDATE stepline_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
        "'\"attempt\":1', '\"attempt\":9'), 'UTF8') WHERE notification_id = 5",  # a StepStarted
    )

    report = verified(fresh_database_url)

    assert breaks(report) == [(5, "altered")]


def test_a_deleted_row_is_found_at_its_position(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    tamper(fresh_database_url, "DELETE FROM stepline_events WHERE notification_id = 6")

    report = verified(fresh_database_url)

    assert breaks(report) == [(6, "missing")]


def test_two_rows_swapped_are_found_at_the_first_of_them(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    tamper(
        fresh_database_url,
        "UPDATE stepline_events e SET state = o.state FROM stepline_events o "
        "WHERE (e.notification_id, o.notification_id) IN ((3, 7), (7, 3))",
    )

    report = verified(fresh_database_url)

    assert report.first_break is not None
    assert (report.first_break.position, report.first_break.kind) == (3, "altered")
    assert breaks(report) == [(3, "altered"), (7, "altered")]


def test_a_row_written_around_the_append_function_is_found(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    tamper(
        fresh_database_url,
        "INSERT INTO stepline_events (notification_id, originator_id, originator_version, "
        "topic, state) SELECT 9, originator_id, 99, topic, state FROM stepline_events "
        "WHERE notification_id = 8",
    )

    assert breaks(verified(fresh_database_url)) == [(9, "unhashed")]


def test_verifying_from_a_position_trusts_the_hash_before_it(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    tamper(
        fresh_database_url,
        "UPDATE stepline_events SET state = state || 'x' WHERE notification_id = 2",
    )

    later = verified(fresh_database_url, from_position=5)
    whole = verified(fresh_database_url)

    assert later.clean
    assert (later.trusted_start, later.events) == (4, 4)
    assert breaks(whole) == [(2, "altered")]


# ---- heads kept elsewhere --------------------------------------------------------------------


def kept(head: Head) -> KeptHead:
    assert head.hash is not None
    return KeptHead(head.hash, head.position)


def test_a_kept_head_matches_the_log_that_grew_after_it(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    head = head_of(fresh_database_url)
    sessions_with_events(fresh_app)

    assert verified(fresh_database_url, head=kept(head)).clean
    assert verified(fresh_database_url, head=KeptHead.parse(head.hash.hex())).clean  # type: ignore[union-attr]


def test_a_kept_head_before_where_the_walk_starts_is_not_taken_as_checked(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app, 1)
    head = head_of(fresh_database_url)
    sessions_with_events(fresh_app, 1)

    report = verified(fresh_database_url, from_position=3, head=kept(head))

    assert breaks(report) == [(2, "head")]
    assert "before the walk's start" in report.breaks[0].detail


def test_a_head_kept_before_the_last_rows_were_removed_no_longer_matches(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    head = head_of(fresh_database_url)
    tamper(fresh_database_url, "DELETE FROM stepline_events WHERE notification_id > 6")

    assert verified(fresh_database_url).clean  # no link is broken: the chain alone cannot tell
    assert breaks(verified(fresh_database_url, head=kept(head))) == [(8, "head")]


def test_a_head_kept_before_a_rewrite_of_the_chain_no_longer_matches(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    sessions_with_events(fresh_app)
    head = head_of(fresh_database_url)
    rewrite_from(fresh_database_url, 3)  # a row altered and every hash after it recomputed

    assert verified(fresh_database_url).clean
    assert breaks(verified(fresh_database_url, head=kept(head))) == [(8, "head")]
    hash_only = KeptHead.parse(head.hash.hex())  # type: ignore[union-attr]
    assert breaks(verified(fresh_database_url, head=hash_only)) == [(None, "head")]


def rewrite_from(url: str, position: int) -> None:
    """Alter the row at `position` and recompute the chain after it, as a careful forger
    with write access would."""
    tamper(
        url, "UPDATE stepline_events SET state = state || ' ' WHERE notification_id = %s", position
    )
    previous = GENESIS
    for at, aggregate_id, version, topic, state, kept_hash in rows(url):
        stored = kept_hash
        if at >= position:
            fields = {"aggregate_id": aggregate_id.bytes, "version": version}
            stored = link(previous, at, topic=topic.encode(), state=state, **fields)
            tamper(
                url, "UPDATE stepline_events SET hash = %s WHERE notification_id = %s", stored, at
            )
        previous = stored


# ---- a log older than the chain -------------------------------------------------------------


@pytest.fixture
def legacy_database_url(postgres_server_url: str) -> Iterator[str]:
    """A database a Stepline of before schema versions made and wrote a session in."""
    with temporary_database(postgres_server_url, "stepline_legacy") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((FIXTURES / "schema_before_versions.sql").read_text())
        yield url


def test_a_log_older_than_the_chain_is_chained_from_its_next_event(
    legacy_database_url: str,
) -> None:
    prepare_database(legacy_database_url)
    legacy = rows(legacy_database_url)
    app = Stepline(eventsourcing_env(legacy_database_url))
    try:
        app.cancel(legacy[0][1], reason="migrated", actor="test")
    finally:
        app.close()

    report = verified(legacy_database_url)

    assert report.clean
    assert all(row[5] is None for row in legacy)
    assert report.unchained == len(legacy)
    assert report.chain_start == legacy[-1][0] + 1
    assert report.events == 1


# ---- the head in the log ---------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """What Stepline logs meanwhile (its logger does not propagate to the root's capture)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_one_process_logs_the_head_per_interval(
    fresh_app: Stepline, pool: ConnectionPool, log_lines: list[str]
) -> None:
    sessions_with_events(fresh_app, 1)
    first = HeadLog(pool, EVENTS_TABLE, interval_s=3600)
    second = HeadLog(pool, EVENTS_TABLE, interval_s=3600)

    logged = first.once()
    skipped = second.once()

    assert logged is not None
    assert logged.hash is not None
    assert skipped is None
    heads = [line for line in log_lines if line.startswith("Audit head")]
    assert heads == [
        f"Audit head: position 2, hash {logged.hash.hex()}, at {logged.time.isoformat()}"
    ]
