"""Rates shared by every API process through PostgreSQL: token buckets, one row each.

A bucket holds up to `per_minute` tokens, refilled continuously; n things take n tokens. The
bucket is a row locked for the decision (one statement), so replicas cannot overspend it.
Two kinds: each tenant's rate of creating sessions (spent only while the server has room for
more sessions: `Capacity`), and each API key's rate of requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from projections.session_index import active_count_sql

T = TypeVar("T")


@dataclass(frozen=True)
class Capacity:
    """How many sessions of every tenant may be pending or running at once, and the SQL
    expression that counts them."""

    limit: int
    count: sql.Composable

    @classmethod
    def of(cls, limit: int, events_table: str) -> Capacity:
        """Counted as the session index does, with the creations it has not applied yet."""
        return cls(limit, active_count_sql(events_table))


@dataclass(frozen=True)
class Creations:
    """The answer to `count` new sessions of a tenant."""

    active: int
    """Sessions of every tenant pending or running, as counted."""
    full: bool
    """No room for the new ones under the capacity: no token was taken."""
    wait_s: float | None
    """With room: None if the tokens were taken, else the seconds until they would be there."""


class Refused(Exception):
    """New sessions were not admitted (`creations` says why): nothing was written."""

    def __init__(self, creations: Creations) -> None:
        super().__init__(creations)
        self.creations = creations


class FirstTake(Exception):
    """The tenant has no bucket yet: nothing was written; fill it, then admit again."""


@dataclass(frozen=True)
class Admission:
    """`count` new sessions of a tenant, admitted by the statement that appends them (see
    `engine.store.event_store.Admission`): the same decision as `CreationQuota.take`, so a
    creation costs one round trip and one commit, and nothing is written if it is refused."""

    ctes: str
    """The WITH-list items defining `admission(active, granted, tokens, admitted)`."""
    params: dict[str, Any]
    limit: int
    per_minute: float

    def refuse(self, active: int, granted: bool | None, tokens: float | None) -> NoReturn:
        count: int = self.params["count"]
        if active + count > self.limit:
            raise Refused(Creations(active, full=True, wait_s=None))
        if granted is None or tokens is None:  # room, but no bucket yet
            raise FirstTake
        raise Refused(
            Creations(active, full=False, wait_s=_wait_s(count, self.per_minute, granted, tokens))
        )


class TokenBuckets:
    """The buckets of one table, each named by its key column."""

    def __init__(self, pool: ConnectionPool, table: str, key: str) -> None:
        self.pool = pool
        self._names = {"table": sql.Identifier(table), "key": sql.Identifier(key)}
        self._take = self.statement(_TAKE)
        self._new = self.statement(_NEW_BUCKET)

    def statement(self, template: str, **more: sql.Composable) -> bytes:
        """`template` on this table, rendered once: composed on every call, it costs more CPU
        than the round trip it saves."""
        return sql.SQL(template).format(**self._names, **more).as_bytes()

    def take(self, name: str, per_minute: float, count: int = 1) -> float | None:
        """Take `count` tokens from `name`'s bucket: None if granted, else the seconds until
        they would be there. One statement, except for a bucket's first take."""
        params = _params(name, per_minute, count)
        with self.pool.connection() as conn:
            row = conn.execute(self._take, params).fetchone()
            if row is None:  # the first take: a full bucket, then take from it
                conn.execute(self._new, params)
                row = conn.execute(self._take, params).fetchone()
        assert row is not None
        return _wait_s(count, per_minute, *row)

    def fill(self, conn: Connection[Any], name: str, per_minute: float) -> None:
        """Make `name`'s bucket, full, if it has none (its first take)."""
        conn.execute(self._new, _params(name, per_minute, 0))


def _params(name: str, per_minute: float, count: int) -> dict[str, Any]:
    return {"name": name, "count": count, "cap": float(per_minute), "rate": per_minute / 60.0}


def _wait_s(count: int, per_minute: float, granted: bool, tokens: float) -> float | None:
    return None if granted else (count - tokens) / (per_minute / 60.0)


