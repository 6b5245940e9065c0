"""Rates shared by every API process through PostgreSQL: token buckets, one row each.

A bucket holds up to `per_minute` tokens, refilled continuously; n things take n tokens. The
bucket is a row locked for the decision (one statement), so replicas cannot overspend it.
Two kinds: each tenant's rate of creating sessions (spent only while the server has room for
more sessions: `Capacity`), and each API key's rate of requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.session_index import active_count_sql


@dataclass(frozen=True)
class Capacity:
    """How many sessions of every tenant may be pending or running at once, and how to count
    them: an SQL expression and its named parameters."""

    limit: int
    count: sql.Composable
    params: Mapping[str, Any]

    @classmethod
    def of(cls, limit: int, events_table: str) -> Capacity:
        """Counted as the session index does, with the creations it has not applied yet."""
        count, params = active_count_sql(events_table)
        return cls(limit, count, params)


@dataclass(frozen=True)
class Creations:
    """The answer to `count` new sessions of a tenant."""

    active: int
    """Sessions of every tenant pending or running, as counted."""
    full: bool
    """No room for the new ones under the capacity: no token was taken."""
    wait_s: float | None
    """With room: None if the tokens were taken, else the seconds until they would be there."""


class TokenBuckets:
    """The buckets of one table, each named by its key column."""

    def __init__(self, pool: ConnectionPool, table: str, key: str) -> None:
        self.pool = pool
        self._names = {"table": sql.Identifier(table), "key": sql.Identifier(key)}
        self._take = sql.SQL(_TAKE).format(**self._names)
        self._new = sql.SQL(_NEW_BUCKET).format(**self._names)

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

    def take_if_room(
        self, name: str, per_minute: float, count: int, capacity: Capacity
    ) -> Creations:
        """Count the sessions and take `count` tokens only if `count` more fit under
        `capacity`. One statement, except for a bucket's first take."""
        params = {**capacity.params, **_params(name, per_minute, count), "limit": capacity.limit}
        query = sql.SQL(_TAKE_IF_ROOM).format(**self._names, active=capacity.count)
        with self.pool.connection() as conn:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            if row[1] is None and row[0] + count <= capacity.limit:  # the bucket's first take
                conn.execute(self._new, params)
                row = conn.execute(query, params).fetchone()
        assert row is not None
        active, granted, tokens = row
        if active + count > capacity.limit:
            return Creations(active, full=True, wait_s=None)
        return Creations(active, full=False, wait_s=_wait_s(count, per_minute, granted, tokens))


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

    def take(self, tenant: str, count: int = 1) -> Creations:
        """Count the sessions and, if `count` more fit, take `count` tokens."""
        return self._buckets.take_if_room(tenant, self.per_minute, count, self.capacity)


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
        if self._spend_held(key_name):
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

    def _spend_held(self, key_name: str) -> bool:
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
# The count and the take in one round trip: the bucket is updated only if `count` more
# sessions fit; `granted` is NULL when it is not (or when there is no bucket yet).
_TAKE_IF_ROOM = f"""
WITH counted AS (SELECT {{active}} AS active),
taken AS (
    UPDATE {{table}} SET {_SPEND}
    WHERE {{key}} = %(name)s AND (SELECT active FROM counted) + %(count)s <= %(limit)s
    RETURNING granted, tokens
)
SELECT active, granted, tokens FROM counted LEFT JOIN taken ON true
"""  # noqa: S608 - as _TAKE
_NEW_BUCKET = """
INSERT INTO {table} ({key}, tokens, refilled_at, granted)
VALUES (%(name)s, %(cap)s, now(), true) ON CONFLICT ({key}) DO NOTHING
"""
