"""Rates shared by every API process through PostgreSQL: token buckets, one row each.

A bucket holds up to `per_minute` tokens, refilled continuously; n things take n tokens. The
bucket is a row locked for the decision (one statement), so replicas cannot overspend it.
Two kinds: each tenant's rate of creating sessions, and each API key's rate of requests.
"""

from __future__ import annotations

import threading
import time

from psycopg import sql
from psycopg_pool import ConnectionPool


class TokenBuckets:
    """The buckets of one table, each named by its key column."""

    def __init__(self, pool: ConnectionPool, table: str, key: str) -> None:
        self.pool = pool
        names = {"table": sql.Identifier(table), "key": sql.Identifier(key)}
        self._take = sql.SQL(_TAKE).format(**names)
        self._new = sql.SQL(_NEW_BUCKET).format(**names)

    def take(self, name: str, per_minute: float, count: int = 1) -> float | None:
        """Take `count` tokens from `name`'s bucket: None if granted, else the seconds until
        they would be there. One statement, except for a bucket's first take."""
        rate = per_minute / 60.0
        params = {"name": name, "count": count, "cap": float(per_minute), "rate": rate}
        with self.pool.connection() as conn:
            row = conn.execute(self._take, params).fetchone()
            if row is None:  # the first take: a full bucket, then take from it
                conn.execute(self._new, params)
                row = conn.execute(self._take, params).fetchone()
        assert row is not None
        granted, tokens = row
        return None if granted else (count - tokens) / rate


class CreationQuota:
    """Each tenant's rate of creating sessions."""

    def __init__(self, pool: ConnectionPool, per_minute: int) -> None:
        self.pool = pool
        self.capacity = float(per_minute)
        self._buckets = TokenBuckets(pool, "tenant_quotas", "tenant")

    def take(self, tenant: str, count: int = 1) -> float | None:
        """Take `count` tokens; None if granted, else the seconds until they would be there."""
        return self._buckets.take(tenant, self.capacity, count)


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
_TAKE = f"""
UPDATE {{table}} SET
    granted = {_AVAILABLE} >= %(count)s,
    tokens = {_AVAILABLE} - CASE WHEN {_AVAILABLE} >= %(count)s THEN %(count)s ELSE 0 END,
    refilled_at = now()
WHERE {{key}} = %(name)s
RETURNING granted, tokens
"""  # noqa: S608 - the f-string only repeats a constant expression
_NEW_BUCKET = """
INSERT INTO {table} ({key}, tokens, refilled_at, granted)
VALUES (%(name)s, %(cap)s, now(), true) ON CONFLICT ({key}) DO NOTHING
"""
