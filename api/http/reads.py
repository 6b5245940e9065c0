"""Reads shared by the HTTP routes and `stepline sessions`: pages of sessions with their
progress, keyset cursors, a session's progress beside the end of its log. No web framework
here, so the command line starts without one."""

from __future__ import annotations

import base64
import binascii
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from psycopg import Connection, sql

from api.http.schemas import SessionPage, SessionSummary
from projections import session_progress
from projections.session_index import IndexedSession, SessionFilter, list_sessions
from projections.session_progress import SessionProgressView
from projections.view import StoredRow, decoded


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


GAP_LIMIT = 64
"""The most events of one session a read folds onto its progress row itself (a view that
far behind is waited for instead)."""


@dataclass(frozen=True)
class ProgressBesideLog:
    """A session's progress row (None while the view has not got it), the session's last
    event in the log (None: the log has no such session) and the events the row has not
    applied yet (up to `GAP_LIMIT`), read in one snapshot."""

    row: session_progress.Progress | None
    last_version: int | None
    last_position: int | None
    """The last event's notification id: how far the view must get to show it."""
    gap: list[StoredRow]
    """The session's events after the row's version (up to `GAP_LIMIT`), as stored."""

    @property
    def caught_up(self) -> bool:
        """Whether the row has applied every event the log had of the session."""
        return self.row is not None and self.row.version >= (self.last_version or 0)

    def current(self, mapper: Mapper[UUID]) -> session_progress.Progress | None:
        """The row with the events it lacks folded in by the view's own fold, as the view
        will hold it once it applies them; None when the gap is more than was read."""
        if self.caught_up or self.last_version is None:
            return self.row
        if not self.gap:
            return None
        _, _, last_read, _, _ = self.gap[-1]
        if last_read != self.last_version:  # the gap is longer than was read
            return None
        rows = {} if self.row is None else {self.row.session_id: deepcopy(self.row)}
        session_progress.fold(rows, decoded(mapper, self.gap))  # (it changes the rows given)
        return next(iter(rows.values()), None)


PROGRESS_COLUMNS = SessionProgressView.rows.columns
_PROGRESS_BESIDE_LOG = """
SELECT last.originator_version, last.notification_id,
       gap.positions, gap.versions, gap.topics, gap.states, {columns}
FROM (SELECT %(id)s::uuid AS session_id) AS asked
LEFT JOIN session_progress AS p ON p.session_id = asked.session_id
LEFT JOIN LATERAL (
    SELECT originator_version, notification_id FROM {events}
    WHERE originator_id = asked.session_id ORDER BY originator_version DESC LIMIT 1
) AS last ON true
LEFT JOIN LATERAL (
    SELECT array_agg(e.notification_id ORDER BY e.originator_version) AS positions,
           array_agg(e.originator_version ORDER BY e.originator_version) AS versions,
           array_agg(e.topic ORDER BY e.originator_version) AS topics,
           array_agg(e.state ORDER BY e.originator_version) AS states
    FROM (
        SELECT notification_id, originator_version, topic, state FROM {events}
        WHERE originator_id = asked.session_id
          AND originator_version > coalesce(p.version, 0)
        ORDER BY originator_version LIMIT %(gap)s
    ) AS e
) AS gap ON last.originator_version > coalesce(p.version, 0)
"""


def progress_beside_log(
    conn: Connection[Any], session_id: UUID, events_table: str
) -> ProgressBesideLog:
    """The session's progress row, its last event in the log and the events between, in one
    round trip: whose session it is and its state now, without waiting for the views."""
    statement = _progress_beside_log(events_table)
    found = conn.execute(statement, {"id": session_id, "gap": GAP_LIMIT}).fetchone()
    assert found is not None  # one row, whatever there is
    last_version, last_position, positions, versions, topics, states, *values = found
    row = None
    if values[0] is not None:  # the row's session_id: the view has the session
        row = session_progress.Progress(**dict(zip(PROGRESS_COLUMNS, values, strict=True)))
    gap = [
        (position, session_id, version, topic, state)
        for position, version, topic, state in zip(
            positions or [], versions or [], topics or [], states or [], strict=True
        )
    ]
    return ProgressBesideLog(row, last_version, last_position, gap)


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
