"""Schedules: creating one, and firing the due ones — one process at a time.

Every process with workers runs a `Scheduler`. It wakes at the next firing the schedule index
knows of (and at least every `poll_s`), and tries a transaction-level advisory lock
(`locks.SCHEDULES`): the process that takes it catches the index up, and for each schedule
due asks the schedule which firings are due now (the database's clock) and saves each firing's
session together with the schedule's `Fired` event, in one transaction. The session's id is
derived from the schedule and the firing time, so were two processes ever to fire the same
firing (the lock lost with a connection), the second save conflicts and nothing is created
twice. Each firing's session passes the same admission as POST /v1/sessions; one refused is
recorded on the schedule (`FiringRefused`) with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError, RecordConflictError
from pydantic import ValidationError

from domain.errors import DomainError, InvalidWorkflow, ScheduleNotFound
from domain.schedule import Schedule, Timing, at_text, firing_session_id
from domain.session import WorkflowSession
from engine.executors.kinds import DEFAULT_EXECUTOR
from engine.live.projector import Projector
from engine.logs import LOGGER_NAME
from engine.loop.task_loop import TaskLoop
from engine.store import locks
from engine.store.app import SessionRequest, Stepline
from engine.workflows.admission import admitted
from engine.workflows.file import (
    StepEntry,
    WebhookSpec,
    WorkflowConfig,
    session_config,
    steps_as_entries,
)
from engine.workflows.inputs import InputSpec, with_inputs
from projections.schedule_index import due_schedules, next_firing

log = logging.getLogger(LOGGER_NAME)

MAX_FIRINGS_AT_ONCE = 20
"""Of a schedule's missed firings (`catch_up: all`), how many one pass fires; the rest next."""
MIN_WAIT_S = 0.01
"""Between passes, at least: a clock a little ahead of the database's sees a firing due that
the database does not yet."""
SCHEDULE_LABEL = "schedule_id"
FIRED_AT_LABEL = "scheduled_for"


def scheduler_actor(schedule_id: UUID) -> str:
    """The actor recorded on what a schedule's firing causes."""
    return f"schedule:{schedule_id}"


def request_of_body(body: dict[str, Any], webhook: dict[str, Any] | None = None) -> SessionRequest:
    """The session a POST /v1/sessions body asks for (a body the API has already validated,
    as a schedule records it); `webhook` is the schedule's, for a body that names none."""
    try:
        config = WorkflowConfig.model_validate(body.get("config") or {})
        given = body.get("webhook") or webhook
        hook = None if given is None else WebhookSpec.model_validate(given)
        inputs = body.get("inputs") or {}
        declared = {name: InputSpec.model_validate(spec) for name, spec in inputs.items()}
    except ValidationError as error:
        raise InvalidWorkflow(f"the schedule's workflow is no longer valid: {error}") from None
    _refuse_templates(body["steps"])
    try:  # as a file's steps: text, {text, expect, if, policy...}, loops
        steps = [StepEntry.model_validate(s).spec() for s in steps_as_entries(body["steps"])]
    except ValidationError as error:
        raise InvalidWorkflow(f"the schedule's workflow is no longer valid: {error}") from None
    request = SessionRequest(
        name=body["name"],
        steps=steps,
        config=session_config(
            config, body.get("executor") or DEFAULT_EXECUTOR, body.get("base_url"), hook
        ),
        labels=dict(body.get("labels") or {}),
    )
    return with_inputs(request, declared, body.get("with") or {})


def _refuse_templates(steps: list[Any]) -> None:
    """A schedule's workflow is its steps as given: a template (`use:`) would be expanded
    at each firing, against the registry as it is then, which is not done yet."""
    for index, step in enumerate(steps):
        if isinstance(step, dict) and step.get("use") is not None:
            raise InvalidWorkflow(
                f"step {index} uses a template ({step['use']}): a schedule's workflow cannot "
                "use templates yet",
                suggested_action="Give the template's steps themselves in the schedule's workflow",
                field=f"steps[{index}]",
            )


def firing_request(schedule: Schedule, fired_at: datetime) -> SessionRequest:
    """The session a firing creates: the schedule's workflow, labelled with the schedule and
    the firing time, its id that of the firing."""
    request = request_of_body(schedule.workflow, schedule.webhook)
    labels = {**request.labels, SCHEDULE_LABEL: str(schedule.id), FIRED_AT_LABEL: at_text(fired_at)}
    return SessionRequest(
        name=request.name,
        steps=request.steps,
        config=request.config,
        labels=labels,
        session_id=firing_session_id(schedule.id, fired_at),
    )


