"""schedule_index: each tenant's schedules, when each fires next, and what it last did.

The scheduler finds the schedules due here (`due_schedules`, on the index of their next firing)
and the API and the dashboard list them. A deleted schedule keeps its row, marked deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import class_row

from domain.payloads import ErrorPayload
from domain.schedule import Schedule as Sch
from domain.schedule import Timing, moment_of
from projections.view import Recorded, RowTable, SessionLog


@dataclass
class IndexedSchedule:
    schedule_id: UUID
    tenant: str
    name: str
    cron: str | None
    every: str | None
    timezone: str
    catch_up: str
    paused: bool
    deleted: bool
    workflow: dict[str, Any]
    webhook: dict[str, Any] | None
    cursor: datetime
    next_firing_at: datetime | None
    last_fired_at: datetime | None
    last_session_id: UUID | None
    firings: int
    refused_firings: int
    last_error: ErrorPayload | None
    """Why the last firing created no session, until one does."""
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def timing(self) -> Timing:
        return Timing(self.cron, self.every, self.timezone)


def _created(recorded: Recorded, event: Sch.Created) -> IndexedSchedule:
    return IndexedSchedule(
        schedule_id=recorded.session_id,
        tenant=event.tenant,
        name=event.name,
        cron=event.timing["cron"],
        every=event.timing["every"],
        timezone=event.timing["timezone"],
        catch_up=event.catch_up,
        paused=event.paused,
        deleted=False,
        workflow=event.workflow,
        webhook=event.webhook,
        cursor=moment_of(event.starts_at),
        next_firing_at=None,
        last_fired_at=None,
        last_session_id=None,
        firings=0,
        refused_firings=0,
        last_error=None,
        created_by=event.actor,
        created_at=recorded.at,
        updated_at=recorded.at,
        version=event.originator_version,
    )


def _apply(row: IndexedSchedule, event: Sch.Event) -> None:
    match event:
        case Sch.Changed(changes=changes, at=at):
            for name, value in changes.items():
                if name == "timing":
                    row.cron, row.every, row.timezone = (
                        value["cron"],
                        value["every"],
                        value["timezone"],
                    )
                    row.cursor = moment_of(at)
                elif name in ("name", "catch_up", "workflow", "webhook"):
                    setattr(row, name, value)
        case Sch.Paused():
            row.paused = True
        case Sch.Resumed(at=at):
            row.paused, row.cursor = False, max(row.cursor, moment_of(at))
        case Sch.Fired(fired_at=fired_at, session_id=session_id):
            row.cursor = row.last_fired_at = moment_of(fired_at)
            row.last_session_id, row.last_error = UUID(session_id), None
            row.firings += 1
        case Sch.FiringRefused(fired_at=fired_at, error=error):
            row.cursor, row.last_error = moment_of(fired_at), error
            row.refused_firings += 1
        case Sch.FiringsLetGo(through=through):
            row.cursor = moment_of(through)
        case Sch.Deleted():
            row.deleted = True


def fold(rows: dict[UUID, IndexedSchedule], batch: Sequence[Recorded]) -> set[UUID]:
    changed: set[UUID] = set()
    for recorded in batch:
        event, schedule_id = recorded.event, recorded.session_id
        row = rows.get(schedule_id)
        if isinstance(event, Sch.Created):
            if row is None:
                rows[schedule_id] = row = _created(recorded, event)
            else:
                continue
        elif row is None or event.originator_version <= row.version:
            continue
        else:
            _apply(row, event)  # type: ignore[arg-type]
        row.version, row.updated_at = event.originator_version, recorded.at
        row.next_firing_at = (
            None if row.paused or row.deleted else row.timing.next_after(row.cursor)
        )
        changed.add(schedule_id)
    return changed


class ScheduleIndexView:
    name: ClassVar[str] = "schedule_index"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("schedule_index",)
    rows = RowTable("schedule_index", IndexedSchedule, key=("schedule_id",))

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schedule_index (
                schedule_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                name text NOT NULL,
                cron text,
                every text,
                timezone text NOT NULL,
                catch_up text NOT NULL,
                paused boolean NOT NULL,
                deleted boolean NOT NULL,
                workflow jsonb NOT NULL,
                webhook jsonb,
                cursor timestamptz NOT NULL,
                next_firing_at timestamptz,
                last_fired_at timestamptz,
                last_session_id uuid,
                firings integer NOT NULL,
                refused_firings integer NOT NULL,
                last_error jsonb,
                created_by text NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                version integer NOT NULL
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS schedule_index_due ON schedule_index (next_firing_at) "
            "WHERE next_firing_at IS NOT NULL"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS schedule_index_by_tenant_created "
            "ON schedule_index (tenant, created_at DESC, schedule_id DESC) WHERE NOT deleted"
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, Sch.Event)]
        if not touched:
            return
        rows = {
            row.schedule_id: row
            for row in _select(
                conn, "schedule_id = ANY(%s)", [list({r.session_id for r in touched})]
            )
        }
        changed = fold(rows, touched)
        self.rows.upsert(conn, (rows[i] for i in changed))


def _select(conn: Connection[Any], where: str, params: list[Any]) -> list[IndexedSchedule]:
    query = sql.SQL("SELECT {columns} FROM schedule_index WHERE {where}").format(
        columns=sql.SQL(ScheduleIndexView.rows.names), where=sql.SQL(where)
    )
    with conn.cursor(row_factory=class_row(IndexedSchedule)) as cursor:
        return cursor.execute(query, params).fetchall()


def find(conn: Connection[Any], schedule_id: UUID) -> IndexedSchedule | None:
    """The schedule (None if there is none, or it was deleted)."""
    rows = _select(conn, "schedule_id = %s AND NOT deleted", [schedule_id])
    return rows[0] if rows else None


def list_schedules(
    conn: Connection[Any],
    tenant: str,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> list[IndexedSchedule]:
    """Newest first. Pass the last row's (created_at, schedule_id) as `after` for the next page."""
    where = "tenant = %s AND NOT deleted"
    params: list[Any] = [tenant]
    if after is not None:
        where += " AND (created_at, schedule_id) < (%s, %s)"
        params += list(after)
    return _select(
        conn, where + " ORDER BY created_at DESC, schedule_id DESC LIMIT %s", [*params, limit]
    )


def due_schedules(conn: Connection[Any], now: datetime, limit: int = 100) -> list[UUID]:
    """The schedules with a firing due at `now`, the most overdue first."""
    rows = conn.execute(
        "SELECT schedule_id FROM schedule_index WHERE next_firing_at <= %s "
        "ORDER BY next_firing_at LIMIT %s",
        (now, limit),
    ).fetchall()
    return [schedule_id for (schedule_id,) in rows]


def next_firing(conn: Connection[Any]) -> datetime | None:
    """When the next firing of any schedule is due."""
    row = conn.execute("SELECT min(next_firing_at) FROM schedule_index").fetchone()
    return None if row is None else row[0]
