"""The database schema, owned in one place and applied at start-up by one `prepare()`.

Every process that opens the database (`serve`, `worker`, `run`, the `sessions` commands, the
benches and the tests) calls `prepare` before anything else touches it. Under one advisory
lock (`locks.SCHEMA`), so processes started together on a fresh database wait for each other
instead of racing each other's DDL, it:

1. creates the event store's tables and its append function (the eventsourcing library's DDL,
   run here rather than whenever an application object is built);
2. applies, in order, the migrations of Stepline's own tables not yet recorded in
   `stepline_schema`, each in its own transaction with its row there;
3. creates the read models' tables, rebuilding a view whose layout version changed. A view
   declares its tables beside the code that fills them (one module per read model); what it
   declares is applied here, under the same lock, and nowhere else.

A database whose schema is newer than this code knows is refused, not downgraded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.utils import get_topic
from psycopg import Connection
from psycopg_pool import ConnectionPool

from domain.errors import DomainError
from domain.session import WorkflowSession
from engine.logs import LOGGER_NAME
from engine.ownership.executor_state import seal_clear_state
from engine.store import locks
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.store.event_store import APPEND_ARGUMENTS
from engine.tenancy.secret_store import MasterKey
from projections import ALL_VIEWS, tracking
from projections.view import View

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Migration:
    """`statements`, then `then` (work SQL alone cannot do, such as sealing under the master
    key), then `finally_` (statements that drop what `then` has moved), in one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]
    then: Callable[[Connection[Any], AESGCM | None], None] | None = None
    finally_: tuple[str, ...] = ()


_BASELINE = (
    # Session ownership: one lease per session, and the live workers (engine.ownership.leases).
    """
    CREATE TABLE IF NOT EXISTS session_leases (
        session_id uuid PRIMARY KEY,
        tenant text NOT NULL,
        owner text,
        fencing_token bigint NOT NULL DEFAULT 0,
        lease_until timestamptz NOT NULL DEFAULT '-infinity',
        acquired_at timestamptz,
        renewed_at timestamptz,
        settled_version integer
    )
    """,
    "CREATE INDEX IF NOT EXISTS session_leases_by_owner ON session_leases (owner)",
    """
    CREATE TABLE IF NOT EXISTS stepline_workers (
        worker_id text PRIMARY KEY,
        role text NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        concurrency integer NOT NULL,
        started_at timestamptz NOT NULL,
        seen_at timestamptz NOT NULL,
        claimed bigint NOT NULL DEFAULT 0,
        takeovers bigint NOT NULL DEFAULT 0,
        renew_failures bigint NOT NULL DEFAULT 0,
        leases_lost bigint NOT NULL DEFAULT 0
    )
    """,
    # Token buckets shared by the API processes (engine.tenancy.quotas). key_quotas is unlogged: a
    # take then commits without waiting for a WAL flush, and a crash only refills the buckets.
    """
    CREATE TABLE IF NOT EXISTS tenant_quotas (
        tenant text PRIMARY KEY,
        tokens double precision NOT NULL,
        refilled_at timestamptz NOT NULL,
        granted boolean NOT NULL
    )
    """,
    """
    CREATE UNLOGGED TABLE IF NOT EXISTS key_quotas (
        key_name text PRIMARY KEY,
        tokens double precision NOT NULL,
        refilled_at timestamptz NOT NULL,
        granted boolean NOT NULL
    )
    """,
    # State an executor keeps outside the log, such as cookies (engine.ownership.executor_state).
    """
    CREATE TABLE IF NOT EXISTS executor_state (
        session_id uuid NOT NULL,
        executor text NOT NULL,
        state jsonb NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (session_id, executor)
    )
    """,
    # Each tenant's secrets, sealed under the master key (engine.tenancy.secret_store).
    """
    CREATE TABLE IF NOT EXISTS tenant_secrets (
        tenant text NOT NULL,
        name text NOT NULL,
        nonce bytea NOT NULL,
        ciphertext bytea NOT NULL,
        origins text[] NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (tenant, name)
    )
    """,
    # Each view's position in the log and layout version (projections.tracking).
    """
    CREATE TABLE IF NOT EXISTS projection_tracking (
        view text PRIMARY KEY,
        position bigint NOT NULL,
        layout_version integer NOT NULL
    )
    """,
)

