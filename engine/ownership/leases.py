"""Session ownership across processes: lease rows in the event store's database.

A session is driven only by the worker holding its lease. Workers claim runnable sessions
(pending or running in the session index), and waiting ones whose wait is due, with
`FOR UPDATE SKIP LOCKED`, so no two claim the same one; each new acquisition raises the
session's fencing token. The owner renews its leases by heartbeat, and each of its writes
proves the lease in the same transaction (see `engine/store/event_store.py`); a lease that is not
renewed expires and another worker takes the session over. Time is always the database's
clock, never a worker's.

A lease released because the session needs no driving (paused, waiting, ended) remembers the
session's version: the session is claimable again only once the index shows a later status
change (a resume, an approval) or its wait's due time has come, so a worker never spins on a
session the index has not caught up with yet. A waiting session holds no lease.

A session just created need not wait for the index: the API announces it (a NOTIFY on
`engine.store.event_store.CREATED_CHANNEL`, sent with the commit of its `Created` event: see
`Stepline.save_new`), and a worker with a free slot takes its first lease (`acquire` with
`first`: only a session that never had a lease), checking against the log that the session is
the announced tenant's before it drives it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from domain.session import ENDED, RUNNABLE, SessionStatus, values
from engine.logs import LOGGER_NAME
from engine.store import locks
from engine.tenancy.secret_store import SEALED_COLUMNS, SealedRow, SealedSecrets

log = logging.getLogger(LOGGER_NAME)

RELEASED_CHANNEL = "stepline_lease_released"
"""NOTIFY channel: a lease was handed back and its session wants an owner now."""

WAITING = SessionStatus.WAITING.value
"""Spelled as a literal in the SQL below, not a parameter: the planner matches it to the partial
index on waiting sessions only so."""

_CANDIDATES = f"""
SELECT si.session_id, si.tenant, l.owner AS previous_owner
FROM session_index si LEFT JOIN session_leases l USING (session_id)
WHERE (si.status = ANY(%(runnable)s)
       AND (l.session_id IS NULL
            OR (l.lease_until < now()
                AND (l.settled_version IS NULL OR si.version > l.settled_version))))
   OR (si.status = '{WAITING}' AND si.due_at <= now()
       AND (l.session_id IS NULL OR l.lease_until < now()))
ORDER BY si.created_at
LIMIT %(limit)s
FOR UPDATE OF si SKIP LOCKED
"""  # noqa: S608  (a constant of ours, not input)

_NEXT_DUE = f"""
SELECT extract(epoch FROM min(si.due_at) - now())::float
FROM session_index si LEFT JOIN session_leases l USING (session_id)
WHERE si.status = '{WAITING}' AND (l.session_id IS NULL OR l.lease_until < now())
"""  # noqa: S608
"""Runnable sessions nobody owns, and waiting ones whose wait is due (a timer's time, an
approval's or a signal's timeout), which the worker that claims one wakes."""

_TAKE = (  # engine.store.schema's stepline_take_lease (migration 9)
    "SELECT stepline_take_lease("
    "%(session_id)s, %(tenant)s, %(owner)s, %(lease)s, %(limit)s, %(first)s)"
)

_TAKE_FIRST_AND_READ = f"""
WITH taken AS MATERIALIZED (
    SELECT t.token FROM stepline_take_lease(
        %(session_id)s, %(tenant)s, %(owner)s, %(lease)s, %(limit)s, true) AS t(token))
