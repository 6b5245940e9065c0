"""What every read model shares: the recorded events it is fed and the row plumbing.

A view is fed batches of events in log order. It loads the rows those events touch, folds the
events into them in memory (pure functions, one per view) and upserts the changed rows — all
inside the caller's transaction, which also moves the view's tracking position. Replaying an
event that a view already holds changes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from uuid import UUID

from eventsourcing.persistence import Mapper
from psycopg import Connection, RawCursor, sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from domain.session import WorkflowSession


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event with its place in the log."""

    position: int
    event: WorkflowSession.Event
    """A session's event, or another aggregate's (a batch's) that session views skip."""
    session_id: UUID = field(init=False)
    at: datetime = field(init=False)

    def __post_init__(self) -> None:
        # Plain fields, not properties: views read them for every event of every batch.
        object.__setattr__(self, "session_id", self.event.originator_id)
        object.__setattr__(self, "at", self.event.timestamp)


class Batch(list[Recorded]):
    """Events of the log as the projector feeds them to every view: what several views ask
    of the whole batch (`erasures`) is worked out once, not once a view."""

    _erasures: list[Recorded] | None = None


def erasures(batch: Sequence[Recorded]) -> list[Recorded]:
    """The batch's `Erased` events: each purges its session down to a tombstone."""
    if isinstance(batch, Batch):
        if batch._erasures is None:
            batch._erasures = _erasures(batch)
        return list(batch._erasures)
    return _erasures(batch)


def _erasures(batch: Sequence[Recorded]) -> list[Recorded]:
    return [r for r in batch if isinstance(r.event, WorkflowSession.Erased)]


class View(Protocol):
    name: ClassVar[str]
    version: ClassVar[int]
    """The table layout's version: a change rebuilds the view from the log at start-up."""
    tables: ClassVar[tuple[str, ...]]

    def create(self, conn: Connection[Any]) -> None: ...

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        """Fold `batch` into the rows, in `conn`'s transaction; `log` reads a session's
        earlier events back, for a view that skipped them."""


