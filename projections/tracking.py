"""Each view's position in the log and layout version, written in the view's own transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import Connection, sql

from projections.view import View

# One row per view (its table is made by the schema's migrations, engine.store.schema). Locking a
# view's row serialises every writer of that view, so two runners (two processes) never apply
# the same event twice.


def stored_layouts(conn: Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT view, layout_version FROM projection_tracking").fetchall()
    return dict(rows)


def reset(conn: Connection[Any], view: View) -> None:
    """Start the view again from the beginning of the log, at its current layout."""
    conn.execute(
        "INSERT INTO projection_tracking (view, position, layout_version) VALUES (%s, 0, %s) "
        "ON CONFLICT (view) DO UPDATE SET position = 0, layout_version = EXCLUDED.layout_version",
        (view.name, view.version),
    )


def drop_tables(conn: Connection[Any], view: View) -> None:
    for table in view.tables:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))


def truncate_tables(conn: Connection[Any], view: View) -> None:
    for table in view.tables:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))


def lock_positions(conn: Connection[Any], names: Sequence[str]) -> dict[str, int]:
    """The views' positions, locked until the transaction ends."""
    rows = conn.execute(
        "SELECT view, position FROM projection_tracking WHERE view = ANY(%s) "
        "ORDER BY view FOR UPDATE",
        (list(names),),
    ).fetchall()
    return dict(rows)


def positions(conn: Connection[Any]) -> dict[str, int]:
    return dict(conn.execute("SELECT view, position FROM projection_tracking").fetchall())


_ADVANCE_AND_NOTIFY = """
WITH advanced AS (
    UPDATE projection_tracking SET position = GREATEST(position, %(position)s)
    WHERE view = ANY(%(views)s)
)
SELECT pg_notify(%(channel)s, %(payload)s)
"""


def advance_and_notify(
    conn: Connection[Any], names: Iterable[str], position: int, channel: str, payload: str
) -> None:
    """Move the views' positions and NOTIFY `channel` with `payload`, in one statement (one
    per batch fewer); both take effect when the batch's transaction commits."""
    conn.execute(
        _ADVANCE_AND_NOTIFY,
        {"position": position, "views": list(names), "channel": channel, "payload": payload},
    )