SELECT t.token, e.originator_version, e.topic, e.state,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM taken t
LEFT JOIN {{events}} e ON t.token IS NOT NULL AND e.originator_id = %(session_id)s
UNION ALL
SELECT t.token, NULL, NULL, NULL, {SEALED_COLUMNS}
FROM taken t JOIN tenant_secrets s ON t.token IS NOT NULL AND s.tenant = %(tenant)s
ORDER BY 2
"""  # noqa: S608  (constants of ours, not input)
"""A new session's first lease and, if taken, its events and its tenant's stored secrets
(still sealed, `SecretStore.secrets_of` opens them), in one round trip: the read's snapshot is
taken when the statement starts, and the session was announced with the commit of its events,
so they are all there. A change written after the snapshot (while the lease waits for the
claim lock under a running limit, say) is not read: the run's first commit meets a change of
the session as a conflict and decides again on the log as it is, before any side effect; a
secret set or deleted since is, as for any run, one the run does not see (it reads them as of
its start: this statement is that start)."""

_RELEASE = f"""
WITH released AS (
    UPDATE session_leases
    SET owner = NULL, lease_until = '-infinity', settled_version = %(settled)s
    WHERE session_id = %(session_id)s AND owner = %(owner)s AND fencing_token = %(token)s
    RETURNING session_id)
SELECT pg_notify('{RELEASED_CHANNEL}', '') FROM released WHERE %(settled)s::int IS NULL
"""  # noqa: S608  (a constant of ours, not input)
"""Hand a lease back, and tell the workers when the session still wants driving: one
statement, whose NOTIFY is sent with its commit."""


RunningLimit = Callable[[str], int | None]
"""How many sessions a tenant may run at once, all workers together (None: no limit)."""


def new_worker_id(role: str) -> str:
    """host:pid:role:random — unique per process start, readable in `stepline workers`."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Claim:
    session_id: UUID
    tenant: str
    token: int
    taken_over_from: str | None
    """The worker whose lease had expired, if the session was taken from one."""


@dataclass(frozen=True)
class FirstLease:
    """A new session's first lease as `Leases.acquire_first_and_read` took it."""

    token: int
    records: list[tuple[int, str, bytes]]
    """The session's events (version, topic, state), in order."""
    secrets: SealedSecrets
    """Its tenant's stored secrets, as the same statement read them."""


@dataclass(frozen=True)
class WorkerCounts:
    """What a worker counts, written to its row at every heartbeat (for /metrics)."""

    claimed: int = 0
    renew_failures: int = 0
    leases_lost: int = 0


@dataclass(frozen=True)
class WorkerRow:
    worker_id: str
    role: str
    host: str
    pid: int
    concurrency: int
    started_at: datetime
    seen_at: datetime
    claimed: int
    takeovers: int
    renew_failures: int
    leases_lost: int
    sessions: int


@dataclass(frozen=True)
class LeaseRow:
    session_id: UUID
    tenant: str
    owner: str
    fencing_token: int
    acquired_at: datetime
    renewed_at: datetime
    lease_until: datetime
    age_s: float


