"""Group commit: the sessions a process drives write their new events together.

A caller with events to write joins a queue. If no write is in progress it leads: it takes
every batch waiting and writes them in one transaction (one table lock, one NOTIFY), then
wakes the others. Meanwhile the next callers queue up behind it, so under load each commit
carries the events of many sessions, and with one session a write costs what it always did.
Every caller returns only once its own events are durable, or with its own error: when a
group fails, its batches are written one by one, so one session's conflict or lost lease is
never another's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import PersistenceError, RecordConflictError

from domain.session import WorkflowSession
from engine.store.app import Stepline
from engine.store.event_store import Fence, LeaseLost, lease_lost


@dataclass
class _Batch:
    events: Sequence[WorkflowSession.Event]
    fence: Fence | None
    hand_back: bool = False
    done: bool = False
    error: Exception | None = field(default=None)


class GroupWriter:
    """Writes sessions' events, many sessions to a transaction when several are waiting."""

    def __init__(self, app: Stepline, max_events: int = 1_000) -> None:
        self.app = app
        self.max_events = max_events
        self._lock = threading.Condition()
        self._waiting: list[_Batch] = []
        self._writing = False
        self.commits = 0
        self.batches = 0

    @property
    def queued(self) -> int:
        """Batches waiting for the write in progress to finish."""
        with self._lock:
            return len(self._waiting)

    def write(
        self,
        events: Sequence[WorkflowSession.Event],
        fence: Fence | None = None,
        *,
        hand_back: bool = False,
    ) -> None:
        """Return once `events` are durable. Raises RecordConflictError if another writer
        saved the session first, LeaseLost if `fence` no longer holds; nothing is written.
        `hand_back`: the lease of `fence` is released with the write, settled as of the last
        of `events` (see `FencedRecorder`)."""
        if not events:
            return
        batch = _Batch(events, fence, hand_back)
        with self._lock:
            self._waiting.append(batch)
        while True:
            with self._lock:
                while not batch.done and self._writing:
                    self._lock.wait()
                if batch.done:
                    break
                self._writing = True  # lead: write what is waiting, this batch among it
                group = self._take_group()
            try:
                self._write_group(group)
            finally:
                with self._lock:
                    self._writing = False
                    self._lock.notify_all()
        if batch.error is not None:
            raise batch.error

    def _take_group(self) -> list[_Batch]:
        group: list[_Batch] = []
        size = 0
        while self._waiting and (
            not group or size + len(self._waiting[0].events) <= self.max_events
        ):
            taken = self._waiting.pop(0)
            group.append(taken)
            size += len(taken.events)
        return group

    def _write_group(self, group: list[_Batch]) -> None:
        try:
            self._put(group)
        except (RecordConflictError, LeaseLost, PersistenceError) as error:
            if len(group) == 1:
                group[0].error = error
            else:
                for batch in group:  # find whose it was
                    try:
                        self._put([batch])
                    except (RecordConflictError, LeaseLost, PersistenceError) as own:
                        batch.error = own
        except BaseException as error:
            for batch in group:
                batch.error = error if isinstance(error, Exception) else RuntimeError(error)
            raise
        finally:
            for batch in group:
                batch.done = True

    def _put(self, group: list[_Batch]) -> None:
        # Straight to the recorder: the event store's `put` would also wrap each event in
        # a recording of it, which nobody here reads.
        to_stored = self.app.mapper.to_stored_event
        stored = [to_stored(event) for batch in group for event in batch.events]
        fences = [batch.fence for batch in group if batch.fence is not None]
        releases = [
            (batch.fence, batch.events[-1].originator_version)
            for batch in group
            if batch.hand_back and batch.fence is not None
        ]
        try:
            self.app.recorder.insert_events(stored, fences=fences, releases=releases)
        except RecordConflictError:  # (a PersistenceError too: let it through as it is)
            raise
        except PersistenceError as error:
            if lease_lost(error):
                raise LeaseLost(str(error).splitlines()[0]) from None
            raise
        self.commits += 1
        self.batches += len(group)