EVENTS_TABLE = "stepline_events"
"""The log: the eventsourcing library names it after the application (`Stepline`)."""
APPEND_FUNCTION = f"stepline_append_{EVENTS_TABLE}({APPEND_ARGUMENTS})"
"""The only way into the log (engine.store.event_store): it fences, numbers and chains the rows."""

_CHAIN = (
    f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN hash bytea",
    # What `stepline audit verify` found, newest last: the dashboard shows the latest.
    """
    CREATE TABLE audit_verifications (
        id bigserial PRIMARY KEY,
        verified_at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        from_position bigint NOT NULL,
        to_position bigint NOT NULL,
        head_hash bytea,
        events bigint NOT NULL,
        clean boolean NOT NULL,
        first_break bigint
    )
    """,
    # When the head was last logged: one process of the deployment logs it per interval.
    """
    CREATE TABLE audit_head_log (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        logged_at timestamptz NOT NULL
    )
    """,
    # It runs as its owner: only roles granted it may append (see `application_grants`).
    f"REVOKE EXECUTE ON FUNCTION {APPEND_FUNCTION} FROM PUBLIC",
)

_WEBHOOKS = (
    # Deliveries to send (engine.webhooks): one row per webhook, keyed by its webhook-id, so
    # enqueuing the same one again (a view replayed) adds nothing. The body is kept as sent,
    # so every attempt signs and sends the same bytes. An attempt's row is written when it
    # starts (duration_ms NULL until it ends): one cut short by a crash stays visible.
    """
    CREATE TABLE webhook_deliveries (
        webhook_id text PRIMARY KEY,
        session_id uuid NOT NULL,
        tenant text NOT NULL,
        event_type text NOT NULL,
        url text NOT NULL,
        body text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        state text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    )
    """,
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) "
    "WHERE state = 'pending'",
    "CREATE INDEX webhook_deliveries_by_session ON webhook_deliveries (session_id, created_at)",
    """
    CREATE TABLE webhook_attempts (
        webhook_id text NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
        attempt integer NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms integer,
        status_code integer,
        error text,
        PRIMARY KEY (webhook_id, attempt)
    )
    """,
    # Each tenant's webhook signing secret, sealed under the master key
    # (engine.tenancy.secret_store).
    """
    CREATE TABLE tenant_webhook_secrets (
        tenant text PRIMARY KEY,
        nonce bytea NOT NULL,
        ciphertext bytea NOT NULL,
        created_at timestamptz NOT NULL
    )
    """,
)

_KEYS = (
    # A row per session with a data key; erased_at set when the key was destroyed.
    """
    CREATE TABLE session_keys (
        session_id uuid PRIMARY KEY,
        tenant text NOT NULL,
        created_at timestamptz NOT NULL,
        erased_at timestamptz
    )
    """,
    "CREATE INDEX session_keys_by_tenant ON session_keys (tenant)",
    # The key itself, sealed under a master key (named by its fingerprint): one row per master
    # key during a rotation, none once erased.
    """
    CREATE TABLE session_key_wraps (
        session_id uuid NOT NULL REFERENCES session_keys (session_id),
        kek text NOT NULL,
        nonce bytea NOT NULL,
        wrapped bytea NOT NULL,
        PRIMARY KEY (session_id, kek)
    )
    """,
)

_TAKE_LEASE = f"""
CREATE OR REPLACE FUNCTION stepline_take_lease(
    the_session uuid, the_tenant text, the_owner text, lease interval, running_limit integer,
    only_first boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    token bigint;
BEGIN
    -- A session that ever had a lease is not taken as a first one: answered before the lock
    -- (every worker that hears of a new session asks; one of them wins).
    IF only_first AND EXISTS (SELECT FROM session_leases WHERE session_id = the_session) THEN
        RETURN NULL;
    END IF;
    IF running_limit IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock({locks.CLAIM});
    END IF;
    -- A statement of a function takes its snapshot when it starts: after the lock, so the
    -- count sees every lease committed before the lock was granted.
    INSERT INTO session_leases AS l
        (session_id, tenant, owner, fencing_token, lease_until, acquired_at, renewed_at)
    SELECT the_session, the_tenant, the_owner, 1, now() + lease, now(), now()
    WHERE running_limit IS NULL
       OR (SELECT count(*) FROM session_leases
           WHERE tenant = the_tenant AND lease_until > now()) < running_limit
    ON CONFLICT (session_id) DO UPDATE SET
        owner = EXCLUDED.owner,
        fencing_token = l.fencing_token + 1,
        lease_until = EXCLUDED.lease_until,
        acquired_at = now(),
        renewed_at = now(),
        settled_version = NULL
    WHERE l.lease_until < now() AND NOT only_first
    RETURNING l.fencing_token INTO token;
    RETURN token;
END $$
"""  # noqa: S608  (a constant of ours, not input)
"""`engine.ownership.leases.Leases.acquire` in one round trip, under `locks.CLAIM` when a
running limit applies (as one statement the count would see only what committed before its
wait for the lock)."""

