"""The per-tenant rate of session creation, shared by every API process through PostgreSQL.

A token bucket per tenant: `per_minute` tokens, refilled continuously; creating n sessions
takes n tokens. The bucket is a row locked for the decision, so replicas cannot overspend it.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

_PREPARE_LOCK = 0x57152
DDL = """
CREATE TABLE IF NOT EXISTS tenant_quotas (
    tenant text PRIMARY KEY,
    tokens double precision NOT NULL,
    refilled_at timestamptz NOT NULL,
    granted boolean NOT NULL
)
"""


class CreationQuota:
    def __init__(self, pool: ConnectionPool, per_minute: int) -> None:
        self.pool = pool
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0

    def prepare(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PREPARE_LOCK,))
            conn.execute(DDL)

    def take(self, tenant: str, count: int = 1) -> float | None:
        """Take `count` tokens; None if granted, else the seconds until they would be there."""
        params = {"tenant": tenant, "count": count, "cap": self.capacity, "rate": self.rate_per_s}
        with self.pool.connection() as conn:
            row = conn.execute(_TAKE, params).fetchone()
            if row is None:  # the tenant's first request: a full bucket, then take from it
                conn.execute(_NEW_BUCKET, params)
                row = conn.execute(_TAKE, params).fetchone()
        assert row is not None
        granted, tokens = row
        return None if granted else (count - tokens) / self.rate_per_s


_AVAILABLE = "least(%(cap)s, tokens + extract(epoch FROM now() - refilled_at) * %(rate)s)"
# One statement, so the row lock covers the decision. Every right-hand side sees the old row.
_TAKE = f"""
UPDATE tenant_quotas SET
    granted = {_AVAILABLE} >= %(count)s,
    tokens = {_AVAILABLE} - CASE WHEN {_AVAILABLE} >= %(count)s THEN %(count)s ELSE 0 END,
    refilled_at = now()
WHERE tenant = %(tenant)s
RETURNING granted, tokens
"""  # noqa: S608 - the f-string only repeats a constant expression
_NEW_BUCKET = """
INSERT INTO tenant_quotas (tenant, tokens, refilled_at, granted)
VALUES (%(tenant)s, %(cap)s, now(), true) ON CONFLICT (tenant) DO NOTHING
"""
