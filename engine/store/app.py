"""The Stepline application: command methods over WorkflowSession aggregates in the event store.

Every command loads the session, asks the aggregate to decide, and saves the new events. If
another writer saved first (the database refuses a duplicate `(originator_id, version)`), the
command reloads and decides again against the new state: it never overwrites.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    RecordConflictError,
    StoredEvent,
    Transcoding,
)
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import Identifier

from domain.batch import Batch
from domain.errors import (
    BatchNotFound,
    InvalidStateTransition,
    ScheduleNotFound,
    SessionNotFound,
    StandardError,
    VersionConflict,
)
from domain.payloads import CompletedStep, ForkedFrom, ReplayOf
from domain.schedule import Schedule, Timing
from domain.session import WORKER, SessionStatus, StepSpec, StepState, StepStatus, WorkflowSession
from domain.step_policy import StepPolicy
from domain.waits import Wait
from engine.logs import LOGGER_NAME, on_session
from engine.privacy.data_keys import DataKeys
from engine.privacy.sealing import SealingMapper
from engine.store.event_store import (
    RECORDER_TOPIC,
    Admission,
    FencedRecorder,
    announcement,
    render_statements,
)
from engine.tenancy.secret_store import MasterKey

log = logging.getLogger(LOGGER_NAME)

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)
MAX_CONFLICT_RETRIES = 20


class _SessionStatusAsValue(Transcoding):
    type = SessionStatus
    name = "session_status"

    def encode(self, obj: SessionStatus) -> str:
        return obj.value

    def decode(self, data: str) -> SessionStatus:
        return SessionStatus(data)


class _StepStatusAsValue(Transcoding):
    type = StepStatus
    name = "step_status"

    def encode(self, obj: StepStatus) -> str:
        return obj.value

    def decode(self, data: str) -> StepStatus:
        return StepStatus(data)


class _StepStateAsDict(Transcoding):
    type = StepState
    name = "step_state"

    def encode(self, obj: StepState) -> dict[str, Any]:
        return dict(vars(obj))

    def decode(self, data: dict[str, Any]) -> StepState:
        return StepState(**data)


class _StepPolicyAsDict(Transcoding):
    type = StepPolicy
    name = "step_policy"

    def encode(self, obj: StepPolicy) -> dict[str, Any]:
        return obj.to_dict()

    def decode(self, data: dict[str, Any]) -> StepPolicy:
        return StepPolicy.from_dict(data)


class _TimingAsDict(Transcoding):
    type = Timing
    name = "schedule_timing"

    def encode(self, obj: Timing) -> dict[str, Any]:
        return obj.to_dict()

    def decode(self, data: dict[str, Any]) -> Timing:
        return Timing(**data)


class _WaitAsDict(Transcoding):
    type = Wait
    name = "wait"

    def encode(self, obj: Wait) -> dict[str, Any]:
        return obj.to_dict()

    def decode(self, data: dict[str, Any]) -> Wait:
        return Wait.from_dict(data)


def replay(
    session: WorkflowSession | None, events: Iterable[WorkflowSession.Event]
) -> WorkflowSession | None:
    """Apply events in order. The library's default projector asserts a runtime Protocol per
    event, which on Python 3.11 costs more than the rest of a load put together."""
    for recorded in events:
        session = recorded.mutate(session)
    return session


@dataclass(frozen=True)
class SessionRequest:
    """Everything needed to create a session, validated when the session is built."""

    name: str
    steps: list[StepSpec]
    config: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    replay_of: ReplayOf | None = None
    forked_from: ForkedFrom | None = None
    carried_over: list[CompletedStep] = field(default_factory=list)
    """A fork's first steps, completed in its source."""
    session_id: UUID | None = None
    """Given when the id must be the same whoever creates the session (a schedule's firing)."""

    def build(self, tenant: str, actor: str) -> WorkflowSession:
        session = WorkflowSession.create(
            name=self.name,
            steps=self.steps,
            tenant=tenant,
            actor=actor,
            config=self.config,
            labels=self.labels,
            replay_of=self.replay_of,
            forked_from=self.forked_from,
            session_id=self.session_id,
        )
        if self.carried_over:
            session.carry_over(self.carried_over, actor)
        return session


