"""session_progress: where each session stands — status, steps done, percent, time left.

Steps done are those completed, skipped (`if:` false) and failed and gone on past. A loop's
iterations are steps only once the loop comes up, so while a session has loops ahead of it
(`loops_ahead`), its total, percent and time left count the steps known so far, and the
API says so (`steps_may_grow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection

from domain.session import ERASED, SessionStatus, status_after
from domain.session import WorkflowSession as W
from domain.waits import described
from projections.view import Recorded, RowTable, SessionLog


@dataclass
class Progress:
    session_id: UUID
    tenant: str
    name: str
    status: str
    version: int
    total_steps: int
    created_at: datetime
    updated_at: datetime
    step_texts: list[str]
    completed_steps: int = 0
    failed_steps: int = 0
    continued_steps: int = 0
    """Steps that failed and that the session went on past (`on_failure: continue`): done,
    as completed ones are, for the percent and the time left."""
    current_step_index: int | None = 0
    current_step_text: str | None = None
    percent: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_remaining_ms: int | None = None
    step_started_at: datetime | None = None
    finished_step_ms: int = 0
    finished_step_count: int = 0
    failed_step_indexes: list[int] = field(default_factory=list)
    tokens_used: int = 0
    error_code: str | None = None
    """Why the session failed or expired; None while it has not."""
    error_message: str | None = None
    waiting_for: str | None = None
    """What a waiting session waits for: `approval: <question>`, `signal <name>`, `timer`."""
    due_at: datetime | None = None
    """When its wait is due: a timer's time, an approval's or a signal's timeout."""
    erased_at: datetime | None = None
    """When the session was erased: the row is its tombstone."""
    skipped_steps: int = 0
    """Steps whose `if:` was false: done, without running."""
    loops_ahead: int = 0
    """Loops that have not come up yet: each will put its iterations' steps in."""

    @property
    def steps_may_grow(self) -> bool:
        return self.loops_ahead > 0


STATUSES = {status.value: status for status in SessionStatus}
"""Each status by its value (as a row holds it): looked up once an event, faster than the
enum's own call; so are the values below, read without the enum's descriptor."""
COMPLETED, WAITING = SessionStatus.COMPLETED.value, SessionStatus.WAITING.value


def _created(recorded: Recorded, event: W.Created) -> Progress:
    texts = [step["text"] for step in event.steps]
    return Progress(
        session_id=recorded.session_id,
        tenant=event.tenant,
        name=event.name,
        status=SessionStatus.PENDING.value,
        version=event.originator_version,
        total_steps=len(texts),
        created_at=recorded.at,
        updated_at=recorded.at,
        step_texts=texts,
        current_step_text=texts[0],
        loops_ahead=_loops_in(event.steps),
    )


def _loops_in(steps: list[dict[str, Any]]) -> int:
    return sum(1 for step in steps if step.get("loop"))


def _expanded(row: Progress, event: W.LoopExpanded) -> None:
    """The loop is done (its own time not counted: it only made its iterations), and its
    iterations' steps are in the total after it."""
    index = event.step_index
    row.step_texts[index + 1 : index + 1] = [step["text"] for step in event.steps]
    row.total_steps += len(event.steps)
    row.completed_steps += 1
    row.step_started_at = None
    row.loops_ahead += _loops_in(event.steps) - 1
    _point_at(row, index + 1)


def _point_at(row: Progress, step_index: int | None) -> None:
    in_range = step_index is not None and step_index < row.total_steps
    row.current_step_index = step_index if in_range else None
    row.current_step_text = (
        row.step_texts[step_index] if in_range and step_index is not None else None
    )


def _step_ended(row: Progress, at: datetime) -> None:
    if row.step_started_at is not None:
        row.finished_step_ms += int((at - row.step_started_at).total_seconds() * 1000)
        row.finished_step_count += 1
    row.step_started_at = None


def _estimate(row: Progress) -> int | None:
    if row.status == COMPLETED:
        return 0
    if row.finished_at is not None or row.finished_step_count == 0:
        return None
    average = row.finished_step_ms / row.finished_step_count
    return round(average * (row.total_steps - _steps_done(row)))


def _steps_done(row: Progress) -> int:
    return row.completed_steps + row.continued_steps + row.skipped_steps


def tombstone(row: Progress, recorded: Recorded, event: W.Erased) -> Progress:
    """What an erased session's row keeps: id, tenant, status and times."""
    return Progress(
        session_id=row.session_id,
        tenant=row.tenant,
        name=ERASED,
        status=event.status,
        version=event.originator_version,
        total_steps=0,
        created_at=row.created_at,
        updated_at=recorded.at,
        step_texts=[],
        current_step_index=None,
        finished_at=event.ended_at,
        erased_at=recorded.at,
    )


