"""Reads shared by the HTTP routes and `stepline sessions`: pages of sessions with their
progress, keyset cursors, a session's progress beside the end of its log. No web framework
here, so the command line starts without one."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from psycopg import Connection, sql

from api.http.schemas import SessionPage, SessionSummary
from projections import session_progress
from projections.session_index import IndexedSession, SessionFilter, list_sessions
from projections.session_progress import SessionProgressView


class BadCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    """A keyset cursor for lists ordered by (created_at, id) descending."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API gave out") from None


def session_page(
    conn: Connection[Any],
    where: SessionFilter,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
) -> SessionPage:
    """One page of the session index, newest first, each with its progress."""
    rows = list_sessions(conn, where, limit=limit + 1, after=after)
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].session_id) if len(rows) > limit else None
    )
    progress = {
        row.session_id: row
        for row in SessionProgressView.rows.load_for_sessions(conn, [r.session_id for r in page])
    }
    return SessionPage(
        items=[_summary(row, progress.get(row.session_id)) for row in page],
        next_cursor=next_cursor,
    )


def _summary(row: IndexedSession, progress: session_progress.Progress | None) -> SessionSummary:
    return SessionSummary(
        session_id=row.session_id,
        name=row.name,
        status=row.status,
        labels=row.labels,
        step_count=row.step_count,
        completed_steps=progress.completed_steps if progress else 0,
        failed_steps=progress.failed_steps if progress else 0,
        percent=progress.percent if progress else 0.0,
        created_at=row.created_at,
        started_at=progress.started_at if progress else None,
        finished_at=progress.finished_at if progress else None,
        updated_at=row.updated_at,
        origin=row.origin,
        source_id=row.source_id,
        error_code=progress.error_code if progress else None,
        error_message=progress.error_message if progress else None,
        waiting_for=row.waiting_for,
        due_at=row.due_at,
    )


@dataclass(frozen=True)
class ProgressBesideLog:
    """A session's progress row (None while the view has not got it) and the session's last
    event in the log, read in one snapshot (None: the log has no such session)."""

    row: session_progress.Progress | None
    last_version: int | None
    last_position: int | None
    """The last event's notification id: how far the view must get to show it."""

    @property
    def caught_up(self) -> bool:
        """Whether the row has applied every event the log had of the session."""
        return self.row is not None and self.row.version >= (self.last_version or 0)


PROGRESS_COLUMNS = SessionProgressView.rows.columns
_PROGRESS_BESIDE_LOG = """
SELECT last.originator_version, last.notification_id, {columns}
FROM (SELECT %(id)s::uuid AS session_id) AS asked
LEFT JOIN session_progress AS p ON p.session_id = asked.session_id
LEFT JOIN LATERAL (
    SELECT originator_version, notification_id FROM {events}
    WHERE originator_id = asked.session_id ORDER BY originator_version DESC LIMIT 1
) AS last ON true
"""


def progress_beside_log(
    conn: Connection[Any], session_id: UUID, events_table: str
) -> ProgressBesideLog:
    """The session's progress row and its last event in the log, in one round trip: whose
    session it is and whether the row is up to date, without waiting for the views."""
    found = conn.execute(_progress_beside_log(events_table), {"id": session_id}).fetchone()
    assert found is not None  # one row, whatever there is
    last_version, last_position, *values = found
    row = None
    if values[0] is not None:  # the row's session_id: the view has the session
        row = session_progress.Progress(**dict(zip(PROGRESS_COLUMNS, values, strict=True)))
    return ProgressBesideLog(row, last_version, last_position)


@cache
def _progress_beside_log(events_table: str) -> bytes:
    """The statement, rendered once: composed on every call, its names took more CPU than
    the round trip's own work in psycopg."""
    return (
        sql.SQL(_PROGRESS_BESIDE_LOG)
        .format(
            columns=sql.SQL(", ").join(sql.Identifier("p", c) for c in PROGRESS_COLUMNS),
            events=sql.Identifier(events_table),
        )
        .as_bytes()
    )
