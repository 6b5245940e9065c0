"""The event store's recorder: the library's PostgreSQL recorder, appending in one round trip,
with fencing.

The library appends in a client-side transaction of five statements (lock the table, NOTIFY,
insert, then commit), each waiting for the server. Here the same steps run inside one
server-side function, `stepline_append_<table>`, called once: the table lock that keeps
notification ids in commit order, the NOTIFY that wakes followers, the insert. Reading is the
library's, unchanged.

Fencing: an owner's events are written only while its lease on the session stands. The lease
is checked (and share-locked, so no claim can take it before the commit) in that same
transaction. A stale owner's write fails with `LeaseLost` and nothing of it is written, so
proving ownership before a command costs no query of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

RECORDER_TOPIC = "engine.event_store:FencedRecorder"
LEASE_LOST_SQLSTATE = "SLL01"

_APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{function}(
    ids uuid[], versions bigint[], topics text[], states bytea[],
    sessions uuid[], owners text[], tokens bigint[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(sessions) > 0 THEN  -- (unfenced writers need no session_leases table)
        IF (SELECT count(*) FROM (
                SELECT 1 FROM session_leases l
                JOIN unnest(sessions, owners, tokens) AS f(session_id, owner, token)
                  ON l.session_id = f.session_id AND l.owner = f.owner
                 AND l.fencing_token = f.token
                WHERE l.lease_until > now()
                FOR SHARE OF l) AS held) < cardinality(sessions) THEN
            RAISE EXCEPTION 'a session''s lease is no longer held by its writer'
                USING ERRCODE = 'SLL01';
        END IF;
    END IF;
    PERFORM set_config('lock_timeout', {lock_timeout}, true);
    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;
    NOTIFY {channel};
    RETURN QUERY
        INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id;
END $$
"""


@dataclass(frozen=True)
class Fence:
    """The lease a write must still hold: the session, its owner, the fencing token."""

    session_id: UUID
    owner: str
    token: int


class LeaseLost(Exception):
    """The writer's lease on the session expired or was taken over: nothing was written."""


def lease_lost(error: PersistenceError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) == LEASE_LOST_SQLSTATE


class FencedRecorder(PostgresApplicationRecorder):
    """Appends in one call of a server-side function; with `fences=[Fence, ...]`, only while
    every one of them holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append_function = f"stepline_append_{self.events_table_name}".replace(".", "_")
        statement = SQL(_APPEND_FUNCTION).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.append_function),
            table=Identifier(self.events_table_name),
            channel=Identifier(self.channel_name),
            lock_timeout=f"{self.datastore.lock_timeout}s",
        )
        self.sql_create_statements.append(statement)
        self.append_statement = SQL(
            "SELECT * FROM {schema}.{function}(%s, %s, %s, %b, %s, %s, %s)"
        ).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.append_function),
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        fences: Sequence[Fence] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        params = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            [f.session_id for f in fences],
            [f.owner for f in fences],
            [f.token for f in fences],
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.append_statement, params, prepare=True)
            return [row[self.append_function] for row in curs.fetchall()]
