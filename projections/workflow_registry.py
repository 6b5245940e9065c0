"""workflow_registry: each tenant's registered workflows (`workflow_index`: the current version,
how many there are) and every version pushed (`workflow_versions`: its sha256, document, who
pushed it and when), for the API's and the command line's reads. A version's row never
changes once written; a rollback changes only the workflow's current version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import class_row

from domain.workflow import Workflow as Wf
from projections.view import Recorded, RowTable, SessionLog


@dataclass
class IndexedWorkflow:
    workflow_id: UUID
    tenant: str
    name: str
    current_version: int
    version_count: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    """The last of the workflow's events applied."""


@dataclass
class RegisteredVersion:
    workflow_id: UUID
    number: int
    tenant: str
    name: str
    sha256: str
    document: dict[str, Any]
    pushed_at: datetime
    actor: str


def fold(
    rows: dict[UUID, IndexedWorkflow], batch: Sequence[Recorded]
) -> tuple[set[UUID], list[RegisteredVersion]]:
    """Apply the workflows' events to their rows; the workflows changed, and the versions
    pushed (an event already applied changes nothing)."""
    changed: set[UUID] = set()
    pushed: list[RegisteredVersion] = []
    for recorded in batch:
        event, workflow_id = recorded.event, recorded.session_id
        row = rows.get(workflow_id)
        if isinstance(event, Wf.Created):
            if row is not None:
                continue
            rows[workflow_id] = row = _created(recorded, event)
        elif row is None or event.originator_version <= row.version:
            continue
        elif isinstance(event, Wf.Pushed):
            pushed.append(_version(row, recorded, event))
            row.current_version = event.version
            row.version_count = max(row.version_count, event.version)
        elif isinstance(event, Wf.RolledBack):
            row.current_version = event.to_version
        row.version, row.updated_at = event.originator_version, recorded.at
        changed.add(workflow_id)
    return changed, pushed


def _created(recorded: Recorded, event: Wf.Created) -> IndexedWorkflow:
    return IndexedWorkflow(
        workflow_id=recorded.session_id,
        tenant=event.tenant,
        name=event.name,
        current_version=0,
        version_count=0,
        created_by=event.actor,
        created_at=recorded.at,
        updated_at=recorded.at,
        version=event.originator_version,
    )


def _version(row: IndexedWorkflow, recorded: Recorded, event: Wf.Pushed) -> RegisteredVersion:
    return RegisteredVersion(
        workflow_id=row.workflow_id,
        number=event.version,
        tenant=row.tenant,
        name=row.name,
        sha256=event.sha256,
        document=event.document,
        pushed_at=recorded.at,
        actor=event.actor,
    )


class WorkflowRegistryView:
    name: ClassVar[str] = "workflow_registry"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("workflow_index", "workflow_versions")
    rows = RowTable("workflow_index", IndexedWorkflow, key=("workflow_id",))
    versions = RowTable("workflow_versions", RegisteredVersion, key=("workflow_id", "number"))

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS workflow_index (
                workflow_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                name text NOT NULL,
                current_version integer NOT NULL,
                version_count integer NOT NULL,
                created_by text NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                version integer NOT NULL
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS workflow_index_by_tenant_created "
            "ON workflow_index (tenant, created_at DESC, workflow_id DESC)"
        )
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS workflow_versions (
                workflow_id uuid NOT NULL,
                number integer NOT NULL,
                tenant text NOT NULL,
                name text NOT NULL,
                sha256 text NOT NULL,
                document jsonb NOT NULL,
                pushed_at timestamptz NOT NULL,
                actor text NOT NULL,
                PRIMARY KEY (workflow_id, number)
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, Wf.Event)]
        if not touched:
            return
        ids = list({r.session_id for r in touched})
        rows = {row.workflow_id: row for row in _select(conn, "workflow_id = ANY(%s)", [ids])}
        changed, pushed = fold(rows, touched)
        self.rows.upsert(conn, (rows[i] for i in changed))
        self.versions.upsert(conn, pushed)


def _select(conn: Connection[Any], where: str, params: list[Any]) -> list[IndexedWorkflow]:
    query = sql.SQL("SELECT {columns} FROM workflow_index WHERE {where}").format(
        columns=sql.SQL(WorkflowRegistryView.rows.names), where=sql.SQL(where)
    )
    with conn.cursor(row_factory=class_row(IndexedWorkflow)) as cursor:
        return cursor.execute(query, params).fetchall()


def find(conn: Connection[Any], workflow_id: UUID, tenant: str) -> IndexedWorkflow | None:
    """The tenant's workflow (None if it has no such one)."""
    rows = _select(conn, "workflow_id = %s AND tenant = %s", [workflow_id, tenant])
    return rows[0] if rows else None


def list_workflows(
    conn: Connection[Any],
    tenant: str,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> list[IndexedWorkflow]:
    """Newest first. Pass the last row's (created_at, workflow_id) as `after` for the next page."""
    where = "tenant = %s"
    params: list[Any] = [tenant]
    if after is not None:
        where += " AND (created_at, workflow_id) < (%s, %s)"
        params += list(after)
    return _select(
        conn, where + " ORDER BY created_at DESC, workflow_id DESC LIMIT %s", [*params, limit]
    )


def versions_of(conn: Connection[Any], workflow_id: UUID) -> list[RegisteredVersion]:
    """The workflow's versions, oldest first, their documents left out (empty)."""
    with conn.cursor(row_factory=class_row(RegisteredVersion)) as cursor:
        return cursor.execute(
            "SELECT workflow_id, number, tenant, name, sha256, '{}'::jsonb AS document, "
            "pushed_at, actor FROM workflow_versions WHERE workflow_id = %s ORDER BY number",
            (workflow_id,),
        ).fetchall()


def version_of(conn: Connection[Any], workflow_id: UUID, number: int) -> RegisteredVersion | None:
    """Version `number` of the workflow, its document included."""
    return WorkflowRegistryView.versions.get(conn, workflow_id, number)
