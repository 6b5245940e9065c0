"""One projector per deployment: the process holding an advisory lock catches the views up.

Every process with background duties (`serve`, `worker`, `run`) is a candidate. Every `poll_s`
it tries the session-level lock `locks.PROJECTOR` on a connection from its pool; the one that
gets it keeps that connection for as long as it leads. There it LISTENs to the event store and,
on every notification (and every `idle_check_s`), catches the views up in that connection's
transactions; each batch NOTIFYs the position applied (`engine.live.projector.VIEWS_CHANNEL`), which
is how the other processes learn it. When the leader dies its connection closes, PostgreSQL
releases the lock, and another candidate takes the lead at its next attempt: within about
`poll_s`. Exactly-once application does not depend on there being one leader (the views'
tracking rows are locked by whoever applies), only the cost does.

A process that serves the API without driving sessions (`serve --workers 0`) stands in
reserve: it tries the lock only once nobody has held it for `RESERVE_POLLS` polls in a row, and
hands it back when a worker has registered since it took it (one that was slow to start), so
where workers run one of them leads, and the interpreter that serves the live streams does
not also fold every event into the views. With no worker up, the API process leads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from engine.logs import LOGGER_NAME
from engine.store import locks

log = logging.getLogger(LOGGER_NAME)

_HOLDING_THE_LOCK = """
SELECT EXISTS (
    SELECT FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND classid = %(high)s AND objid = %(low)s
      AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      {backend})
