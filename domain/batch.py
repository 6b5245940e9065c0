"""A Batch: many sessions created by one request, followed and cancelled together."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidStateTransition, InvalidWorkflow

MAX_SESSIONS_PER_BATCH = 100


class Batch(Aggregate):
    class Event(Aggregate.Event):
        class_version = 1

    class Created(Event, Aggregate.Created):
        session_ids: list[str]
        tenant: str
        actor: str

    class Cancelled(Event):
        reason: str
        actor: str

    session_ids: list[UUID]
    tenant: str
    created_by: str
    cancelled: bool

    @classmethod
    def create(cls, *, session_ids: list[UUID], tenant: str, actor: str) -> Batch:
        if not session_ids:
            raise InvalidWorkflow(
                "a batch needs at least one session",
                suggested_action="Give sessions a list of at least one workflow",
                field="sessions",
            )
        if len(session_ids) > MAX_SESSIONS_PER_BATCH:
            raise InvalidWorkflow(
                f"a batch has at most {MAX_SESSIONS_PER_BATCH} sessions",
                suggested_action="Split the sessions into several batches",
                field="sessions",
            )
        return cls(session_ids=[str(i) for i in session_ids], tenant=tenant, actor=actor)

    @event(Created)
    def __init__(self, *, session_ids: list[str], tenant: str, actor: str) -> None:
        self.session_ids = [UUID(i) for i in session_ids]
        self.tenant = tenant
        self.created_by = actor
        self.cancelled = False

    def cancel(self, reason: str, actor: str) -> None:
        if self.cancelled:
            raise InvalidStateTransition("the batch is already cancelled")
        self._cancelled(reason=reason, actor=actor)

    @event(Cancelled)
    def _cancelled(self, *, reason: str, actor: str) -> None:
        self.cancelled = True