class CreationQuota:
    """Each tenant's rate of creating sessions, spent only while the server has room for
    them: the count of sessions and the take are one statement."""

    def __init__(self, pool: ConnectionPool, per_minute: int, capacity: Capacity) -> None:
        self.pool = pool
        self.per_minute = float(per_minute)
        self.capacity = capacity
        self._buckets = TokenBuckets(pool, "tenant_quotas", "tenant")
        self._take_if_room = self._buckets.statement(_TAKE_IF_ROOM, active=capacity.count)
        self._admission = self._buckets.statement(_ADMISSION, active=capacity.count).decode()

    def admitted(self, tenant: str, count: int, save: Callable[[Admission], T]) -> T:
        """What `save` gives, having written new sessions only if the admission it is handed
        lets them in (else `Refused`). A tenant's first creation fills its bucket first, in
        statements of their own, and saves again."""
        params = {**_params(tenant, self.per_minute, count), "limit": self.capacity.limit}
        admission = Admission(self._admission, params, self.capacity.limit, self.per_minute)
        try:
            return save(admission)
        except FirstTake:
            with self.pool.connection() as conn:
                self._buckets.fill(conn, tenant, self.per_minute)
        return save(admission)

    def take(self, tenant: str, count: int = 1) -> Creations:
        """Count the sessions and take `count` tokens only if `count` more fit. One statement,
        except for a tenant's first take."""
        limit = self.capacity.limit
        params = {**_params(tenant, self.per_minute, count), "limit": limit}
        with self.pool.connection() as conn:
            active, granted, tokens = self._counted_and_taken(conn, params)
            if granted is None and active + count <= limit:  # room, but no bucket yet
                self._buckets.fill(conn, tenant, self.per_minute)
                active, granted, tokens = self._counted_and_taken(conn, params)
        if active + count > limit:
            return Creations(active, full=True, wait_s=None)
        assert granted is not None  # room, and the bucket is there
        assert tokens is not None
        return Creations(
            active, full=False, wait_s=_wait_s(count, self.per_minute, granted, tokens)
        )

    def _counted_and_taken(
        self, conn: Connection[Any], params: dict[str, Any]
    ) -> tuple[int, bool | None, float | None]:
        row = conn.execute(self._take_if_room, params).fetchone()
        assert row is not None  # one row, whatever the count
        return row[0], row[1], row[2]


class RequestQuota:
    """Each API key's rate of requests, at its tenant's `requests_per_minute`.

    A process takes a key's tokens from the shared bucket a twentieth of the minute's rate at
    a time and spends them itself, so most requests make no round trip. It never spends a
    token the bucket did not grant; tokens it holds lapse after a minute."""

    SHARE = 20
    HELD_S = 60.0

    def __init__(self, pool: ConnectionPool) -> None:
        self._buckets = TokenBuckets(pool, "key_quotas", "key_name")
        self._held: dict[str, tuple[int, float]] = {}
        """Per key: tokens taken from the bucket and not yet spent, and when they lapse."""
        self._lock = threading.Lock()

    def take(self, key_name: str, per_minute: int) -> float | None:
        """Take one token; None if granted, else the seconds until one would be there."""
        if self.take_held(key_name):
            return None
        batch = max(1, per_minute // self.SHARE)
        wait_s = self._buckets.take(key_name, per_minute, batch)
        if wait_s is None:
            with self._lock:
                self._held[key_name] = (batch - 1, time.monotonic() + self.HELD_S)
            return None
        if batch > 1:  # fewer left than a batch: one will do
            return self._buckets.take(key_name, per_minute)
        return wait_s

    def take_held(self, key_name: str) -> bool:
        """Spend one of the key's tokens this process holds, if it holds one: no query."""
        with self._lock:
            tokens, lapses_at = self._held.get(key_name, (0, 0.0))
            if tokens <= 0 or time.monotonic() >= lapses_at:
                return False
            self._held[key_name] = (tokens - 1, lapses_at)
            return True


_AVAILABLE = "least(%(cap)s, tokens + extract(epoch FROM now() - refilled_at) * %(rate)s)"
# One statement, so the row lock covers the decision. Every right-hand side sees the old row.
_SPEND = f"""
    granted = {_AVAILABLE} >= %(count)s,
    tokens = {_AVAILABLE} - CASE WHEN {_AVAILABLE} >= %(count)s THEN %(count)s ELSE 0 END,
    refilled_at = now()
"""
_TAKE = f"""
UPDATE {{table}} SET {_SPEND}
WHERE {{key}} = %(name)s
RETURNING granted, tokens
"""  # noqa: S608 - the f-string only repeats a constant expression
# The count and the take, decided before anything else a statement does: the bucket is
# updated only if `count` more sessions fit; `granted` is NULL when they do not (or when there
# is no bucket yet). Alone (`_TAKE_IF_ROOM`), or as the start of a statement that then
# appends only if `admitted` (`Admission`).
_ADMISSION = f"""
counted AS MATERIALIZED (SELECT {{active}} AS active),
taken AS (
    UPDATE {{table}} SET {_SPEND}
    WHERE {{key}} = %(name)s AND (SELECT active FROM counted) + %(count)s <= %(limit)s
    RETURNING granted, tokens
),
admission AS MATERIALIZED (
    SELECT active, granted, tokens, coalesce(granted, false) AS admitted
    FROM counted LEFT JOIN taken ON true
)"""  # noqa: S608 - as _TAKE
_TAKE_IF_ROOM = f"WITH {_ADMISSION}\nSELECT active, granted, tokens FROM admission"
_NEW_BUCKET = """
INSERT INTO {table} ({key}, tokens, refilled_at, granted)
VALUES (%(name)s, %(cap)s, now(), true) ON CONFLICT ({key}) DO NOTHING
"""