"""
_RECORD = """
INSERT INTO projection_leader (holder, backend_pid, since)
VALUES (%s, pg_backend_pid(), now())
ON CONFLICT (singleton) DO UPDATE
SET holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, since = EXCLUDED.since
RETURNING since
"""
_LOCK_KEY = {"high": locks.PROJECTOR >> 32, "low": locks.PROJECTOR & 0xFFFFFFFF}
RESERVE_POLLS = 3
"""Polls a reserve candidate sees with no leader before it tries the lock itself."""
GATHER_S = 0.2
"""The least time between the starts of two catch-ups: under load, the commits of that time
are applied in one batch, whose fixed cost (its transaction, each view's load and upsert)
they share; with commits further apart, a catch-up starts as soon as one is notified. A read
that waits for the views (`want_views`) ends the gathering at once: nobody waits for it."""
WANTED_CHANNEL = "stepline_views_wanted"
"""NOTIFY channel: a read waits for the views (read-your-writes); the leader catches up now."""
_WANT_VIEWS = f"NOTIFY {WANTED_CHANNEL}"


@dataclass(frozen=True)
class Leader:
    holder: str
    """host:pid:role of the leading process."""
    since: datetime


def process_identity(role: str) -> str:
    """host:pid:role, as a leader is named in `projections status` and /health."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def someone_leads(conn: Connection[Any]) -> bool:
    """Whether any process holds the projector's lock now."""
    row = conn.execute(sql.SQL(_HOLDING_THE_LOCK).format(backend=sql.SQL("")), _LOCK_KEY)
    found = row.fetchone()
    return bool(found and found[0])


def current_leader(conn: Connection[Any]) -> Leader | None:
    """The process leading now: the one named in `projection_leader`, if its backend still
    holds the lock (the row outlives a dead leader until the next one takes over)."""
    backend = sql.SQL("AND pid = l.backend_pid")
    holding = sql.SQL(_HOLDING_THE_LOCK).format(backend=backend)
    query = sql.SQL("SELECT l.holder, l.since FROM projection_leader l WHERE ({})").format(holding)
    row = conn.execute(query, _LOCK_KEY).fetchone()
    return None if row is None else Leader(row[0], row[1])


class CatchUp(Protocol):
    """What the leader drives: the projector's catch-up, on the lock's own connection."""

    pool: ConnectionPool

    def catch_up(self, *, conn: Connection[Any] | None = None) -> int: ...


class Leadership:
    """This process's candidacy: it leads while it holds the lock, and tries again every
    `poll_s` while another process does."""

    def __init__(
        self,
        projector: CatchUp,
        identity: str,
        events_channel: str,
        *,
        poll_s: float = 1.0,
        idle_check_s: float = 1.0,
        gather_s: float = GATHER_S,
        reserve: bool = False,
    ) -> None:
        self.projector = projector
        self.identity = identity
        self.events_channel = events_channel
        self.poll_s = poll_s
        self.idle_check_s = idle_check_s
        self.gather_s = gather_s
        self.reserve = reserve
        self._leaderless_polls = 0
        self._leading = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Callable[[], None]:
        """Stand for the lead in a thread of its own; returns the function that stops it (and
        hands the lead over, if held)."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name="projector", daemon=True)
        thread.start()
        self._thread = thread

        def stop_standing() -> None:
            stop.set()
            thread.join(timeout=30)

        return stop_standing

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.stand_once(stop)
            except (psycopg.Error, PersistenceError):
                log.warning("The projector lost its database connection; standing again")
            finally:
                self._leading.clear()
            stop.wait(self.poll_s)

    def stand_once(self, stop: threading.Event) -> bool:
        """Try the lock once (in reserve, only after `RESERVE_POLLS` polls without a leader)
        and lead until `stop` if it is ours; whether it was."""
        pool = self.projector.pool
        conn = pool.getconn()
        try:
            if self.reserve and not self._long_leaderless(conn):
                return False
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (locks.PROJECTOR,)).fetchone()
            if not (row and row[0]):
                return False
            self._leaderless_polls = 0  # after handing over, wait again before taking it back
            try:
                self._lead(conn, stop)
            finally:
                _step_down(conn)
            return True
        finally:
            pool.putconn(conn)

    def _long_leaderless(self, conn: Connection[Any]) -> bool:
        self._leaderless_polls = 0 if someone_leads(conn) else self._leaderless_polls + 1
        return self._leaderless_polls >= RESERVE_POLLS

    def _lead(self, conn: Connection[Any], stop: threading.Event) -> None:
        recorded = conn.execute(_RECORD, (self.identity,)).fetchone()
        since = recorded[0] if recorded else datetime.now(UTC)
        listen, unlisten = (
            sql.SQL(command).format(sql.Identifier(self.events_channel)).as_string()
            for command in ("LISTEN {}", "UNLISTEN {}")
        )
        conn.execute(listen)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(WANTED_CHANNEL)))
        self._leading.set()
        log.info("This process (%s) now projects the views for the deployment", self.identity)
        look_at = time.monotonic() + self.poll_s * RESERVE_POLLS
        while not stop.is_set():
            started = time.monotonic()
            self.projector.catch_up(conn=conn)
            # Whatever arrived during the catch-up is yielded at once, in one batch.
            wanted = _notified(conn, self.idle_check_s)
            if not (wanted or stop.is_set()) and started + self.gather_s > time.monotonic():
                self._gather(conn, stop, started + self.gather_s, listen, unlisten)
            if self.reserve and time.monotonic() >= look_at:
                if _worker_started_since(conn, since):
                    log.info("A worker is up: %s hands the views' lead to it", self.identity)
                    return
                look_at = time.monotonic() + self.poll_s * RESERVE_POLLS

    def _gather(
        self, conn: Connection[Any], stop: threading.Event, until: float, listen: str, unlisten: str
    ) -> None:
        """Let commits gather until `until`, or a read asks for the views. New events are not
        listened to meanwhile: under load, each commit's notification would wake this thread
        for nothing, and the catch-up that follows reads them all anyway. They are listened to
        again before it reads the log, so none committed after it read is missed."""
        conn.execute(unlisten)
        try:
            wanted = False
            while not (wanted or stop.is_set()):
                left = until - time.monotonic()
                if left <= 0:
                    break
                wanted = _notified(conn, left)
        finally:
            conn.execute(listen)


def _notified(conn: Connection[Any], timeout: float) -> bool:
    """Wait up to `timeout` for a notification; whether a reader asked for the views
    (`WANTED_CHANNEL`), which ends the gathering at once."""
    return any(
        notification.channel == WANTED_CHANNEL
        for notification in conn.notifies(timeout=timeout, stop_after=1)
    )


def want_views(conn: Connection[Any]) -> None:
    """Ask the leader to catch the views up now rather than at the end of its gathering: a
    read is waiting for them."""
    conn.execute(_WANT_VIEWS)


def _worker_started_since(conn: Connection[Any], since: datetime) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM stepline_workers WHERE started_at > %s)", (since,)
    ).fetchone()
    return bool(row and row[0])


def _step_down(conn: Connection[Any]) -> None:
    """Give the lock back and stop listening, so the pool gets a plain connection (a broken
    one the pool discards, and PostgreSQL has released the lock with it)."""
    if conn.closed or conn.broken:
        return
    conn.execute("UNLISTEN *")
    conn.execute("SELECT pg_advisory_unlock(%s)", (locks.PROJECTOR,))
