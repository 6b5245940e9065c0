"""Each tenant's daily budget of model tokens (STEPLINE_TENANT_DAILY_TOKENS).

Before each model call the task loop asks whether the session's tenant has used its budget for
the day (UTC), as the `ai_usage` view has counted so far; if so the session pauses with the
reason, and carries on when resumed once the day has turned or the budget was raised. The view
trails the log by the projector's lag, so sessions calling the model at the same moment can
overrun the budget by their last turns.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg_pool import ConnectionPool

from domain.errors import StandardError
from projections.ai_usage import tokens_on


class TokenBudget:
    def __init__(self, pool: ConnectionPool, daily_tokens: int) -> None:
        self.pool = pool
        self.daily_tokens = daily_tokens

    def used_up(self, tenant: str) -> StandardError | None:
        """Why the tenant may not call the model now, or None if it may."""
        today = datetime.now(UTC).date()
        with self.pool.connection() as conn:
            used = tokens_on(conn, tenant, today)
        if used < self.daily_tokens:
            return None
        return StandardError.of(
            "TENANT_DAILY_TOKENS_EXCEEDED",
            f"tenant {tenant} used {used} model tokens on {today} (UTC); its daily budget is "
            f"{self.daily_tokens}",
            {"tenant": tenant, "used": used, "limit": self.daily_tokens, "day": str(today)},
        )
