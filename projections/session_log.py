"""A session's earlier events, read back from the log by a view that skipped them.

A view that keeps state only for the few sessions that need it (`learned_actions`: those where
the model took a turn) skips every other session's events as they go by; when one of them turns
out to need state after all, the view reads that session's events before the one at hand from
the log, on the batch's own connection, and folds them first. Reading by position makes the
result the same live and in a rebuild.

The log is decoded with the mapper of the application over the view's database (its events are
sealed under the session's data key): an application registers its log when it is built
(`register_log`), and a view finds it from the connection it is given (`log_of`). One
application per process and database; another built over the same database decodes the same
log alike.
"""

from __future__ import annotations

import weakref
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification
from psycopg import Connection, sql

from projections.view import Recorded, rendered

_EARLIER_EVENTS = """
SELECT notification_id, originator_version, topic, state FROM {events}
WHERE originator_id = %s AND notification_id < %s ORDER BY notification_id
"""


class SessionLog:
    """The log of one database, read a session at a time."""

    def __init__(self, events_table: str, mapper: Mapper[UUID]) -> None:
        self._earlier = rendered(
            sql.SQL(_EARLIER_EVENTS).format(events=sql.Identifier(events_table))
        )
        self._mapper = weakref.ref(mapper)
        """Weak: the registry must not keep a closed application's keys alive."""

    def before(self, conn: Connection[Any], session_id: UUID, position: int) -> list[Recorded]:
        """The session's events before `position`, in the log's order."""
        mapper = self._mapper()
        if mapper is None:
            raise LookupError("the application whose log this is was closed")
        rows = conn.execute(self._earlier, (session_id, position)).fetchall()
        return [
            Recorded(
                notification_id,
                mapper.to_domain_event(  # type: ignore[arg-type]
                    Notification(
                        id=notification_id,
                        originator_id=session_id,
                        originator_version=version,
                        topic=topic,
                        state=state,
                    )
                ),
            )
            for notification_id, version, topic, state in rows
        ]


_LOGS: dict[str, SessionLog] = {}
"""By database name: the log of the application last built over it."""


def register_log(database: str, events_table: str, mapper: Mapper[UUID]) -> None:
    """Make the log of the application over `database` readable by the views."""
    _LOGS[database] = SessionLog(events_table, mapper)


def log_of(conn: Connection[Any]) -> SessionLog:
    """The log of the database `conn` is on; the only one registered if none is by its name
    (a process has one application, whose settings may name its database otherwise than the
    server does: by default, or by an alias)."""
    log = _LOGS.get(conn.info.dbname)
    if log is None and len(_LOGS) == 1:
        [log] = _LOGS.values()
    if log is None:
        raise LookupError(f"no application registered the log of database {conn.info.dbname}")
    return log