def evolve(row: Progress, recorded: Recorded) -> None:
    """Fold one later event of the session into its row."""
    event, at = recorded.event, recorded.at
    row.version, row.updated_at = event.originator_version, at
    before = STATUSES[row.status]
    row.status = status_after(event, before, started=row.started_at is not None).value
    match event:
        case W.StepStarted(step_index=index):
            row.started_at = row.started_at or at
            row.step_started_at = at
            _point_at(row, index)
            if index in row.failed_step_indexes:
                row.failed_step_indexes.remove(index)
                row.failed_steps -= 1
        case W.TurnRecorded(prompt_tokens=prompt, completion_tokens=completion):
            row.tokens_used += prompt + completion
        case W.StepCompleted(step_index=index):
            row.completed_steps += 1
            _step_ended(row, at)
            _point_at(row, index + 1)
        case W.StepFailed(step_index=index):
            row.failed_steps += 1
            row.failed_step_indexes.append(index)
            _step_ended(row, at)
        case W.ContinuedAfterFailure(step_index=index):
            row.continued_steps += 1
            _point_at(row, index + 1)
        case W.Failed(error=error) | W.Expired(error=error):
            row.finished_at = at
            row.error_code, row.error_message = error.get("code"), error.get("message")
        case W.Completed() | W.Cancelled():
            row.finished_at = at
        case W.WaitStarted(kind=kind, question=question, signal=signal, due_at=due_at):
            row.waiting_for, row.due_at = described(kind, question, signal), due_at
        case _:
            _passed(row, event, at)
    if row.status != WAITING:
        row.waiting_for, row.due_at = None, None
    row.percent = round(100 * _steps_done(row) / row.total_steps, 2)
    row.estimated_remaining_ms = _estimate(row)


def _passed(row: Progress, event: W.Event, at: datetime) -> None:
    """Steps done without running here: carried over from a fork's source, skipped, or a
    loop that made its iterations."""
    match event:
        case W.StepsCarriedOver(steps=carried):
            skipped = sum(1 for step in carried if step.get("skipped"))
            row.completed_steps += len(carried) - skipped
            row.skipped_steps += skipped
            _point_at(row, len(carried))
        case W.StepSkipped(step_index=index):
            row.started_at = row.started_at or at
            row.skipped_steps += 1
            _point_at(row, index + 1)
        case W.LoopExpanded():
            _expanded(row, event)


def fold(rows: dict[UUID, Progress], batch: Sequence[Recorded]) -> set[UUID]:
    """Apply a batch to the rows by session; returns the sessions whose rows changed."""
    changed: set[UUID] = set()
    for recorded in batch:
        event = recorded.event
        row = rows.get(recorded.session_id)
        if isinstance(event, W.Created):
            if row is None:
                rows[recorded.session_id] = _created(recorded, event)
                changed.add(recorded.session_id)
        elif row is not None and event.originator_version > row.version:
            if isinstance(event, W.Erased):
                rows[recorded.session_id] = tombstone(row, recorded, event)
            else:
                evolve(row, recorded)
            changed.add(recorded.session_id)
    return changed


class SessionProgressView:
    name: ClassVar[str] = "session_progress"
    version: ClassVar[int] = 7  # 2: tokens used; a fork's carried-over steps. 3: why it
    # failed. 4: what a waiting session waits for, and until when. 5: erased_at.
    # 6: steps continued past (on_failure: continue). 7: skipped steps, loops ahead
    tables: ClassVar[tuple[str, ...]] = ("session_progress",)
    rows = RowTable("session_progress", Progress, key=("session_id",), carried=True)

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS session_progress (
                session_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                name text NOT NULL,
                status text NOT NULL,
                version integer NOT NULL,
                total_steps integer NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                step_texts text[] NOT NULL,
                completed_steps integer NOT NULL,
                failed_steps integer NOT NULL,
                continued_steps integer NOT NULL,
                current_step_index integer,
                current_step_text text,
                percent double precision NOT NULL,
                started_at timestamptz,
                finished_at timestamptz,
                estimated_remaining_ms bigint,
                step_started_at timestamptz,
                finished_step_ms bigint NOT NULL,
                finished_step_count integer NOT NULL,
                failed_step_indexes integer[] NOT NULL,
                tokens_used bigint NOT NULL,
                error_code text,
                error_message text,
                waiting_for text,
                due_at timestamptz,
                erased_at timestamptz,
                skipped_steps integer NOT NULL,
                loops_ahead integer NOT NULL
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        session_ids = {r.session_id for r in batch}
        rows = {row.session_id: row for row in self.rows.load_for_sessions(conn, session_ids)}
        changed = fold(rows, batch)
        self.rows.upsert(conn, (rows[i] for i in changed))


def find(conn: Connection[Any], session_id: UUID) -> Progress | None:
    return SessionProgressView.rows.get(conn, session_id)
