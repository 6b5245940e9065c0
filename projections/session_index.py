"""session_index: list and filter sessions by tenant, status, label, creation time and id prefix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Connection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from domain.session import ENDED, ERASED, RUNNABLE, SessionStatus, status_after, values
from domain.session import WorkflowSession as W
from domain.waits import described
from projections.view import Recorded, RowTable, SessionLog

MIN_ID_PREFIX = 4
"""Characters of an id a prefix must give: fewer would match half a tenant's sessions."""
_UUID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"


@dataclass
class IndexedSession:
    session_id: UUID
    tenant: str
    name: str
    status: str
    labels: dict[str, str]
    step_count: int
    created_at: datetime
    updated_at: datetime
    version: int
    started: bool = False
    origin: str = "new"
    """new, replay or fork"""
    source_id: UUID | None = None
    """The session replayed or forked."""
    waiting_for: str | None = None
    """What a waiting session waits for: `approval: <question>`, `signal <name>`, `timer`."""
    due_at: datetime | None = None
    """When a waiting session's wait is due: a timer's time, an approval's or a signal's
    timeout. Workers claim waiting sessions by it."""
    waited_ms: int = 0
    """Time spent waiting, which counts towards no timeout and not towards the TTL."""
    erased_at: datetime | None = None
    """When the session was erased: the row is its tombstone."""


STATUSES = {status.value: status for status in SessionStatus}
"""Each status by its value (as a row holds it): faster than the enum's own call."""


def _origin(event: W.Created) -> dict[str, Any]:
    if event.replay_of is not None:
        return {"origin": "replay", "source_id": UUID(event.replay_of["session_id"])}
    if event.forked_from is not None:
        return {"origin": "fork", "source_id": UUID(event.forked_from["session_id"])}
    return {}


def fold(rows: dict[UUID, IndexedSession], batch: Sequence[Recorded]) -> set[UUID]:
    changed: set[UUID] = set()
    for recorded in batch:
        event, session_id = recorded.event, recorded.session_id
        row = rows.get(session_id)
        if isinstance(event, W.Created):
            if row is None:
                rows[session_id] = IndexedSession(
                    session_id=session_id,
                    tenant=event.tenant,
                    name=event.name,
                    status=SessionStatus.PENDING.value,
                    labels=event.labels,
                    step_count=len(event.steps),
                    created_at=recorded.at,
                    updated_at=recorded.at,
                    version=event.originator_version,
                    **_origin(event),
                )
                changed.add(session_id)
            continue
        if row is None or event.originator_version <= row.version:
            continue
        if isinstance(event, W.Erased):
            _tombstone(row, recorded, event)
            changed.add(session_id)
            continue
        if isinstance(event, W.LoopExpanded):  # its iterations' steps are the session's now
            row.step_count += len(event.steps)
            row.version = event.originator_version
            changed.add(session_id)
            continue
        status = status_after(event, STATUSES[row.status], row.started).value
        row.started = row.started or isinstance(event, W.StepStarted)
        if status != row.status:
            row.status, row.updated_at, row.version = status, recorded.at, event.originator_version
            _follow_wait(row, event)
            changed.add(session_id)
    return changed


def _follow_wait(row: IndexedSession, event: W.Event) -> None:
    """What the session waits for and until when, while it waits."""
    match event:
        case W.WaitStarted(kind=kind, question=question, signal=signal, due_at=due_at):
            row.waiting_for, row.due_at = described(kind, question, signal), due_at
        case W.WaitEnded(waited_ms=waited_ms):
            row.waited_ms += waited_ms
            row.waiting_for, row.due_at = None, None
        case _:
            row.waiting_for, row.due_at = None, None


def _tombstone(row: IndexedSession, recorded: Recorded, event: W.Erased) -> None:
    """What an erased session's row keeps: id, tenant, status, times, origin."""
    row.name, row.labels, row.step_count, row.started = ERASED, {}, 0, False
    row.status, row.version = event.status, event.originator_version
    row.updated_at = row.erased_at = recorded.at


