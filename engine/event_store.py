"""The event store's recorder: the library's PostgreSQL recorder, plus fencing.

An owner's events are written only while its lease on the session stands: the lease is
checked (and share-locked, so no claim can take it until the commit) in the same transaction
that inserts the events. A stale owner's write fails with `LeaseLost` and nothing of it is
written, so proving ownership before a command costs no query of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

RECORDER_TOPIC = "engine.event_store:FencedRecorder"
LEASE_LOST_SQLSTATE = "SLL01"

_REQUIRE_LEASES = """
CREATE OR REPLACE FUNCTION stepline_require_leases(sessions uuid[], owners text[], tokens bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM (
            SELECT 1 FROM session_leases l
            JOIN unnest(sessions, owners, tokens) AS f(session_id, owner, token)
              ON l.session_id = f.session_id AND l.owner = f.owner AND l.fencing_token = f.token
            WHERE l.lease_until > now()
            FOR SHARE OF l) held) < cardinality(sessions) THEN
        RAISE EXCEPTION 'a session''s lease is no longer held by its writer'
            USING ERRCODE = 'SLL01';
    END IF;
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
    """Inserts events as the library does; with `fences=[Fence, ...]`, only while they hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.append(SQL(_REQUIRE_LEASES))  # type: ignore[arg-type]

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        fences: Sequence[Fence] = (),
        **kwargs: Any,
    ) -> None:
        if fences:
            curs.execute(
                "SELECT stepline_require_leases(%s::uuid[], %s::text[], %s::bigint[])",
                (
                    [f.session_id for f in fences],
                    [f.owner for f in fences],
                    [f.token for f in fences],
                ),
                prepare=True,
            )
        super()._insert_events(curs, stored_events, **kwargs)
