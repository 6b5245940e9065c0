"""Snapshots of the sessions a process drives, spaced by size and written off the write path.

A snapshot holds the whole session, so its cost grows with the session; taken every 100
events it made every event of a long session dearer. Here the gap between snapshots grows
with the session (a twentieth of its events, at least `every`), which keeps the cost per
event flat, and loading still replays at most that gap. The owner encodes the snapshot of the
session it holds (exactly what it has just committed, nothing to rebuild) and a thread of the
snapshotter's own writes it: a snapshot is only a shortcut for loading, so one lost in a crash
costs nothing but time.
"""

from __future__ import annotations

import logging
import queue
import threading

from eventsourcing.persistence import PersistenceError, StoredEvent

from domain.session import WorkflowSession
from engine.logs import LOGGER_NAME, on_session
from engine.store.app import Stepline

log = logging.getLogger(LOGGER_NAME)

GROWTH = 20
"""The gap between snapshots is at least 1/GROWTH of the session's events."""


class Snapshotter:
    def __init__(self, app: Stepline) -> None:
        self.app = app
        self.every = app.snapshot_interval
        self._queue: queue.Queue[StoredEvent | threading.Event] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def due(self, last_version: int, version: int) -> bool:
        """Whether a session snapshotted (or loaded) at `last_version` wants one at `version`."""
        return version - last_version >= max(self.every, version // GROWTH)

    def take(self, session: WorkflowSession) -> None:
        """Encode the session now (the caller holds it, nothing changes it meanwhile) and
        write it in the background."""
        snapshot = WorkflowSession.Snapshot.take(session)
        self._queue.put(self.app.mapper.to_stored_event(snapshot))
        self._start()

    def wait_until_written(self, timeout: float = 10.0) -> None:
        """Block until every snapshot taken so far is written (for tests and shutdown)."""
        written = threading.Event()
        self._queue.put(written)
        self._start()
        written.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._write, name="snapshots", daemon=True)
                self._thread.start()

    def _write(self) -> None:
        while True:
            stored = self._queue.get()
            if isinstance(stored, threading.Event):
                stored.set()  # everything queued before it is written
                continue
            try:
                self.app.snapshots.recorder.insert_events([stored])  # type: ignore[union-attr]
            except PersistenceError:
                log.warning(
                    "Could not write a snapshot; loading replays more events until the next",
                    extra=on_session(stored.originator_id),
                )