class SessionIndexView:
    name: ClassVar[str] = "session_index"
    version: ClassVar[int] = 4  # 2: origin and source (replays, forks). 3: waits. 4: erased_at
    tables: ClassVar[tuple[str, ...]] = ("session_index",)
    rows = RowTable("session_index", IndexedSession, key=("session_id",), carried=True)

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS session_index (
                session_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                name text NOT NULL,
                status text NOT NULL,
                labels jsonb NOT NULL,
                step_count integer NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                version integer NOT NULL,
                started boolean NOT NULL,
                origin text NOT NULL,
                source_id uuid,
                waiting_for text,
                due_at timestamptz,
                waited_ms bigint NOT NULL,
                erased_at timestamptz
            )
            """
        )
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS session_index_by_due ON session_index (due_at) "
                "WHERE status = {}"
            ).format(sql.Literal(SessionStatus.WAITING.value))
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS session_index_by_source ON session_index (source_id) "
            "WHERE source_id IS NOT NULL"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS session_index_by_tenant_created "
            "ON session_index (tenant, created_at DESC, session_id DESC)"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS session_index_by_tenant_status_created "
            "ON session_index (tenant, status, created_at DESC, session_id DESC)"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS session_index_by_labels "
            "ON session_index USING gin (labels jsonb_path_ops)"
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        session_ids = {r.session_id for r in batch}
        rows = {row.session_id: row for row in self.rows.load_for_sessions(conn, session_ids)}
        changed = fold(rows, batch)
        self.rows.upsert(conn, (rows[i] for i in changed))


@dataclass(frozen=True)
class SessionFilter:
    tenant: str
    status: str | None = None
    labels: dict[str, str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    origin: str | None = None
    source_id: UUID | None = None
    id_prefix: str | None = None
    """The first characters of the id, as printed (`1f0e3c2a`, `1f0e3c2a-9b`)."""


def id_range(prefix: str) -> tuple[UUID, UUID]:
    """The lowest and highest ids that start with `prefix`; ValueError if no id could."""
    text = prefix.lower()
    if len(text) < MIN_ID_PREFIX:
        raise ValueError(f"{prefix!r} is too short: give at least {MIN_ID_PREFIX} characters")
    if len(text) > len(_UUID_SHAPE) or any(
        (c != "-") if shape == "-" else (c not in "0123456789abcdef")
        for c, shape in zip(text, _UUID_SHAPE, strict=False)
    ):
        raise ValueError(f"{prefix!r} is not the start of a session id")
    digits = text.replace("-", "")
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


def list_sessions(
    conn: Connection[Any],
    where: SessionFilter,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> list[IndexedSession]:
    """Newest first. Pass the last row's (created_at, session_id) as `after` for the next page."""
    conditions: list[sql.Composable] = [sql.SQL("tenant = %s")]
    params: list[Any] = [where.tenant]
    if where.status is not None:
        conditions.append(sql.SQL("status = %s"))
        params.append(where.status)
    if where.labels:
        conditions.append(sql.SQL("labels @> %s"))
        params.append(Jsonb(where.labels))
    if where.origin is not None:
        conditions.append(sql.SQL("origin = %s"))
        params.append(where.origin)
    if where.source_id is not None:
        conditions.append(sql.SQL("source_id = %s"))
        params.append(where.source_id)
    if where.id_prefix is not None:
        conditions.append(sql.SQL("session_id BETWEEN %s AND %s"))
        params.extend(id_range(where.id_prefix))
    if where.created_after is not None:
        conditions.append(sql.SQL("created_at >= %s"))
        params.append(where.created_after)
    if where.created_before is not None:
        conditions.append(sql.SQL("created_at < %s"))
        params.append(where.created_before)
    if after is not None:
        conditions.append(sql.SQL("(created_at, session_id) < (%s, %s)"))
        params.extend(after)
    query = sql.SQL(
        "SELECT {columns} FROM session_index WHERE {conditions} "
        "ORDER BY created_at DESC, session_id DESC LIMIT %s"
    ).format(
        columns=sql.SQL(SessionIndexView.rows.names),
        conditions=sql.SQL(" AND ").join(conditions),
    )
    with conn.cursor(row_factory=class_row(IndexedSession)) as cursor:
        return cursor.execute(query, [*params, limit]).fetchall()


def active_count_sql(events_table: str) -> sql.Composed:
    """How many sessions of every tenant are pending or running, as an SQL expression (its
    constants written in) for a statement that decides on it in the same round trip: the
    tenant's creation rate is taken only if the count leaves room (`engine.tenancy.quotas`).
    Those in the index, and those created by events in `events_table` the index has not
    applied yet: a count taken right after a creation includes it, without waiting for the
    projector."""
    return sql.SQL(
        "((SELECT count(*) FROM session_index WHERE status = ANY({runnable})) + "
        "(SELECT count(*) FROM {events} WHERE topic = {created} AND notification_id > "
        "(SELECT coalesce(max(position), 0) FROM projection_tracking WHERE view = {index})))"
    ).format(
        runnable=sql.Literal(values(RUNNABLE)),
        events=sql.Identifier(events_table),
        created=sql.Literal(get_topic(W.Created)),
        index=sql.Literal(SessionIndexView.name),
    )


def overdue_sessions(conn: Connection[Any], created_before: datetime) -> list[UUID]:
    """Sessions of every tenant, not yet ended nor waiting, created before the given time
    once the time they spent waiting is left out."""
    rows = conn.execute(
        "SELECT session_id FROM session_index WHERE NOT status = ANY(%s) "
        "AND created_at < %s AND created_at + waited_ms * interval '1 millisecond' < %s "
        "ORDER BY created_at",
        ([*values(ENDED), SessionStatus.WAITING.value], created_before, created_before),
    ).fetchall()
    return [row[0] for row in rows]


def lineage(conn: Connection[Any], tenant: str, session_id: UUID) -> list[IndexedSession]:
    """The session, the sessions it was replayed or forked from up to the first, and every
    replay and fork of those, of `tenant` only. Empty if the tenant has no such session."""
    query = sql.SQL(
        """
        WITH RECURSIVE up(session_id, source_id) AS (
            SELECT session_id, source_id FROM session_index WHERE session_id = %(id)s
                AND tenant = %(tenant)s
            UNION
            SELECT s.session_id, s.source_id FROM session_index s JOIN up
                ON s.session_id = up.source_id WHERE s.tenant = %(tenant)s
        ), down(session_id) AS (
            SELECT session_id FROM up WHERE source_id IS NULL
                OR source_id NOT IN (SELECT session_id FROM up)
            UNION
            SELECT s.session_id FROM session_index s JOIN down ON s.source_id = down.session_id
                WHERE s.tenant = %(tenant)s
        )
        SELECT {columns} FROM session_index WHERE session_id IN (SELECT session_id FROM down)
        ORDER BY created_at, session_id
        """
    ).format(columns=sql.SQL(SessionIndexView.rows.names))
    with conn.cursor(row_factory=class_row(IndexedSession)) as cursor:
        return cursor.execute(query, {"id": session_id, "tenant": tenant}).fetchall()


def tenant_of(conn: Connection[Any], session_id: UUID) -> str | None:
    """The tenant the session belongs to, or None if the index has no such session (yet)."""
    row = conn.execute(
        "SELECT tenant FROM session_index WHERE session_id = %s", (session_id,)
    ).fetchone()
    return None if row is None else str(row[0])