class Stepline(Application[UUID]):
    """Sessions in, events out. Thread-safe; build one per process."""

    name = "Stepline"

    def __init__(
        self,
        env: dict[str, str],
        snapshot_interval: int = 100,
        cache_size: int = 1_000,
        master_key: MasterKey | None = None,
    ) -> None:
        """`cache_size` sessions stay in memory between commands; each load still reads the
        events appended since (by any process), so the cache is never stale, only faster.
        With a `master_key`, each new session gets a data key and its events are sealed
        (engine.privacy.sealing); without one they are stored in clear and cannot be shredded."""
        # Per instance, so the setting applies; the library reads this mapping from `self`.
        self.snapshotting_intervals = {  # type: ignore[misc]
            WorkflowSession: snapshot_interval,
            Schedule: snapshot_interval,  # one event per firing: a schedule keeps firing
        }
        self.snapshot_interval = snapshot_interval
        caching = {"AGGREGATE_CACHE_MAXSIZE": str(cache_size)} if cache_size > 0 else {}
        recorder = {"APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC}
        # The event store's tables are made by engine.store.schema.prepare, under the schema lock,
        # never as a side effect of building the application.
        super().__init__(
            env={**env, **caching, **recorder, "IS_SNAPSHOTTING_ENABLED": "y", "CREATE_TABLE": "n"}
        )
        log_table = cast(FencedRecorder, self.recorder)
        self.events_relation = Identifier(log_table.datastore.schema, log_table.events_table_name)
        """The table of the log, as SQL names it."""
        if self.snapshots is not None:
            render_statements(cast(PostgresAggregateRecorder, self.snapshots.recorder))
        if master_key is not None:
            datastore = cast(FencedRecorder, self.recorder).datastore
            cast(SealingMapper, self.mapper).keys = DataKeys(datastore, master_key)

    def construct_mapper(self) -> Mapper[UUID]:
        return SealingMapper(self.construct_transcoder())

    @property
    def data_keys(self) -> DataKeys | None:
        """The sessions' data keys, when the application was given a master key."""
        return cast(SealingMapper, self.mapper).keys

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(_SessionStatusAsValue())
        transcoder.register(_StepStatusAsValue())
        transcoder.register(_StepStateAsDict())
        transcoder.register(_StepPolicyAsDict())
        transcoder.register(_TimingAsDict())
        transcoder.register(_WaitAsDict())

    @property
    def events_table(self) -> str:
        """The PostgreSQL table holding the log."""
        return cast(FencedRecorder, self.recorder).events_table_name

    # ---- reading ------------------------------------------------------------------------

    def get_session(self, session_id: UUID, version: int | None = None) -> WorkflowSession:
        """The session rebuilt from its events (from the latest snapshot), or as of `version`."""
        try:
            session: WorkflowSession = self.repository.get(
                session_id, version=version, projector_func=replay
            )
        except AggregateNotFoundError:
            raise SessionNotFound(f"no session {session_id}", session_id=str(session_id)) from None
        if not isinstance(session, WorkflowSession):  # another aggregate's id, e.g. a batch
            raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))
        if version is not None and session.version < version:
            raise SessionNotFound(
                f"session {session_id} has no version {version}; the latest is {session.version}",
                session_id=str(session_id),
                latest_version=session.version,
            )
        return session

    def session_of_records(
        self, session_id: UUID, records: Iterable[tuple[int, str, bytes]]
    ) -> WorkflowSession:
        """The session rebuilt from all its events, read from `events_relation` by the caller
        (version, topic, state, in order), without looking for a snapshot: for a session just
        created, which has none."""
        stored = (StoredEvent(session_id, v, topic, state) for v, topic, state in records)
        events = cast(Iterable[WorkflowSession.Event], map(self.mapper.to_domain_event, stored))
        session = replay(None, events)
        if not isinstance(session, WorkflowSession):  # no events, or another aggregate's id
            raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))
        return session

    def history(
        self, session_id: UUID, after: int = 0, limit: int | None = None
    ) -> list[WorkflowSession.Event]:
        """The session's events in order, those after version `after`, at most `limit`."""
        events = list(self.events.get(session_id, gt=after or None, limit=limit))
        if not events and after == 0:
            raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))
        return events  # type: ignore[return-value]

    # ---- the unit of work ---------------------------------------------------------------

    def change(self, session_id: UUID, decide: Callable[[WorkflowSession], T]) -> T:
        """Load the session, let `decide` call its commands, save; on a lost race, again."""
        for _ in range(MAX_CONFLICT_RETRIES):
            session = self.get_session(session_id)
            result = decide(session)
            try:
                self.save(session)
            except RecordConflictError:
                log.debug("version conflict; deciding again", extra=on_session(session_id))
                continue
            return result
        raise VersionConflict(
            f"session {session_id} kept changing; gave up after {MAX_CONFLICT_RETRIES} tries",
            session_id=str(session_id),
        )

    # ---- batches ------------------------------------------------------------------------

    def create_batch(
        self, requests: list[SessionRequest], *, tenant: str, actor: str
    ) -> tuple[UUID, list[UUID]]:
        """Create every session and the batch in one transaction: all of them, or none."""
        sessions = [request.build(tenant, actor) for request in requests]
        batch = Batch.create(session_ids=[s.id for s in sessions], tenant=tenant, actor=actor)
        self.save(*sessions, batch)
        log.info("Batch %s created with %d sessions", batch.id, len(sessions))
        return batch.id, [s.id for s in sessions]

    def get_batch(self, batch_id: UUID) -> Batch:
        try:
            batch: Batch = self.repository.get(batch_id)
        except AggregateNotFoundError:
            raise BatchNotFound(f"no batch {batch_id}", batch_id=str(batch_id)) from None
        if not isinstance(batch, Batch):
            raise BatchNotFound(f"no batch {batch_id}", batch_id=str(batch_id))
        return batch

    def cancel_batch(self, batch_id: UUID, reason: str, actor: str) -> list[UUID]:
        """Cancel the batch and each of its sessions not yet ended; returns those cancelled."""
        batch = self.get_batch(batch_id)
        if not batch.cancelled:
            batch.cancel(reason, actor)
            self.save(batch)
        cancelled = []
        for session_id in batch.session_ids:
            try:
                self.cancel(session_id, reason=reason, actor=actor)
            except InvalidStateTransition:
                continue  # already ended: nothing to cancel
            cancelled.append(session_id)
        return cancelled

    # ---- schedules ----------------------------------------------------------------------

    def get_schedule(self, schedule_id: UUID) -> Schedule:
        """The schedule, unless there is none (or it was deleted): ScheduleNotFound."""
        try:
            schedule: Schedule = self.repository.get(schedule_id)
        except AggregateNotFoundError:
            schedule = None  # type: ignore[assignment]
        if not isinstance(schedule, Schedule) or schedule.deleted:
            raise ScheduleNotFound(f"no schedule {schedule_id}", schedule_id=str(schedule_id))
        return schedule

    def change_schedule(self, schedule_id: UUID, decide: Callable[[Schedule], None]) -> Schedule:
        """Load the schedule, let `decide` call its commands, save; on a lost race, again."""
        for _ in range(MAX_CONFLICT_RETRIES):
            schedule = self.get_schedule(schedule_id)
            decide(schedule)
            try:
                self.save(schedule)
            except RecordConflictError:
                continue
            return schedule
        raise VersionConflict(
            f"schedule {schedule_id} kept changing; gave up after {MAX_CONFLICT_RETRIES} tries",
            schedule_id=str(schedule_id),
        )

    # ---- commands -----------------------------------------------------------------------

    def create(
        self,
        request: SessionRequest,
        *,
        tenant: str,
        actor: str,
        announced: bool = False,
        admission: Admission | None = None,
    ) -> WorkflowSession:
        session = request.build(tenant, actor)
        self.save_new(session, announced=announced, admission=admission)
        return session

    def save_new(
        self,
        session: WorkflowSession,
        *,
        announced: bool = False,
        admission: Admission | None = None,
    ) -> None:
        """Save a session just built (its `Created` event); `announced`: tell the workers
        with the commit (`announcement`), so one with a free slot takes it at once;
        `admission`: only if it admits the session, in the same statement (else it raises,
        nothing saved)."""
        announce = announcement(session.id, session.tenant) if announced else None
        self.save(session, announce=announce, admission=admission)
        log.info(
            "Workflow session created with %d steps",
            len(session.steps),
            extra=on_session(session.id),
        )

    def pause(self, session_id: UUID, reason: str = "", actor: str = WORKER) -> None:
        self.change(session_id, lambda s: s.pause(reason, actor))
        log.info("Session paused by %s", actor, extra=on_session(session_id))

    def resume(self, session_id: UUID, reason: str = "", actor: str = WORKER) -> None:
        self.change(session_id, lambda s: s.resume(reason, actor))
        log.info("Session resumed by %s", actor, extra=on_session(session_id))

    def cancel(self, session_id: UUID, reason: str = "", actor: str = WORKER) -> None:
        self.change(session_id, lambda s: s.cancel(reason, actor))
        log.info("Session cancelled by %s", actor, extra=on_session(session_id))

    def approve(self, session_id: UUID, comment: str = "", actor: str = WORKER) -> None:
        self.change(session_id, lambda s: s.approve(comment, actor))
        log.info("Session approved by %s", actor, extra=on_session(session_id))

    def reject(self, session_id: UUID, comment: str = "", actor: str = WORKER) -> None:
        self.change(session_id, lambda s: s.reject(comment, actor))
        log.info("Session rejected by %s", actor, extra=on_session(session_id))

    def signal(self, session_id: UUID, name: str, body: Any, actor: str = WORKER) -> None:
        """Put a signal in the session's mailbox; a wait for it in progress takes it."""
        self.change(session_id, lambda s: s.receive_signal(name, body, actor))
        log.info("Signal %s received from %s", name, actor, extra=on_session(session_id))

    def fail_session(
        self, session_id: UUID, error: StandardError, outcome: str = "", actor: str = WORKER
    ) -> None:
        self.change(session_id, lambda s: s.fail(error.to_dict(), outcome, actor))
        log.error(
            "Session failed: %s (%s)", error.message, error.code, extra=on_session(session_id)
        )

    def expire(self, session_id: UUID, actor: str = WORKER) -> None:
        error = StandardError.of(
            "SESSION_EXPIRED", "the session outlived its TTL (STEPLINE_SESSION_TTL_MS)"
        )
        self.change(session_id, lambda s: s.expire(error.to_dict(), actor=actor))
        log.warning("Session expired", extra=on_session(session_id))

    def record_webhook_failure(self, session_id: UUID, **failure: Any) -> None:
        """Record on the session that a webhook about it was given up on."""
        self.change(session_id, lambda s: s.record_webhook_failure(**failure))
        log.warning(
            "Webhook %s given up on", failure.get("webhook_id"), extra=on_session(session_id)
        )


def decided(
    app: Application[UUID], load: Callable[[], A], decide: Callable[[A], T], what: str
) -> tuple[T, bool]:
    """Load an aggregate, let `decide` call its commands, save what was decided; on a lost
    race, again. Whether anything was decided. `what` names it in the error of the last try."""
    for _ in range(MAX_CONFLICT_RETRIES):
        aggregate = load()
        result = decide(aggregate)
        changed = bool(aggregate.pending_events)
        try:
            app.save(aggregate)
        except RecordConflictError:
            continue
        return result, changed
    raise VersionConflict(f"{what} kept changing; gave up after {MAX_CONFLICT_RETRIES} tries")
