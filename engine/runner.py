"""The in-process runner: a pool of threads, each driving one session through the task loop.

At most `max_sessions` sessions run at once; more wait their turn. `resume_runnable` picks up
every session that is neither paused nor ended — after a crash or restart, that is how work
carries on from the events. `expire_overdue` ends sessions older than the session TTL.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.errors import InvalidStateTransition
from domain.session import SessionStatus
from engine.logs import LOGGER_NAME, on_session
from engine.projector import Projector
from engine.task_loop import TaskLoop
from projections.session_index import overdue_sessions, runnable_sessions

log = logging.getLogger(LOGGER_NAME)


class SessionRunner:
    def __init__(self, loop: TaskLoop, max_sessions: int) -> None:
        self.loop = loop
        self._threads = ThreadPoolExecutor(max_workers=max_sessions, thread_name_prefix="session")
        self._active: dict[UUID, Future[SessionStatus]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def alive(self) -> bool:
        """Whether the runner still takes sessions (it has not been stopped)."""
        return not self._stopping.is_set()

    def submit(self, session_id: UUID) -> Future[SessionStatus] | None:
        """Drive the session unless it is already being driven here. None once stopping:
        the session stays runnable and the next runner picks it up."""
        if self._stopping.is_set():
            return None
        with self._lock:
            running = self._active.get(session_id)
            if running is not None and not running.done():
                return running
            future = self._threads.submit(self._drive, session_id)
            self._active[session_id] = future
            return future

    def _drive(self, session_id: UUID) -> SessionStatus:
        try:
            return self.loop.drive(session_id, self._stopping)
        except Exception:
            log.exception("The task loop stopped on an error", extra=on_session(session_id))
            raise

    def resume_runnable(self, projector: Projector) -> list[UUID]:
        """Submit every session that is pending or running according to the log."""
        projector.catch_up(["session_index"])
        with projector.pool.connection() as conn:
            session_ids = runnable_sessions(conn)
        for session_id in session_ids:
            self.submit(session_id)
        if session_ids:
            log.info("Resuming %d sessions", len(session_ids))
        return session_ids

    def expire_overdue(self, projector: Projector, ttl_ms: int) -> list[UUID]:
        """Expire every session that has outlived its TTL without ending; returns them."""
        projector.catch_up(["session_index"])
        cutoff = datetime.now(UTC) - timedelta(milliseconds=ttl_ms)
        with projector.pool.connection() as conn:
            overdue = overdue_sessions(conn, cutoff)
        expired = []
        for session_id in overdue:
            try:
                self.loop.app.expire(session_id)
            except InvalidStateTransition:
                continue  # it ended meanwhile
            expired.append(session_id)
        return expired

    def start_expiring(self, projector: Projector, ttl_ms: int, every_s: float = 30.0) -> None:
        """Check for overdue sessions every `every_s` seconds until the runner stops."""

        def sweep() -> None:
            while not self._stopping.wait(every_s):
                try:
                    self.expire_overdue(projector, ttl_ms)
                except Exception:
                    log.exception("Could not expire overdue sessions; trying again later")

        threading.Thread(target=sweep, name="expiry", daemon=True).start()

    def stop(self, wait: bool = True) -> None:
        """Stop at the next safe point of every session; queued sessions do not start."""
        self._stopping.set()
        self._threads.shutdown(wait=wait, cancel_futures=True)