MIGRATIONS: tuple[Migration, ...] = (
    # Every statement is IF NOT EXISTS: a database prepared before there was a schema version
    # (each module then ran its own DDL) already has these tables, and takes version 1 as is.
    Migration(1, "the tables of Stepline before schema versions", _BASELINE),
    Migration(
        2,
        "executor state sealed under the master key, and kept for forks after the end",
        (
            """
            ALTER TABLE executor_state
                ADD COLUMN nonce bytea,
                ADD COLUMN sealed bytea,
                ADD COLUMN forgotten_at timestamptz
            """,
        ),
        then=seal_clear_state,
        finally_=("ALTER TABLE executor_state DROP COLUMN state",),
    ),
    # The log's rows from here on are hash-chained (engine.audit.chain); those before have no hash.
    Migration(3, "the log hash-chained, appended to only through its function", _CHAIN),
    Migration(
        4, "completion webhooks: the delivery queue, its attempts, signing secrets", _WEBHOOKS
    ),
    Migration(5, "each session's data key, wrapped under master keys (crypto-shredding)", _KEYS),
    Migration(
        6,
        "the projector's leader, named for `projections status` and /health",
        (
            # One row: the process that last took the lead, and its backend, so a reader can
            # tell whether that backend still holds the lock (engine.live.leadership).
            """
            CREATE TABLE IF NOT EXISTS projection_leader (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                holder text NOT NULL,
                backend_pid integer NOT NULL,
                since timestamptz NOT NULL
            )
            """,
        ),
    ),
    Migration(
        7,
        "secrets sealed under the next master key too, while a rotation rolls out",
        (
            # Written by `stepline secrets rotate-master`, kept alone by `retire-master`
            # (engine.tenancy.secret_rotation).
            """
            ALTER TABLE tenant_secrets
                ADD COLUMN IF NOT EXISTS next_nonce bytea,
                ADD COLUMN IF NOT EXISTS next_ciphertext bytea
            """,
            """
            ALTER TABLE tenant_webhook_secrets
                ADD COLUMN IF NOT EXISTS next_nonce bytea,
                ADD COLUMN IF NOT EXISTS next_ciphertext bytea
            """,
        ),
    ),
    Migration(
        8,
        "a tenant's secret may be a TOTP seed (engine.tenancy.secret_store)",
        ("ALTER TABLE tenant_secrets ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'value'",),
    ),
    Migration(
        9, "a session's lease taken in one round trip, within its tenant's limit", (_TAKE_LEASE,)
    ),
    Migration(
        10,
        "the log's session creations indexed, which the capacity count reads on every creation",
        (
            # Creations the session index has not applied yet (projections.session_index
            # .active_count_sql): without it, a scan of every event the views are behind by.
            f"CREATE INDEX IF NOT EXISTS {EVENTS_TABLE}_creations ON {EVENTS_TABLE} "
            f"(notification_id) WHERE topic = '{get_topic(WorkflowSession.Created)}'",
        ),
    ),
)
"""In order, never edited once released: a change to the schema is a new migration."""

