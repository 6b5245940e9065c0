"""The session a run drives, held in memory by its owner.

Under its lease a session has one writer, so the owner keeps the aggregate between decisions
instead of loading it for each: a decision applies at once in memory, and the events wait
until `commit`, which the task loop calls before anything leaves the process (a command's
side effect, a call to the model) and when it stops. A step is then about one commit: the
last command's result, the step's end, the next step's start and its first command, written
together, with the lease checked in the same transaction. Snapshots are taken from memory too.

If someone else wrote in between (a pause, a cancel), the commit conflicts: the session is
loaded again and the waiting decisions are made again on it, in order, up to the first it
refuses; what was accepted is written and the refusal is raised, as if each had been its own
command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from domain.errors import InvalidStateTransition, VersionConflict
from domain.session import WorkflowSession
from engine.store.app import MAX_CONFLICT_RETRIES, Stepline
from engine.store.event_store import Fence
from engine.store.snapshots import Snapshotter
from engine.store.writer import GroupWriter

T = TypeVar("T")
Decision = Callable[[WorkflowSession], object]


class HeldSession:
    def __init__(
        self,
        app: Stepline,
        writer: GroupWriter,
        snapshotter: Snapshotter,
        session_id: UUID,
        fence: Fence | None = None,
        *,
        saved: WorkflowSession | None = None,
    ) -> None:
        """`saved`: the session as the caller saved it a moment ago, to hold instead of
        loading it (held from then on: nobody else may use that object). Had someone written
        since, the first commit conflicts and loads it, as after any write by someone else."""
        self.app = app
        self.writer = writer
        self.snapshotter = snapshotter
        self.fence = fence
        self.session = saved if saved is not None else app.get_session(session_id)
        self._snapshot_version = self.session.version
        self._waiting: list[Decision] = []
        self._refused: InvalidStateTransition | None = None

    @property
    def id(self) -> UUID:
        return self.session.id

    def decide(self, decision: Callable[[WorkflowSession], T]) -> T:
        """Make a decision on the session now; its events are written at the next commit."""
        result = decision(self.session)
        self._waiting.append(decision)
        return result

    def commit(self, *, hand_back: bool = False) -> bool:
        """Write the waiting decisions' events (durable on return). Raises LeaseLost if the
        lease no longer holds, InvalidStateTransition if a change by someone else made a
        waiting decision impossible (its predecessors are written).

        `hand_back` (the run is over): release the lease with the write, settled as of the
        session's last event; whether it was. Only a first try does: after a change by
        someone else, the session may want driving again, and the caller releases the lease
        as it finds it."""
        tries = 0
        handed_back = False
        while self._waiting:
            if tries == MAX_CONFLICT_RETRIES:
                raise VersionConflict(
                    f"session {self.id} kept changing; gave up after {tries} tries",
                    session_id=str(self.id),
                )
            tries += 1
            events: list[WorkflowSession.Event] = self.session.collect_events()  # type: ignore[assignment]
            releasing = hand_back and tries == 1 and self.fence is not None
            try:
                self.writer.write(events, self.fence, hand_back=releasing)
            except RecordConflictError:
                self._decide_again()
                continue
            handed_back = releasing
            self._waiting = []
            self._snapshot_if_due()
        refused, self._refused = self._refused, None
        if refused is not None:
            raise refused
        return handed_back

    def _decide_again(self) -> None:
        """Read the session as the log has it and make the waiting decisions again on it."""
        waiting, self._waiting = self._waiting, []
        self.session = self.app.get_session(self.id)
        for decision in waiting:
            try:
                decision(self.session)
            except InvalidStateTransition as refused:
                self._refused = refused
                return
            self._waiting.append(decision)

    def _snapshot_if_due(self) -> None:
        """The session in memory is exactly the one just committed: snapshot it as it is,
        rather than rebuilding it from the log as the library would (see `Snapshotter`)."""
        if self.snapshotter.due(self._snapshot_version, self.session.version):
            self.snapshotter.take(self.session)
            self._snapshot_version = self.session.version
