"""Reads shared by the HTTP routes and `stepline sessions`: pages of sessions with their
progress, keyset cursors. No web framework here, so the command line starts without one."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Connection

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