_VERSIONS = """
CREATE TABLE IF NOT EXISTS stepline_schema (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class SchemaTooNew(DomainError):
    """The database was migrated by a newer Stepline than this one."""

    code = "DATABASE_UNAVAILABLE"


def prepare(
    pool: ConnectionPool,
    app: Stepline,
    key: MasterKey | None = None,
    views: Iterable[View] = ALL_VIEWS,
) -> None:
    """Bring the database's schema up to this code's, one process at a time. `key` seals what
    a migration finds in clear (without it, that is forgotten)."""
    with pool.connection() as conn, held(conn):
        _create_event_store(app)
        migrate(conn, key)
        _prepare_views(conn, views)


def prepare_database(url: str, key: MasterKey | None = None) -> None:
    """`prepare` over a connection of its own: for the tests, the benches, a fresh database,
    and a process given the owner's URL for migrations (STEPLINE_MIGRATION_DATABASE_URL)."""
    app = Stepline(eventsourcing_env(url, pool_size=1, max_overflow=0))
    try:
        with ConnectionPool(url, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
            prepare(pool, app, key)
    finally:
        app.close()


_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def application_grants(role: str) -> str:
    """The SQL that makes `role` Stepline's application role (STEPLINE_DATABASE_URL's user):
    what the processes need of every table, but the log only read, and appended to only
    through the function that chains its rows. To run as the owner of Stepline's tables, once
    a process given the owner's URL (STEPLINE_MIGRATION_DATABASE_URL) has made them."""
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"a role name here is lower-case letters, digits and _; got {role!r}")
    return f"""\
-- Stepline's application role {role}: what STEPLINE_DATABASE_URL connects as. Run this as the
-- owner of Stepline's tables (STEPLINE_MIGRATION_DATABASE_URL's user) once a Stepline process
-- given that URL has prepared them; then give {role} a password (ALTER ROLE {role} PASSWORD
-- '...') or whatever login your pg_hba.conf expects. Creating the role needs CREATEROLE: skip
-- that statement if you make roles otherwise.
DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA public TO {role};
-- Stepline's own tables and its views, now and those later migrations make.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role};
-- The log: read, and appended to only through the function that numbers and chains its rows
-- (it runs as the owner); never updated, deleted from or truncated.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {EVENTS_TABLE} FROM {role};
GRANT EXECUTE ON FUNCTION {APPEND_FUNCTION} TO {role};
"""  # noqa: S608 - not a query: the role's name is checked above, the rest is ours


def prepare_views(pool: ConnectionPool, views: Iterable[View]) -> None:
    """Only the views' tables (a view set other than the deployment's, as tests build)."""
    with pool.connection() as conn, held(conn):
        _prepare_views(conn, views)


@contextmanager
def held(conn: Connection[Any]) -> Iterator[None]:
    """The schema lock, held by `conn`'s session (so the DDL of other connections of this
    process is covered too) until the block ends or the process dies."""
    conn.execute("SELECT pg_advisory_lock(%s)", (locks.SCHEMA,))
    try:
        yield
    except BaseException:
        # Cut short, by a signal mid-query say, the connection may be unusable: its closing
        # releases the lock, and what cut the block short is what the caller must see.
        with suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (locks.SCHEMA,))
        raise
    conn.execute("SELECT pg_advisory_unlock(%s)", (locks.SCHEMA,))


def migrate(conn: Connection[Any], key: MasterKey | None = None) -> int:
    """Apply the migrations the database has not had; the version it is at afterwards."""
    conn.execute(_VERSIONS)
    row = conn.execute("SELECT coalesce(max(version), 0) FROM stepline_schema").fetchone()
    current = int(row[0]) if row else 0
    latest = MIGRATIONS[-1].version
    if current > latest:
        raise SchemaTooNew(
            f"the database's schema is at version {current}, newer than this Stepline knows "
            f"({latest}): run the newer Stepline that migrated it",
            schema_version=current,
            known_version=latest,
        )
    for migration in MIGRATIONS:
        if migration.version > current:
            _apply(conn, migration, key)
    return latest


def _apply(conn: Connection[Any], migration: Migration, key: MasterKey | None) -> None:
    with conn.transaction():
        for statement in migration.statements:
            conn.execute(statement)
        if migration.then is not None:
            migration.then(conn, key.cipher(create=True) if key is not None else None)
        for statement in migration.finally_:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO stepline_schema (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )
    log.info("Database schema migrated to version %d: %s", migration.version, migration.name)


def _create_event_store(app: Stepline) -> None:
    app.recorder.create_table()  # type: ignore[attr-defined]
    if app.snapshots is not None:
        app.snapshots.recorder.create_table()  # type: ignore[attr-defined]


def _prepare_views(conn: Connection[Any], views: Iterable[View]) -> None:
    """Create missing views; a view whose layout changed is dropped and replayed."""
    with conn.transaction():
        layouts = tracking.stored_layouts(conn)
        for view in views:
            stored = layouts.get(view.name)
            if stored is not None and stored != view.version:
                log.warning(
                    "View %s changed layout (stored v%d, code v%d): rebuilding it from the log",
                    view.name,
                    stored,
                    view.version,
                )
                tracking.drop_tables(conn, view)
            view.create(conn)
            if stored != view.version:
                tracking.reset(conn, view)
