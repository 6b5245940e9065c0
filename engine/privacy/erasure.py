"""Erasing a session (crypto-shredding), all of a tenant's, and those past retention.

A session is erased by: cancelling it if it is still under way; recording `Erased` (actor,
reason, the status it ended in, in clear); destroying its data key (every wrap of it) and
deleting its snapshots and executor state in one transaction; deleting its artifacts' files.
The views purge it down to a tombstone when they fold `Erased`. Every step is safe to run
again: erasing an erased session finishes what a crash may have left undone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from domain.errors import InvalidStateTransition, ScheduleNotFound
from domain.session import ENDED, WorkflowSession, stored_artifacts, values
from engine.executors.artifacts import artifacts_of
from engine.logs import LOGGER_NAME, on_session
from engine.store.app import Stepline
from engine.store.event_store import FencedRecorder

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class ErasedSession:
    session_id: UUID
    cancelled: bool
    """It was still under way, and was cancelled first."""
    shredded: bool
    """It had a data key, now destroyed. False for a session stored in clear (made without a
    master key, or before sealing): its views are purged but its log still reads."""


@dataclass(frozen=True)
class Erasure:
    """What erasing needs besides the application: the pool of Stepline's own tables and the
    artifact files (None where the process keeps none)."""

    app: Stepline
    pool: ConnectionPool
    data_dir: Path | None = None
    """Where the artifacts' files are (engine.executors.artifacts): each session's of its own."""

    def erase(self, session_id: UUID, reason: str, actor: str) -> ErasedSession:
        """Erase the session; again on an erased one only finishes the job."""
        session = self.app.get_session(session_id)
        cancelled = self._cancel_if_under_way(session, actor)
        digests = self._artifact_digests(session_id) if not session.erased else set()
        if not session.erased:
            self.app.change(session_id, lambda s: None if s.erased else s.erase(reason, actor))
        shredded = self._destroy(session_id)
        if self.data_dir is not None:
            artifacts_of(self.data_dir, session_id).delete(digests)
        log.warning("Session erased by %s: %s", actor, reason, extra=on_session(session_id))
        return ErasedSession(session_id, cancelled, shredded)

    def erase_tenant(self, tenant: str, reason: str, actor: str) -> list[ErasedSession]:
        """Erase every session of the tenant, then delete its schedules and its stored and
        webhook secrets."""
        erased = [self.erase(session_id, reason, actor) for session_id in self.sessions_of(tenant)]
        for schedule_id in self.schedules_of(tenant):
            with contextlib.suppress(InvalidStateTransition, ScheduleNotFound):  # deleted meanwhile
                self.app.change_schedule(schedule_id, lambda s: s.delete(actor))
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM tenant_secrets WHERE tenant = %s", (tenant,))
            conn.execute("DELETE FROM tenant_webhook_secrets WHERE tenant = %s", (tenant,))
        log.warning("Tenant %s erased by %s: %s", tenant, actor, reason)
        return erased

    def erase_ended_before(self, locked: Connection[Any], days: int, actor: str) -> list[UUID]:
        """Erase the sessions that ended more than `days` days ago. `locked` holds the sweep's
        lock (engine.ownership.sweep), so one process at a time does it."""
        due = ended_before(locked, datetime.now(UTC) - timedelta(days=days))
        reason = f"ended more than {days} days ago (STEPLINE_RETENTION_DAYS)"
        for session_id in due:
            self.erase(session_id, reason, actor)
        return due

    def sessions_of(self, tenant: str) -> list[UUID]:
        """The tenant's sessions not yet erased: those with data keys and those the index
        knows (a session stored in clear has no key)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT session_id FROM session_keys WHERE tenant = %(t)s AND erased_at IS NULL "
                "UNION SELECT session_id FROM session_index WHERE tenant = %(t)s "
                "AND erased_at IS NULL",
                {"t": tenant},
            ).fetchall()
        return sorted(row[0] for row in rows)

    def schedules_of(self, tenant: str) -> list[UUID]:
        """The tenant's schedules not yet deleted, as the schedule index knows them."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT schedule_id FROM schedule_index WHERE tenant = %s AND NOT deleted",
                (tenant,),
            ).fetchall()
        return [row[0] for row in rows]

    # ---- the steps ----------------------------------------------------------------------

    def _cancel_if_under_way(self, session: WorkflowSession, actor: str) -> bool:
        if session.status.is_terminal:
            return False
        try:
            self.app.cancel(session.id, reason="erasure", actor=actor)
        except InvalidStateTransition:
            return False  # it ended meanwhile
        return True

    def _artifact_digests(self, session_id: UUID) -> set[str]:
        return {
            str(artifact["hash"])
            for event in self.app.history(session_id)
            for artifact in stored_artifacts(event)
            if "hash" in artifact
        }

    def _destroy(self, session_id: UUID) -> bool:
        snapshots = cast(FencedRecorder, self.app.snapshots.recorder).events_table_name  # type: ignore[union-attr]
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE originator_id = %s").format(
                    sql.Identifier(snapshots)
                ),
                (session_id,),
            )
            conn.execute("DELETE FROM executor_state WHERE session_id = %s", (session_id,))
            keys = self.app.data_keys
            return keys.destroy(conn, session_id) if keys is not None else False


def ended_before(conn: Connection[Any], cutoff: datetime) -> list[UUID]:
    """Sessions of every tenant that ended before `cutoff` and are not erased yet."""
    rows = conn.execute(
        "SELECT session_id FROM session_index WHERE status = ANY(%s) AND erased_at IS NULL "
        "AND updated_at < %s ORDER BY updated_at",
        (values(ENDED), cutoff),
    ).fetchall()
    return [row[0] for row in rows]
