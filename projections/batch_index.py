"""batch_index: each tenant's batches, newest first, with the sessions each one created."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import class_row

from domain.batch import Batch
from projections.view import Recorded, RowTable, SessionLog, rendered


@dataclass
class IndexedBatch:
    batch_id: UUID
    tenant: str
    created_by: str
    created_at: datetime
    session_ids: list[UUID]
    cancelled: bool
    version: int


def fold(rows: dict[UUID, IndexedBatch], batch: Sequence[Recorded]) -> set[UUID]:
    changed: set[UUID] = set()
    for recorded in batch:
        event, batch_id = recorded.event, recorded.session_id
        if isinstance(event, Batch.Created) and batch_id not in rows:
            rows[batch_id] = IndexedBatch(
                batch_id=batch_id,
                tenant=event.tenant,
                created_by=event.actor,
                created_at=recorded.at,
                session_ids=[UUID(i) for i in event.session_ids],
                cancelled=False,
                version=event.originator_version,
            )
            changed.add(batch_id)
        elif isinstance(event, Batch.Cancelled) and batch_id in rows:
            row = rows[batch_id]
            if event.originator_version > row.version:
                row.cancelled, row.version = True, event.originator_version
                changed.add(batch_id)
    return changed


class BatchIndexView:
    name: ClassVar[str] = "batch_index"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("batch_index",)
    rows = RowTable("batch_index", IndexedBatch, key=("batch_id",))

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS batch_index (
                batch_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                created_by text NOT NULL,
                created_at timestamptz NOT NULL,
                session_ids uuid[] NOT NULL,
                cancelled boolean NOT NULL,
                version integer NOT NULL
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS batch_index_by_tenant_created "
            "ON batch_index (tenant, created_at DESC, batch_id DESC)"
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, Batch.Event)]
        if not touched:
            return
        rows = {row.batch_id: row for row in _load(conn, {r.session_id for r in touched})}
        changed = fold(rows, touched)
        self.rows.upsert(conn, (rows[i] for i in changed))


_LOAD = rendered(
    sql.SQL("SELECT {columns} FROM batch_index WHERE batch_id = ANY(%s)").format(
        columns=sql.SQL(BatchIndexView.rows.names)
    )
)


def _load(conn: Connection[Any], batch_ids: set[UUID]) -> list[IndexedBatch]:
    with conn.cursor(row_factory=class_row(IndexedBatch)) as cursor:
        return cursor.execute(_LOAD, (list(batch_ids),)).fetchall()


def list_batches(
    conn: Connection[Any],
    tenant: str,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> list[IndexedBatch]:
    """Newest first. Pass the last row's (created_at, batch_id) as `after` for the next page."""
    query = sql.SQL(
        "SELECT {columns} FROM batch_index WHERE tenant = %s {after} "
        "ORDER BY created_at DESC, batch_id DESC LIMIT %s"
    ).format(
        columns=sql.SQL(BatchIndexView.rows.names),
        after=sql.SQL("AND (created_at, batch_id) < (%s, %s)" if after else ""),
    )
    with conn.cursor(row_factory=class_row(IndexedBatch)) as cursor:
        return cursor.execute(query, [tenant, *(after or ()), limit]).fetchall()
