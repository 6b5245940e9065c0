"""Executor state kept outside the log, so that a session taken over carries on where it was.

Some state must survive a takeover but must not enter the append-only log: HTTP cookies are
credentials, and the log is kept forever. It lives here, one row per session and executor,
written when it changes and deleted once the session has ended (by the TTL sweep's tidy-up).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from domain.session import ENDED, values


class ExecutorStates:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def save(self, session_id: UUID, executor: str, state: dict[str, Any]) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO executor_state (session_id, executor, state, updated_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (session_id, executor) "
                "DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
                (session_id, executor, Jsonb(state)),
            )

    def load(self, session_id: UUID) -> dict[str, dict[str, Any]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT executor, state FROM executor_state WHERE session_id = %s", (session_id,)
            ).fetchall()
        return dict(rows)

    def forget_ended(self) -> None:
        """Drop the state of sessions that have ended."""
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM executor_state e USING session_index si "
                "WHERE si.session_id = e.session_id "
                "AND si.status = ANY(%s)",
                (values(ENDED),),
            )
