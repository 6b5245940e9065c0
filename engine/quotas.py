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
    refilled_at timestamptz NOT NULL
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
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO tenant_quotas (tenant, tokens, refilled_at) "
                "VALUES (%s, %s, clock_timestamp()) ON CONFLICT (tenant) DO NOTHING",
                (tenant, self.capacity),
            )
            row = conn.execute(
                "SELECT least(%s, tokens + extract(epoch FROM clock_timestamp() - refilled_at) "
                "* %s) FROM tenant_quotas WHERE tenant = %s FOR UPDATE",
                (self.capacity, self.rate_per_s, tenant),
            ).fetchone()
            assert row is not None  # inserted above if it was missing
            available = float(row[0])
            granted = available >= count
            conn.execute(
                "UPDATE tenant_quotas SET tokens = %s, refilled_at = clock_timestamp() "
                "WHERE tenant = %s",
                (available - count if granted else available, tenant),
            )
        return None if granted else (count - available) / self.rate_per_s
