"""Singleton duties: work that must run in one process at a time across the deployment.

The TTL sweep expires sessions that outlived `STEPLINE_SESSION_TTL_MS` and forgets what ended
sessions left behind (lease rows, executor state). Every process that runs workers or the API
tries it periodically; a transaction-level PostgreSQL advisory lock lets exactly one of them
do it at a time, and the others skip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.errors import InvalidStateTransition
from domain.session import WORKER
from engine.live.follower import run_when_woken
from engine.live.projector import READ_YOUR_WRITES_S, Projector
from engine.logs import LOGGER_NAME
from engine.ownership.executor_state import ExecutorStates
from engine.ownership.leases import Leases
from engine.privacy.erasure import Erasure
from engine.store import locks
from engine.store.app import Stepline
from projections.session_index import overdue_sessions

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Sweep:
    app: Stepline
    projector: Projector
    leases: Leases
    executor_states: ExecutorStates
    ttl_ms: int
    erasure: Erasure | None = None
    retention_days: int | None = None
    """Erase the sessions that ended more than this many days ago (STEPLINE_RETENTION_DAYS)."""

    def once(self) -> list[UUID] | None:
        """The sessions expired, or None if another process is sweeping right now."""
        with self.projector.pool.connection() as conn, conn.transaction():
            locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (locks.SWEEP,)).fetchone()
            if not (locked and locked[0]):
                return None
            self.projector.wait_until(
                self.projector.head(), timeout=READ_YOUR_WRITES_S, names=["session_index"]
            )
            cutoff = datetime.now(UTC) - timedelta(milliseconds=self.ttl_ms)
            expired = []
            for session_id in overdue_sessions(conn, cutoff):
                try:
                    self.app.expire(session_id)
                except InvalidStateTransition:
                    continue  # it ended meanwhile
                expired.append(session_id)
            self.leases.tidy()
            self.executor_states.forget_ended()
            if self.erasure is not None and self.retention_days is not None:
                self.erasure.erase_ended_before(conn, self.retention_days, WORKER)
        return expired

    def start(self, every_s: float = 30.0) -> Callable[[], None]:
        """Sweep every `every_s` seconds in a thread; returns the function that stops it."""
        return run_when_woken("sweep", self._once_quietly, threading.Event(), every_s).stop

    def _once_quietly(self) -> None:
        try:
            self.once()
        except Exception:
            log.exception("The TTL sweep failed; trying again later")
