"""A session's events are stored sealed under its own data key, and the key's master key can
be rotated while sessions run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from uuid import UUID

import psycopg
import pytest
from cryptography.exceptions import InvalidTag

from domain.session import StepSpec
from engine.privacy.data_keys import KeyNotAvailable, retire, rotate
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.tenancy.secret_store import MasterKey
from tests import workloads

STEP_TEXT = "Look up the tangerine-walrus-4471 account"
REASONING = "The page mentions a quokka-ledger-9090 entry"


def dump(url: str) -> bytes:
    return subprocess.run(["/usr/bin/pg_dump", url], capture_output=True, check=True).stdout


def found(text: str, dumped: bytes) -> bool:
    """As text, or inside a bytea column (which pg_dump writes in hex)."""
    return text.encode() in dumped or text.encode().hex().encode() in dumped


def sealed_app(url: str, key: bytes) -> Stepline:
    return Stepline(eventsourcing_env(url), cache_size=0, master_key=MasterKey(key))


@pytest.fixture
def master() -> bytes:
    return os.urandom(32)


@pytest.fixture
def sealed(fresh_database_url: str, master: bytes) -> Iterator[Stepline]:
    application = sealed_app(fresh_database_url, master)
    yield application
    application.close()


def a_session_with_a_turn(app: Stepline) -> UUID:
    session_id = workloads.create_session(
        app, name="Walrus audit", steps=[StepSpec(STEP_TEXT)], tenant="acme", actor="alice"
    )
    workloads.start_step(app, session_id, 0)
    workloads.record_turn(
        app,
        session_id,
        0,
        reasoning=REASONING,
        model="scripted",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=7,
    )
    return session_id


def test_the_log_holds_no_step_text_or_reasoning_yet_the_session_loads(
    sealed: Stepline, fresh_database_url: str
) -> None:
    session_id = a_session_with_a_turn(sealed)

    session = sealed.get_session(session_id)
    everything = dump(fresh_database_url)

    assert (session.steps[0].text, session.tokens_used) == (STEP_TEXT, 15)
    assert not found(STEP_TEXT, everything)
    assert not found(REASONING, everything)
    assert not found("tangerine-walrus", everything)


def test_a_sealed_event_moved_to_another_session_does_not_open(
    sealed: Stepline, fresh_database_url: str
) -> None:
    first = a_session_with_a_turn(sealed)
    second = a_session_with_a_turn(sealed)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        (state,) = conn.execute(
            "SELECT state FROM stepline_events WHERE originator_id = %s AND originator_version = 3",
            (first,),
        ).fetchone() or (None,)
        conn.execute(
            "UPDATE stepline_events SET state = %s WHERE originator_id = %s "
            "AND originator_version = 3",
            (state, second),
        )
    fresh = sealed_app(fresh_database_url, sealed_app_key(sealed))
    try:
        with pytest.raises(InvalidTag):
            fresh.get_session(second)
    finally:
        fresh.close()


def sealed_app_key(app: Stepline) -> bytes:
    assert app.data_keys is not None
    key = app.data_keys.master.key_bytes(create=False)
    assert key is not None
    return key


def test_rotation_wraps_every_data_key_under_the_new_master_key_with_sessions_running(
    sealed: Stepline, fresh_database_url: str, master: bytes
) -> None:
    running = a_session_with_a_turn(sealed)
    new = os.urandom(32)

    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        rotated = rotate(conn, master, new)
    # the old key still works
    workloads.complete_step(sealed, running, 0, summary="found it", evidence=[])
    after = sealed_app(fresh_database_url, new)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        retired = retire(conn, new)
    old_only = sealed_app(fresh_database_url, master)
    try:
        loaded = after.get_session(running)
        with pytest.raises(KeyNotAvailable):
            old_only.get_session(running)
    finally:
        after.close()
        old_only.close()

    assert (rotated.wrapped, rotated.left_under_other_keys, retired) == (1, 0, 1)
    assert (loaded.steps[0].text, loaded.steps[0].summary) == (STEP_TEXT, "found it")


def test_without_a_master_key_sessions_are_stored_in_clear_and_still_run(
    fresh_database_url: str,
) -> None:
    keyless = Stepline(eventsourcing_env(fresh_database_url), master_key=MasterKey(None))
    try:
        session_id = a_session_with_a_turn(keyless)
        workloads.complete_step(keyless, session_id, 0, summary="done", evidence=[])
        loaded = keyless.get_session(session_id)
    finally:
        keyless.close()

    assert loaded.steps[0].summary == "done"
    assert found(STEP_TEXT, dump(fresh_database_url))
