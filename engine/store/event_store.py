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

The hash chain (engine.audit.chain): under the table lock the function reads the last row's
position and hash, numbers the new rows after it (no gaps: a missing position is a removed
row) and chains each to the one before, in the transaction that writes them. It runs as its
owner (SECURITY DEFINER), so an application role that may not lock, update or delete the
table can still append through it, and only through it.

A write may also hand leases back (`releases`: an owner's last write of a session that has
ended), in the same statement: the append runs first (the release waits for its rows), and a
write that fails releases nothing. The release is `Leases.release`'s, settled as of the
session's last event, so the session is claimable again only after a later change (none comes
to an ended session).

An announcement (`Announcement`: a new session that no worker drives yet) is a NOTIFY in the
same statement, so it is sent with the commit of the events it announces, and never without
it, at no round trip of its own. It adds no way for the write to fail: its payload is bounded
(`announcement`), and the function's own NOTIFY already needs the queue it goes to.

A write may also be admitted (`Admission`: new sessions within their tenant's limits) in the
same statement: the admission's decision runs first, and the append function (with its lock
and NOTIFY) and the announcement run only if it admits them; if not, nothing is written and
the admission says why (`Admission.refuse`, which raises). One round trip and one commit for
a creation, where an admission of its own would cost a second.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composed, Identifier

from engine.audit.chain import link_sql

RECORDER_TOPIC = "engine.store.event_store:FencedRecorder"
APPEND_ARGUMENTS = "uuid[], bigint[], text[], bytea[], uuid[], text[], bigint[]"
"""The append function's argument types: with its name, what GRANT and REVOKE name it by."""
LEASE_LOST_SQLSTATE = "SLL01"
CREATED_CHANNEL = "stepline_session_created"
"""NOTIFY channel: a session was saved that no worker drives yet; the payload is
`["<session id>", "<tenant>"]`."""
MAX_PAYLOAD_BYTES = 7_999
"""PostgreSQL refuses a NOTIFY payload of 8000 bytes or more."""

_APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{function}(
    ids uuid[], versions bigint[], topics text[], states bytea[],
    sessions uuid[], owners text[], tokens bigint[])
RETURNS SETOF bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    first_position bigint;
    previous bytea;
    topic_bytes bytea;
    hashes bytea[] := ARRAY[]::bytea[];