class Leases:
    """The SQL of session ownership. Every method is one short transaction."""

    def __init__(self, pool: ConnectionPool, lease_s: float) -> None:
        self.pool = pool
        self.lease_s = lease_s
        self._take_first_and_read: tuple[sql.Identifier, sql.Composed] | None = None
        """`_TAKE_FIRST_AND_READ` rendered for the events table it reads."""

    @property
    def _interval(self) -> timedelta:
        return timedelta(seconds=self.lease_s)

    # ---- claiming -----------------------------------------------------------------------

    def claim(
        self, owner: str, count: int, running_limit: RunningLimit | None = None
    ) -> list[Claim]:
        """Take up to `count` runnable sessions that nobody owns, oldest first, leaving out
        those of tenants already running as many as `running_limit` gives them."""
        if count <= 0:
            return []
        with self.pool.connection() as conn, conn.transaction():
            fetch = count if running_limit is None else count * 4
            params = {"runnable": values(RUNNABLE), "limit": fetch}
            candidates = conn.execute(_CANDIDATES, params).fetchall()
            if not candidates:  # the usual answer: no lock taken, nothing counted
                return []
            if running_limit is not None:
                # The candidates are locked (others skip them); the running counts are read
                # after the claim lock, so no two claims count the same free room.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (locks.CLAIM,))
                candidates = _within_running_limits(conn, candidates, running_limit)
            claims = []
            for session_id, tenant, previous_owner in candidates[:count]:
                token = self._acquire(conn, session_id, tenant, owner)
                if token is not None:
                    claims.append(Claim(session_id, tenant, token, previous_owner))
            takeovers = sum(1 for c in claims if c.taken_over_from is not None)
            if takeovers:
                conn.execute(
                    "UPDATE stepline_workers SET takeovers = takeovers + %s WHERE worker_id = %s",
                    (takeovers, owner),
                )
            return claims

    def acquire(
        self,
        session_id: UUID,
        tenant: str,
        owner: str,
        limit: int | None = None,
        *,
        first: bool = False,
    ) -> int | None:
        """Take one session's lease (e.g. before the session is even saved; `first`: only if
        it never had one); its fencing token, or None if another worker holds it (or held
        it, `first`) or its tenant already runs `limit`."""
        params = {"session_id": session_id, "tenant": tenant, "owner": owner, "limit": limit}
        with self.pool.connection() as conn:
            return self._taken(conn, {**params, "first": first})

    def acquire_first_and_read(
        self,
        session_id: UUID,
        tenant: str,
        owner: str,
        limit: int | None,
        events: sql.Identifier,
    ) -> FirstLease | None:
        """`acquire(..., first=True)`, and with the lease the session's events as the table
        `events` holds them and `tenant`'s stored secrets, in one statement; None if the
        lease was not taken."""
        rendered = self._take_first_and_read
        if rendered is None or rendered[0] != events:
            rendered = events, sql.SQL(_TAKE_FIRST_AND_READ).format(events=events)
            self._take_first_and_read = rendered
        statement = rendered[1]
        params = {"session_id": session_id, "tenant": tenant, "owner": owner, "limit": limit}
        with self.pool.connection() as conn:
            rows = conn.execute(statement, {**params, "lease": self._interval}).fetchall()
        if not rows or rows[0][0] is None:
            return None
        records = [
            (version, topic, bytes(state)) for _, version, topic, state, *_ in rows if version
        ]
        sealed: list[SealedRow] = [row[4:] for row in rows if row[4] is not None]
        return FirstLease(int(rows[0][0]), records, SealedSecrets(tenant, tuple(sealed)))

    def _taken(self, conn: Connection[Any], params: dict[str, Any]) -> int | None:
        """The fencing token `stepline_take_lease` gave, or None."""
        row = conn.execute(_TAKE, {**params, "lease": self._interval}).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _acquire(
        self, conn: Connection[Any], session_id: UUID, tenant: str, owner: str
    ) -> int | None:
        """Take a claimed session's lease if nobody holds it (the claim counted the running
        limits, under the claim lock)."""
        params = {"session_id": session_id, "tenant": tenant, "owner": owner}
        return self._taken(conn, {**params, "limit": None, "first": False})

    def next_due_s(self) -> float | None:
        """Seconds until the earliest wait of a session nobody drives is due (0 if one is
        already), by the database's clock; None if no such session waits with a due time."""
        with self.pool.connection() as conn:
            row = conn.execute(_NEXT_DUE).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    # ---- holding ------------------------------------------------------------------------

    def renew(self, owner: str, held: dict[UUID, int]) -> set[UUID]:
        """Extend every lease still ours (same owner and fencing token); returns those."""
        if not held:
            return set()
        with self.pool.connection() as conn:
            rows = conn.execute(
                "UPDATE session_leases SET lease_until = now() + %s, renewed_at = now() "
                "WHERE owner = %s AND session_id = ANY(%s) RETURNING session_id, fencing_token",
                (self._interval, owner, list(held)),
            ).fetchall()
        return {session_id for session_id, token in rows if held.get(session_id) == token}

    def holds(self, session_id: UUID, owner: str, token: int) -> bool:
        """Whether the lease is still this owner's and unexpired."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT lease_until > now() FROM session_leases "
                "WHERE session_id = %s AND owner = %s AND fencing_token = %s",
                (session_id, owner, token),
            ).fetchone()
        return bool(row and row[0])

    def release(
        self, session_id: UUID, owner: str, token: int, settled_version: int | None
    ) -> None:
        """Hand the lease back. Unsettled (the session still wants driving): other workers are
        told at once. Settled: claimable again only after a later status change."""
        params = {"session_id": session_id, "owner": owner, "token": token}
        with self.pool.connection() as conn:
            conn.execute(_RELEASE, {**params, "settled": settled_version})

    def forget(self, session_id: UUID, owner: str, token: int) -> None:
        """Drop a lease taken for a session that was never saved."""
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM session_leases "
                "WHERE session_id = %s AND owner = %s AND fencing_token = %s",
                (session_id, owner, token),
            )

    # ---- workers ------------------------------------------------------------------------

    def register(self, worker_id: str, role: str, concurrency: int) -> None:
        host, pid = socket.gethostname(), os.getpid()
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO stepline_workers "
                "(worker_id, role, host, pid, concurrency, started_at, seen_at) "
                "VALUES (%s, %s, %s, %s, %s, now(), now()) "
                "ON CONFLICT (worker_id) DO UPDATE SET seen_at = now()",
                (worker_id, role, host, pid, concurrency),
            )

    def seen(self, worker_id: str, counts: WorkerCounts) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE stepline_workers SET seen_at = now(), claimed = %s, renew_failures = %s, "
                "leases_lost = %s WHERE worker_id = %s",
                (counts.claimed, counts.renew_failures, counts.leases_lost, worker_id),
            )

    def unregister(self, worker_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM stepline_workers WHERE worker_id = %s", (worker_id,))

    def live_workers(self) -> list[WorkerRow]:
        """Workers seen within three lease periods, with how many sessions each holds."""
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(WorkerRow)) as cur:
            return cur.execute(
                "SELECT w.worker_id, role, host, pid, concurrency, started_at, seen_at, claimed, "
                "takeovers, renew_failures, leases_lost, count(l.session_id)::int AS sessions "
                "FROM stepline_workers w LEFT JOIN session_leases l "
                "ON l.owner = w.worker_id AND l.lease_until > now() "
                "WHERE seen_at > now() - %s GROUP BY w.worker_id ORDER BY started_at",
                (3 * self._interval,),
            ).fetchall()

    def held(self) -> list[LeaseRow]:
        """Every unexpired lease, with its age."""
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(LeaseRow)) as cur:
            return cur.execute(
                "SELECT session_id, tenant, owner, fencing_token, acquired_at, renewed_at, "
                "lease_until, extract(epoch FROM now() - acquired_at)::float AS age_s "
                "FROM session_leases WHERE lease_until > now() ORDER BY acquired_at"
            ).fetchall()

    def tidy(self) -> None:
        """Forget ended sessions' leases and workers not seen for a long time."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "DELETE FROM session_leases l USING session_index si "
                "WHERE si.session_id = l.session_id AND l.lease_until < now() "
                "AND si.status = ANY(%s)",
                (values(ENDED),),
            )
            conn.execute(
                "DELETE FROM stepline_workers WHERE seen_at < now() - %s",
                (30 * self._interval,),
            )


def _within_running_limits(
    conn: Connection[Any], candidates: list[tuple[Any, ...]], running_limit: RunningLimit
) -> list[tuple[Any, ...]]:
    running = dict(
        conn.execute(
            "SELECT tenant, count(*) FROM session_leases WHERE lease_until > now() GROUP BY tenant"
        ).fetchall()
    )
    chosen = []
    for candidate in candidates:
        tenant = candidate[1]
        limit = running_limit(tenant)
        if limit is None or running.get(tenant, 0) < limit:
            running[tenant] = running.get(tenant, 0) + 1
            chosen.append(candidate)
    return chosen