class Row(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


R = TypeVar("R", bound=Row)


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL, nor jsonb an infinite number or NaN; an
    event carrying one (say, a command's output echoed into a summary) must not stop a view,
    so NUL is dropped on the way in, and such a number is null."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _element(value: Any) -> str | None:
    """An element of an array literal: text quoted (without NUL), a whole number or an id as
    it is; None for anything else."""
    if isinstance(value, str):
        text = value.replace("\x00", "") if "\x00" in value else value
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if type(value) is int or isinstance(value, UUID):  # not a bool, nor an enum's member
        return str(value)
    return None


def _array(values: list[Any]) -> Any:
    """A list of text, whole numbers or ids as PostgreSQL's array literal, which the column's
    type reads: psycopg works out a list's element type anew for each list it sends, in Python
    (the costliest column a view writes). Any other list goes as psycopg sends it."""
    elements = []
    for value in values:
        element = _element(value)
        if element is None:
            return _without_nul(values)
        elements.append(element)
    return "{" + ",".join(elements) + "}"


def _adapted(value: Any) -> Any:
    """A field as the table takes it: without NUL, a dict as JSON text and a list as an array
    literal, which the column's type reads (as `Jsonb` would send it, without its dumper's
    Python on the way). (Called for every field that may hold text, a dict or a list.)"""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return _json(value) if value else "{}"
    if isinstance(value, list):
        return _array(value)
    return value


def _json(value: dict[Any, Any]) -> str:
    """A dict as JSON text for a jsonb column. Nearly always it holds no NUL and no infinite
    number or NaN: encoded as it is, in C, and looked at once; only a dict that does hold one
    is walked in Python (`_without_nul`) first. (JSON writes NUL as the escape the check looks
    for; text that merely looks like the escape is walked too, and comes out the same.)"""
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # an infinite number or NaN
        return json.dumps(_without_nul(value))
    return json.dumps(_without_nul(value)) if "\\u0000" in text else text


PLAIN = frozenset(
    f"{kind}{none}"
    for kind in ("int", "bool", "float", "UUID", "datetime", "date")
    for none in ("", " | None")
)
"""Annotations of fields that go to the table as they are (`_adapted` leaves them alone)."""


def _adapted_columns(row_type: type[Any]) -> list[int]:
    """The columns that may hold text, a dict or a list: the only ones `_adapted` changes."""
    return [i for i, f in enumerate(fields(row_type)) if str(f.type) not in PLAIN]


FEW_ROWS = 200
"""Rows up to which an upsert is one INSERT ... VALUES (a row), (a row) ... ON CONFLICT (a live
batch: a few commits of a few sessions); more go by COPY into a staging table and one merge
statement (catch-up and rebuild), which costs three statements whatever the count. The one
statement costs less CPU up to 250 rows at least (the audit log's rows of a live batch of 75
events: 0.078 ms of CPU per 3-step session against 0.104 by COPY)."""


def rendered(query: sql.Composable) -> str:
    """The statement as plain text, once: psycopg renders a composed statement again (every
    identifier of it) on each execute, a cost the hot path of the views would pay per batch."""
    return query.as_string()


# ---- a session's earlier events, read back ------------------------------------------------
# A view that keeps state only for the few sessions that need it (`learned_actions`: those
# where the model took a turn) skips every other session's events as they go by; when one of
# them turns out to need state after all, the view reads that session's events before the one
# at hand from the log, on the batch's own connection, and folds them first. Reading by
# position makes the result the same live and in a rebuild. The projector gives every view
# the log it applies, decoded with its application's mapper (a session's events are sealed
# under the session's data key).

StoredRow = tuple[int, UUID, int, str, bytes]
"""A stored event as read from the log: its position, session, version, topic and state."""


class _Stored:
    """A stored event as the mapper reads it (its fields, nothing more): made for every event
    the views are fed, at a third of the cost of the library's frozen `Notification`."""

    __slots__ = ("id", "originator_id", "originator_version", "state", "topic")

    def __init__(self, position: int, session_id: UUID, version: int, topic: str, state: bytes):
        self.id = position
        self.originator_id = session_id
        self.originator_version = version
        self.topic = topic
        self.state = state


def decoded(mapper: Mapper[UUID], rows: Iterable[StoredRow]) -> list[Recorded]:
    """Stored events as the views are fed them, each decoded with `mapper` (a session's are
    sealed under its data key) and kept with its position.

    A session's events share one id object: the views look rows up by session, many times
    an event, and a dict finds an identical key without comparing it."""
    ids: dict[UUID, UUID] = {}
    to_domain_event = mapper.to_domain_event
    return [
        Recorded(
            position,
            to_domain_event(  # type: ignore[arg-type]
                _Stored(  # type: ignore[arg-type]
                    position, ids.setdefault(session_id, session_id), version, topic, bytes(state)
                )
            ),
        )
        for position, session_id, version, topic, state in rows
    ]


_EARLIER_EVENTS = """
SELECT notification_id, originator_id, originator_version, topic, state FROM {events}
WHERE originator_id = %s AND notification_id < %s ORDER BY notification_id
"""


class SessionLog:
    """The log of one database, read a session at a time."""

    def __init__(self, events_table: str, mapper: Mapper[UUID]) -> None:
        self._earlier = rendered(
            sql.SQL(_EARLIER_EVENTS).format(events=sql.Identifier(events_table))
        )
        self._mapper = mapper

    def before(self, conn: Connection[Any], session_id: UUID, position: int) -> list[Recorded]:
        """The session's events before `position`, in the log's order."""
        with conn.cursor(row_factory=tuple_row) as cursor:  # whatever the connection's default
            rows = cursor.execute(self._earlier, (session_id, position)).fetchall()
        return decoded(self._mapper, rows)


# ---- rows carried from one batch to the next ---------------------------------------------
# A session's events come in a few commits, so live, the projector's batches touch the same
# sessions two or three times running: a table that carries its rows (`RowTable(carried=True)`)
# keeps, from a batch its projector committed, the rows of the sessions that batch touched as
# they were written, and the next batch takes them from there instead of reading them back
# (a statement, and rows made again from what the database sends); a session the batch
# created has no row before it, so none is read for it either. They are good only while
# nothing else wrote the views: the next batch uses them only if it finds every view where the
# last one left it (its tracking rows locked), else it drops them. A batch that fails drops
# them (its views changed rows it did not write). A carried table's view must touch its rows
# only through `RowTable`, and where a session has several rows, change only those it writes.


class Carried:
    """The rows one projector's last committed batch left in the tables that carry theirs.

    Sessions are known here by their id's number: a dict hashes an int in C, a `UUID` in
    Python, and this keeps a few hundred rows a batch."""

    def __init__(self) -> None:
        self._kept: dict[RowTable[Any], dict[int, list[Any]]] = {}
        """By table, each session's rows, all of them (none: the session has no row)."""
        self._at: dict[str, int] | None = None
        """The views' positions when `_kept` was written; None: nothing kept is good."""
        self._loaded: dict[RowTable[Any], dict[int, list[Any]]] = {}
        self._written: dict[RowTable[Any], list[Any]] = {}
        self._dropped: dict[RowTable[Any], set[int]] = {}
        self._new: set[int] = set()
        """The sessions the batch at hand creates: none of them has a row yet."""
        self._tables: list[RowTable[Any]] = []
        """The carried tables of the views the batch at hand is applied to."""

    @contextmanager
    def applying(
        self, views: Sequence[View], positions: dict[str, int], batch: Sequence[Recorded]
    ) -> Iterator[None]:
        """While `batch` is applied to `views` from their `positions` (their tracking rows
        locked): the carried tables read the rows kept, if they are good from there, and know
        that a session created in the batch has no row yet."""
        if positions != self._at:
            self._kept = {}
        self._at = None
        names = {table for view in views for table in view.tables}
        self._tables = [table for table in CARRIED_TABLES if table.table in names]
        seen = max(positions.values())
        self._new = {
            r.session_id.int
            for r in batch
            if r.position > seen and isinstance(r.event, WorkflowSession.Created)
        }
        self._loaded, self._written, self._dropped = {}, {}, {}
        token = _CARRYING.set(self)
        try:
            yield
        except BaseException:
            self._kept = {}
            raise
        finally:
            _CARRYING.reset(token)

    def committed(self, positions: dict[str, int]) -> None:
        """The batch committed, leaving the views at `positions`: keep the rows of each session
        it read (see `RowTable.carried`)."""
        kept: dict[RowTable[Any], dict[int, list[Any]]] = {}
        for table in self._tables:
            loaded = self._loaded.get(table, {})
            written = self._written.get(table, [])
            if table.one_row_a_session:
                # As written, or none when it read none and wrote none; a row it read and did
                # not write is read again.
                rows = {row.session_id.int: [row] for row in written}
                for number, session_rows in loaded.items():
                    if not session_rows:
                        rows.setdefault(number, [])
            else:
                rows = self._merged(table, loaded, written)
            for number in self._new:  # none before the batch: what it wrote, if anything
                rows.setdefault(number, [])
            dropped = self._dropped.get(table)
            if dropped:
                rows = {number: each for number, each in rows.items() if number not in dropped}
            kept[table] = rows
        self._kept, self._at = kept, positions
        self._loaded, self._written, self._dropped = {}, {}, {}

    def _merged(
        self, table: RowTable[Any], loaded: dict[int, list[Any]], written: list[Any]
    ) -> dict[int, list[Any]]:
        """Each session's rows read, as they are now, with those written in their place (a
        session the batch created: those written)."""
        within = table.key_within_session
        by_key = {
            number: {within(row): row for row in session_rows}
            for number, session_rows in loaded.items()
        }
        for number in self._new:
            by_key.setdefault(number, {})
        for row in written:
            of_session = by_key.get(row.session_id.int)
            if of_session is not None:
                of_session[within(row)] = row
        return {number: list(each.values()) for number, each in by_key.items()}

    def load(self, table: RowTable[R], conn: Connection[Any], wanted: list[UUID]) -> list[R]:
        # A second look at a table within one batch finds what the batch has written since
        # the first: the table as it is now, read in the batch's transaction.
        second_look = table in self._loaded
        kept = {} if second_look else self._kept.get(table, {})
        new = set() if second_look else self._new
        loaded = self._loaded.setdefault(table, {})
        rows: list[R] = []
        missing = []
        for session_id in wanted:
            number = session_id.int
            session_rows = kept.get(number)
            if session_rows is None:
                if number not in new:
                    missing.append(session_id)
                loaded[number] = []
            else:
                rows.extend(session_rows)
                loaded[number] = list(session_rows)
        if missing:
            read = table.read_sessions(conn, missing)
            for row in read:
                loaded[row.session_id.int].append(row)  # type: ignore[attr-defined]
            rows.extend(read)
        return rows

    def wrote(self, table: RowTable[Any], rows: list[Any]) -> None:
        self._written.setdefault(table, []).extend(rows)

    def deleted(self, table: RowTable[Any], session_ids: list[UUID]) -> None:
        self._dropped.setdefault(table, set()).update(i.int for i in session_ids)


CARRIED_TABLES: list[RowTable[Any]] = []
"""Every table that carries its rows (`RowTable(carried=True)`)."""
_CARRYING: ContextVar[Carried | None] = ContextVar("carrying", default=None)
"""The projector's rows carried over, while it applies a batch (in its thread)."""


class RowTable(Generic[R]):
    """A table whose rows are instances of a dataclass, keyed by some of its fields."""

    def __init__(
        self, table: str, row_type: type[R], key: tuple[str, ...], carried: bool = False
    ) -> None:
        self.table = table
        self.row_type = row_type
        self.key = key
        self.carried = carried
        """Whether a projector carries its rows from a batch to the next (see `Carried`): the
        rows of a session as its last batch wrote them, or none if it read and wrote none.
        Where a session has several rows, those it read and did not write are carried as
        they are then: its view must change only rows it writes."""
        self.one_row_a_session = key == ("session_id",)
        if carried:
            CARRIED_TABLES.append(self)
        self.key_within_session = attrgetter(*[k for k in key if k != "session_id"] or key)
        """A row's key among its session's rows (for `Carried`)."""
        self.columns = [f.name for f in fields(row_type)]
        self._fields_of = attrgetter(*self.columns)
        self._adapting = _adapted_columns(row_type)
        names = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        self.names = rendered(names)
        """The columns, quoted, in the dataclass's order: what a view's own SELECT lists."""
        parts = {
            "table": sql.Identifier(table),
            "names": names,
            "staging": sql.Identifier(f"staging_{table}"),
            "replace": sql.SQL("ON CONFLICT ({key}) DO UPDATE SET {updates}").format(
                key=sql.SQL(", ").join(map(sql.Identifier, key)),
                updates=sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                    for c in self.columns
                    if c not in key
                ),
            ),
            "by_key": sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key
            ),
        }

        def statement(text: str) -> str:
            return rendered(sql.SQL(text).format(**parts))

        self._insert_into = statement("INSERT INTO {table} ({names}) VALUES")
        self._replace = statement("{replace}")
        self._inserts: dict[int, str] = {}
        """INSERT statements by their number of rows, made when first used."""
        self._create_staging = statement(
            "CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        self._copy = statement("COPY {staging} ({names}) FROM STDIN")
        self._merge = statement(
            "WITH staged AS (DELETE FROM {staging} RETURNING *) "
            "INSERT INTO {table} ({names}) SELECT {names} FROM staged {replace}"
        )
        self._select_by_key = statement("SELECT {names} FROM {table} WHERE {by_key}")
        self._select_by_session = statement(
            "SELECT {names} FROM {table} WHERE session_id = ANY(%s)"
        )
        self._delete_sessions = statement("DELETE FROM {table} WHERE session_id = ANY(%s)")
        self._session_column = (
            self.columns.index("session_id") if "session_id" in self.columns else None
        )
        """Where a row holds its session's id, for `load_for_sessions`."""

    def _insert(self, rows: int) -> str:
        """INSERT INTO the table VALUES `rows` rows ON CONFLICT DO UPDATE: one statement, its
        parameters numbered ($1, $2 ...) for a `RawCursor`."""
        statement = self._inserts.get(rows)
        if statement is None:
            width = len(self.columns)
            values = ", ".join(
                "(" + ", ".join(f"${row * width + column}" for column in range(1, width + 1)) + ")"
                for row in range(rows)
            )
            statement = self._inserts[rows] = " ".join([self._insert_into, values, self._replace])
        return statement

    def _values(self, row: R) -> list[Any]:
        """The row's fields as the table takes them (numbers, ids and times as they are).
        Plain text without NUL and None, the most of what may need adapting, are let be
        here: a call of `_adapted` for each would cost the most of a row's writing."""
        values = list(self._fields_of(row))
        for column in self._adapting:
            value = values[column]
            if value is None or (value.__class__ is str and "\x00" not in value):
                continue
            values[column] = _adapted(value)
        return values

    def _rows(self, conn: Connection[Any], query: str, params: Sequence[Any]) -> list[R]:
        """The rows the query selects, its columns the dataclass's fields in their order (made
        from a tuple each: psycopg's `class_row` makes a dict of each row first)."""
        with conn.cursor(row_factory=tuple_row) as cursor:
            return [self.row_type(*values) for values in cursor.execute(query, params)]

    def get(self, conn: Connection[Any], *key: Any) -> R | None:
        """The row with this key, if any."""
        rows = self._rows(conn, self._select_by_key, key)
        return rows[0] if rows else None

    def delete_sessions(self, conn: Connection[Any], session_ids: Iterable[UUID]) -> None:
        """Delete every row of these sessions (erased); no statement when there are none."""
        erased = list(session_ids)
        if erased:
            conn.execute(self._delete_sessions, (erased,))
            carrying = _CARRYING.get() if self.carried else None
            if carrying is not None:
                carrying.deleted(self, erased)

    def load_for_sessions(self, conn: Connection[Any], session_ids: Iterable[UUID]) -> list[R]:
        """The rows of these sessions; no statement when there are none (nor, in a projector's
        batch, for sessions whose rows it carried over from its last batch)."""
        wanted = list(session_ids)
        if not wanted:
            return []
        carrying = _CARRYING.get() if self.carried else None
        if carrying is not None:
            return carrying.load(self, conn, wanted)
        return self.read_sessions(conn, wanted)

    def read_sessions(self, conn: Connection[Any], wanted: list[UUID]) -> list[R]:
        """The rows of these sessions, read from the table. A row holds the very id object it
        was asked for (a batch's, which its events share): a view looking its rows up by
        session finds it without comparing ids."""
        column = self._session_column
        if column is None:
            return self._rows(conn, self._select_by_session, (wanted,))
        given = {session_id: session_id for session_id in wanted}
        with conn.cursor(row_factory=tuple_row) as cursor:
            loaded = cursor.execute(self._select_by_session, (wanted,)).fetchall()
        made: Any = self.row_type  # a dataclass: made from its fields in their order
        return [
            made(*values[:column], given.get(values[column], values[column]), *values[column + 1 :])
            for values in loaded
        ]

    def upsert(self, conn: Connection[Any], rows: Iterable[R]) -> None:
        """Insert or replace the rows: up to `FEW_ROWS` by one INSERT ... ON CONFLICT, more
        by COPY into a staging table and one merge statement; none, no statement.

        Must run inside the caller's transaction, which also moves the view's position."""
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            raise RuntimeError("views are written inside the transaction that tracks them")
        written = list(rows)
        if not written:
            return
        carrying = _CARRYING.get() if self.carried else None
        if carrying is not None:
            carrying.wrote(self, written)
        values = [self._values(row) for row in written]
        if len(values) <= FEW_ROWS:
            # psycopg parses a query with %s placeholders again on every execute past 50
            # parameters; one with $n placeholders it sends as it is.
            with RawCursor(conn) as raw:
                raw.execute(self._insert(len(values)), [v for row in values for v in row])
            return
        with conn.cursor() as cursor:
            cursor.execute(self._create_staging)
            with cursor.copy(self._copy) as copy:
                for row_values in values:
                    copy.write_row(row_values)
            cursor.execute(self._merge)