BEGIN
    IF cardinality(sessions) > 0 THEN  -- (unfenced writers need no session_leases table)
        IF (SELECT count(*) FROM (
                SELECT 1 FROM {schema}.session_leases l
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
    SELECT e.notification_id, e.hash INTO first_position, previous
        FROM {schema}.{table} e ORDER BY e.notification_id DESC LIMIT 1;
    first_position := coalesce(first_position, 0) + 1;
    previous := coalesce(previous, {genesis});
    FOR i IN 1 .. cardinality(ids) LOOP
        topic_bytes := convert_to(topics[i], 'UTF8');
        previous := {link_of_row_i};
        hashes[i] := previous;
    END LOOP;
    NOTIFY {channel};
    RETURN QUERY
        INSERT INTO {schema}.{table}
            (notification_id, originator_id, originator_version, topic, state, hash)
        SELECT first_position + n - 1, e.id, e.version, e.topic, e.state, e.hash
        FROM unnest(ids, versions, topics, states, hashes)
            WITH ORDINALITY AS e(id, version, topic, state, hash, n)
        RETURNING notification_id;
END $$
"""

_LINK_OF_ROW_I = link_sql(
    "previous",
    "first_position + i - 1",
    id_="ids[i]",
    version="versions[i]",
    topic="topic_bytes",
    state="states[i]",
)


_APPEND_AND_RELEASE = """
WITH appended AS MATERIALIZED (
    SELECT * FROM {schema}.{function}(%b, %b, %b, %b, %b, %b, %b)),
released AS (
    UPDATE {schema}.session_leases l
    SET owner = NULL, lease_until = '-infinity', settled_version = r.settled
    FROM unnest(%s::uuid[], %s::text[], %s::bigint[], %s::int[])
        AS r(session_id, owner, token, settled)
    WHERE l.session_id = r.session_id AND l.owner = r.owner AND l.fencing_token = r.token
      AND EXISTS (SELECT FROM appended))
SELECT * FROM appended
"""
"""Append, then hand the given leases back: `released` reads `appended`, so the append has
run (and succeeded: a failure fails the whole statement) before any lease is touched."""


_ADMIT_AND_APPEND = """
WITH {admission},
appended AS MATERIALIZED (
    SELECT n FROM {schema}.{function}(%(ids)b, %(versions)b, %(topics)b, %(states)b,
        %(fenced)b, %(owners)b, %(fence_tokens)b) AS n
    WHERE (SELECT admitted FROM admission))
SELECT a.active, a.granted, a.tokens, a.admitted,
    ARRAY(SELECT n FROM appended) AS positions,
    CASE WHEN a.admitted AND %(channel)s::text IS NOT NULL
        THEN pg_notify(%(channel)s::text, %(payload)s::text) END AS announced
FROM admission a
"""
"""Decide the admission, then append only if it admits: the condition on `appended` is a
constant of the statement, so PostgreSQL checks it before it calls the function at all (no
lock taken, no row, no NOTIFY when refused). The announcement, too, only if admitted."""


class Admission(Protocol):
    """New sessions to admit in the statement that appends their `Created` events (owned by
    `engine.tenancy.quotas`): the WITH-list items that define `admission(active, granted,
    tokens, admitted)`, one row, and their named parameters."""

    @property
    def ctes(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def refuse(self, active: int, granted: bool | None, tokens: float | None) -> NoReturn:
        """Raise the reason the sessions were not admitted (nothing was appended)."""


@dataclass(frozen=True)
class Fence:
    """The lease a write must still hold: the session, its owner, the fencing token."""

    session_id: UUID
    owner: str
    token: int


@dataclass(frozen=True)
class Announcement:
    """A NOTIFY sent with the commit of the events it is written with."""

    channel: str
    payload: str


def announcement(session_id: UUID, tenant: str) -> Announcement | None:
    """The announcement of a session just created, for the workers (see
    `engine.ownership.leases`); None if its payload is too long to NOTIFY (an outlandish
    tenant name): the session is then claimed through the session index, as any other."""
    payload = json.dumps([str(session_id), tenant])
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        return None
    return Announcement(CREATED_CHANNEL, payload)


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
            genesis=SQL("decode(repeat('00', 32), 'hex')"),
            link_of_row_i=SQL(_LINK_OF_ROW_I),
        )
        self.sql_create_statements.append(statement)
        # Every argument in binary: psycopg dumps arrays so in about half the time it takes
        # to write them as text.
        self.append_statement = SQL(
            "SELECT * FROM {schema}.{function}(%b, %b, %b, %b, %b, %b, %b)"
        ).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.append_function),
        )
        # One NOTIFY per row asked, folded into one by PostgreSQL (same channel and payload in
        # one transaction): sent with the commit, and only if the append succeeded.
        self.append_and_announce_statement = SQL(
            "SELECT *, pg_notify(%s, %s) FROM {schema}.{function}(%b, %b, %b, %b, %b, %b, %b)"
        ).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.append_function),
        )
        self.append_and_release_statement = SQL(_APPEND_AND_RELEASE).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.append_function),
        )
        self.notifications_after_statement = SQL(
            "SELECT * FROM {schema}.{table} WHERE notification_id > %s "
            "ORDER BY notification_id LIMIT %s"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        render_statements(self)
        self._admitted_statements: dict[str, SQL] = {}

    def admit_and_append_statement(self, admission: Admission) -> SQL:
        """The statement that appends only what `admission` admits, rendered once per kind of
        admission (its SQL is a constant of the quota that makes it)."""
        statement = self._admitted_statements.get(admission.ctes)
        if statement is None:
            composed = SQL(_ADMIT_AND_APPEND).format(
                admission=SQL(admission.ctes),
                schema=Identifier(self.datastore.schema),
                function=Identifier(self.append_function),
            )
            statement = SQL(composed.as_string())
            self._admitted_statements[admission.ctes] = statement
        return statement

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """As the library's, with the statement the feed and the views read by (the
        notifications after a position) rendered once, not built on every call."""
        if start is None or inclusive_of_start or stop is not None or topics:
            built: Sequence[Notification] = super().select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
            return built
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.notifications_after_statement, (start, limit), prepare=True)
            return [
                Notification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        fences: Sequence[Fence] = (),
        announce: Announcement | None = None,
        releases: Sequence[tuple[Fence, int]] = (),
        admission: Admission | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """Append, only while every one of `fences` holds; `announce` is sent with the commit;
        each of `releases` (a fence among `fences`, and the version its session is settled
        as of) is handed back in the same statement. With `admission`, only if it admits the
        write (else it raises, nothing written)."""
        if not stored_events:
            return []
        if announce is not None and releases:
            raise ValueError("a write either announces a new session or hands leases back")
        if admission is not None:
            if releases:
                raise ValueError("a write either admits new sessions or hands leases back")
            return self._admitted_and_appended(stored_events, fences, announce, admission)
        params: tuple[Any, ...] = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            [f.session_id for f in fences],
            [f.owner for f in fences],
            [f.token for f in fences],
        )
        statement = self.append_statement
        if announce is not None:
            statement = self.append_and_announce_statement
            params = (announce.channel, announce.payload, *params)
        elif releases:
            statement = self.append_and_release_statement
            params += (
                [fence.session_id for fence, _ in releases],
                [fence.owner for fence, _ in releases],
                [fence.token for fence, _ in releases],
                [settled for _, settled in releases],
            )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [row[self.append_function] for row in curs.fetchall()]

    def _admitted_and_appended(
        self,
        stored_events: Sequence[StoredEvent],
        fences: Sequence[Fence],
        announce: Announcement | None,
        admission: Admission,
    ) -> Sequence[int]:
        params = {
            **admission.params,
            "ids": [e.originator_id for e in stored_events],
            "versions": [e.originator_version for e in stored_events],
            "topics": [e.topic for e in stored_events],
            "states": [e.state for e in stored_events],
            "fenced": [f.session_id for f in fences],
            "owners": [f.owner for f in fences],
            "fence_tokens": [f.token for f in fences],
            "channel": None if announce is None else announce.channel,
            "payload": None if announce is None else announce.payload,
        }
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.admit_and_append_statement(admission), params, prepare=True)
            row = curs.fetchone()
        assert row is not None  # one row, admitted or not
        if not row["admitted"]:
            admission.refuse(row["active"], row["granted"], row["tokens"])
        positions: list[int] = row["positions"]
        return positions


def render_statements(recorder: PostgresAggregateRecorder) -> None:
    """Render the recorder's statements to text once. psycopg renders a composed statement on
    every execute, quoting each identifier through libpq: with a few statements per event,
    that was a large share of a session's CPU."""
    for name, value in list(vars(recorder).items()):
        if isinstance(value, Composed):
            setattr(recorder, name, SQL(value.as_string()))