@dataclass(frozen=True)
class NewSchedule:
    """A schedule as asked for (its workflow a validated POST /v1/sessions body)."""

    name: str
    workflow: dict[str, Any]
    timing: Timing
    catch_up: str = "one"
    paused: bool = False
    webhook: dict[str, Any] | None = None


def create_schedule(
    loop: TaskLoop, asked: NewSchedule, *, tenant: str, actor: str, now: datetime
) -> Schedule:
    """Save a new schedule, if its workflow would be admitted now (the tenant's policy, its
    secrets, its webhook): a schedule that could never fire is refused at once."""
    admitted(loop, request_of_body(asked.workflow, asked.webhook), tenant)
    schedule = Schedule.create(
        tenant=tenant,
        name=asked.name,
        workflow=asked.workflow,
        timing=asked.timing,
        catch_up=asked.catch_up,
        paused=asked.paused,
        webhook=asked.webhook,
        now=now,
        actor=actor,
    )
    loop.app.save(schedule)
    log.info("Schedule %s created (%s)", schedule.id, asked.timing.cron or asked.timing.every)
    return schedule


def check_changed_workflow(
    loop: TaskLoop, schedule: Schedule, workflow: dict[str, Any], webhook: dict[str, Any] | None
) -> None:
    """Admission of a schedule's changed workflow or webhook, as of a new one."""
    admitted(loop, request_of_body(workflow, webhook), schedule.tenant)


@dataclass
class Scheduler:
    app: Stepline
    projector: Projector
    loop: TaskLoop
    grace: timedelta
    """`catch_up: none`: a firing later than this was missed, and is let go."""
    poll_s: float = 1.0

    def once(self, now: datetime | None = None) -> datetime | bool | None:
        """Fire what is due `now` (by default the database's now). False if another process
        is firing right now; else when the next firing is due (None: no schedule will fire)."""
        with self.projector.pool.connection() as conn, conn.transaction():
            locked = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (locks.SCHEDULES,)
            ).fetchone()
            if not (locked and locked[0]):
                return False
            self.projector.catch_up(["schedule_index"])
            now = now or _database_now(conn)
            for schedule_id in due_schedules(conn, now):
                self._fire_due(schedule_id, now)
            self.projector.catch_up(["schedule_index"])
            return next_firing(conn)

    def _fire_due(self, schedule_id: UUID, now: datetime) -> None:
        try:
            schedule = self.app.get_schedule(schedule_id)
        except ScheduleNotFound:
            return
        due = schedule.firings_due(now, self.grace, MAX_FIRINGS_AT_ONCE)
        actor = scheduler_actor(schedule_id)
        if due.let_go_through is not None:
            schedule.let_go(due.let_go_through, actor)
        sessions = [self._fire(schedule, fired_at, actor) for fired_at in due.fire]
        try:
            self.app.save(schedule, *(s for s in sessions if s is not None))
        except RecordConflictError:
            log.warning("Schedule %s changed while firing; deciding again next time", schedule_id)

    def _fire(self, schedule: Schedule, fired_at: datetime, actor: str) -> WorkflowSession | None:
        """The firing's session, admitted; None (and the refusal recorded) if not."""
        try:
            request = admitted(self.loop, firing_request(schedule, fired_at), schedule.tenant)
            session = request.build(schedule.tenant, actor)
        except DomainError as refused:
            error = refused.to_standard_error()
            schedule.refuse_firing(fired_at, error.to_dict(), actor)
            log.warning("Schedule %s: firing refused: %s", schedule.id, error.message)
            return None
        schedule.fire(fired_at, session.id, actor)
        return session

    def start(self) -> Callable[[], None]:
        """Fire in a thread of its own until stopped; returns the function that stops it."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name="scheduler", daemon=True)
        thread.start()

        def stop_firing() -> None:
            stop.set()
            thread.join(timeout=10)

        return stop_firing

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            stop.wait(self._wait_s(self._once_quietly()))

    def _once_quietly(self) -> datetime | bool | None:
        try:
            return self.once()
        except (psycopg.Error, PersistenceError):
            log.warning("Could not fire schedules (database unavailable); retrying")
        except Exception:
            log.exception("Firing schedules failed; trying again later")
        return False

    def _wait_s(self, next_due: datetime | bool | None) -> float:
        """Until the next firing, if sooner than the next poll."""
        if not isinstance(next_due, datetime):
            return self.poll_s
        seconds = (next_due - datetime.now(next_due.tzinfo)).total_seconds()
        return min(self.poll_s, max(seconds, MIN_WAIT_S))


def _database_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now
