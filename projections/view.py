"""What every read model shares: the recorded events it is fed and the row plumbing.

A view is fed batches of events in log order. It loads the rows those events touch, folds the
events into them in memory (pure functions, one per view) and upserts the changed rows — all
inside the caller's transaction, which also moves the view's tracking position. Replaying an
event that a view already holds changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from domain.session import WorkflowSession


@dataclass(frozen=True)
class Recorded:
    """An event with its place in the log."""

    position: int
    event: WorkflowSession.Event

    @property
    def session_id(self) -> UUID:
        return self.event.originator_id

    @property
    def at(self) -> datetime:
        return self.event.timestamp

    @property
    def type_name(self) -> str:
        return type(self.event).__name__


class View(Protocol):
    name: ClassVar[str]
    version: ClassVar[int]
    """The table layout's version: a change rebuilds the view from the log at start-up."""
    tables: ClassVar[tuple[str, ...]]

    def create(self, conn: Connection[Any]) -> None: ...

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded]) -> None: ...


class Row(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


R = TypeVar("R", bound=Row)


def _adapted(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value


class RowTable(Generic[R]):
    """A table whose rows are instances of a dataclass, keyed by some of its fields."""

    def __init__(self, table: str, row_type: type[R], key: tuple[str, ...]) -> None:
        self.table = table
        self.row_type = row_type
        self.key = key
        self.columns = [f.name for f in fields(row_type)]
        names = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in self.columns
            if c not in key
        )
        self._upsert = sql.SQL(
            "INSERT INTO {table} ({names}) VALUES ({values}) "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}"
        ).format(
            table=sql.Identifier(table),
            names=names,
            values=sql.SQL(", ").join(sql.Placeholder() * len(self.columns)),
            key=sql.SQL(", ").join(map(sql.Identifier, key)),
            updates=updates,
        )
        self._select_by_session = sql.SQL(
            "SELECT {names} FROM {table} WHERE session_id = ANY(%s)"
        ).format(names=names, table=sql.Identifier(table))

    def get(self, conn: Connection[Any], *key: Any) -> R | None:
        """The row with this key, if any."""
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in self.key
        )
        query = sql.SQL("SELECT {names} FROM {table} WHERE {where}").format(
            names=sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            table=sql.Identifier(self.table),
            where=where,
        )
        with conn.cursor(row_factory=class_row(self.row_type)) as cursor:
            return cursor.execute(query, key).fetchone()

    def load_for_sessions(self, conn: Connection[Any], session_ids: Iterable[UUID]) -> list[R]:
        with conn.cursor(row_factory=class_row(self.row_type)) as cursor:
            return cursor.execute(self._select_by_session, (list(session_ids),)).fetchall()

    def upsert(self, conn: Connection[Any], rows: Iterable[R]) -> None:
        params = [tuple(_adapted(getattr(row, c)) for c in self.columns) for row in rows]
        if params:
            with conn.cursor() as cursor:
                cursor.executemany(self._upsert, params)
