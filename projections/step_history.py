"""step_history: one row per step — status, attempts, timing, turns, commands, checks, outcome.

Times and duration are those of the step's latest attempt; turns, commands and checks count
every attempt. A step still running when its session ends takes the session's ending as its status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection

from domain.session import StepStatus
from domain.session import WorkflowSession as W
from projections.view import Recorded, RowTable

ENDINGS = {W.Failed: "failed", W.Cancelled: "cancelled", W.Expired: "expired"}
STATUSES = tuple(dict.fromkeys([*(status.value for status in StepStatus), *ENDINGS.values()]))
"""Every status a step's row can have: the aggregate's, and its session's ending."""


@dataclass
class StepRow:
    session_id: UUID
    step_index: int
    text: str
    expect: str | None
    version: int
    status: str = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    turns: int = 0
    commands: int = 0
    checks: int = 0
    summary: str | None = None
    error_code: str | None = None
    error_message: str | None = None


Steps = dict[tuple[UUID, int], StepRow]


def _created(recorded: Recorded, event: W.Created) -> list[StepRow]:
    return [
        StepRow(
            session_id=recorded.session_id,
            step_index=index,
            text=step["text"],
            expect=step["expect"],
            version=event.originator_version,
        )
        for index, step in enumerate(event.steps)
    ]


def _end(row: StepRow, status: str, at: datetime) -> None:
    row.status = status
    row.finished_at = at
    if row.started_at is not None:
        row.duration_ms = int((at - row.started_at).total_seconds() * 1000)


def _evolve_step(row: StepRow, event: W.Event, at: datetime) -> None:
    match event:
        case W.StepStarted(attempt=attempt):
            row.status, row.attempts, row.started_at = "running", attempt, at
            row.finished_at = row.duration_ms = row.error_code = row.error_message = None
        case W.TurnRecorded():
            row.turns += 1
        case W.CommandIssued():
            row.commands += 1
        case W.Checked():
            row.checks += 1
        case W.StepCompleted(summary=summary):
            _end(row, "completed", at)
            row.summary = summary
        case W.StepFailed(error=error):
            _end(row, "failed", at)
            row.error_code, row.error_message = error.get("code"), error.get("message")


def _carried_over(
    steps: Steps, recorded: Recorded, event: W.StepsCarriedOver
) -> set[tuple[UUID, int]]:
    """A fork's first steps: completed in its source, so with no attempt, time or command."""
    changed = set()
    for carried in event.steps:
        key = (recorded.session_id, carried["step_index"])
        row = steps.get(key)
        if row is not None and event.originator_version > row.version:
            row.version, row.status, row.summary = (
                event.originator_version,
                "completed",
                carried["summary"],
            )
            changed.add(key)
    return changed


def _target(steps: Steps, running: dict[UUID, int], recorded: Recorded) -> tuple[UUID, int] | None:
    """The step row an event changes: its own step, or the running one for session events."""
    index: int | None = getattr(recorded.event, "step_index", running.get(recorded.session_id))
    if index is None or (recorded.session_id, index) not in steps:
        return None
    return (recorded.session_id, index)


def fold(
    steps: Steps, running: dict[UUID, int], batch: Sequence[Recorded]
) -> set[tuple[UUID, int]]:
    """Apply a batch; `running` maps sessions to their running step. Returns changed keys."""
    changed: set[tuple[UUID, int]] = set()
    for recorded in batch:
        event = recorded.event
        if isinstance(event, W.Created):
            for new in _created(recorded, event):
                key = (recorded.session_id, new.step_index)
                if key not in steps:
                    steps[key] = new
                    changed.add(key)
            continue
        if isinstance(event, W.StepsCarriedOver):
            changed |= _carried_over(steps, recorded, event)
            continue
        key_or_none = _target(steps, running, recorded)
        if key_or_none is None or event.originator_version <= steps[key_or_none].version:
            continue
        row = steps[key_or_none]
        row.version = event.originator_version
        if type(event) in ENDINGS:
            if row.status == "running":
                _end(row, ENDINGS[type(event)], recorded.at)
        else:
            _evolve_step(row, event, recorded.at)
        if row.status == "running":
            running[recorded.session_id] = row.step_index
        else:
            running.pop(recorded.session_id, None)
        changed.add(key_or_none)
    return changed


class StepHistoryView:
    name: ClassVar[str] = "step_history"
    version: ClassVar[int] = 2  # 2: checks are counted apart from commands
    tables: ClassVar[tuple[str, ...]] = ("step_history",)
    rows = RowTable("step_history", StepRow, key=("session_id", "step_index"))

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS step_history (
                session_id uuid NOT NULL,
                step_index integer NOT NULL,
                text text NOT NULL,
                expect text,
                version integer NOT NULL,
                status text NOT NULL,
                attempts integer NOT NULL,
                started_at timestamptz,
                finished_at timestamptz,
                duration_ms bigint,
                turns integer NOT NULL,
                commands integer NOT NULL,
                checks integer NOT NULL,
                summary text,
                error_code text,
                error_message text,
                PRIMARY KEY (session_id, step_index)
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded]) -> None:
        loaded = self.rows.load_for_sessions(conn, {r.session_id for r in batch})
        steps = {(row.session_id, row.step_index): row for row in loaded}
        running = {row.session_id: row.step_index for row in loaded if row.status == "running"}
        changed = fold(steps, running, batch)
        self.rows.upsert(conn, (steps[key] for key in changed))


def steps_of(conn: Connection[Any], session_id: UUID) -> list[StepRow]:
    rows = StepHistoryView.rows.load_for_sessions(conn, [session_id])
    return sorted(rows, key=lambda row: row.step_index)


def recent_average_ms(conn: Connection[Any], sample: int = 1_000) -> float | None:
    """The mean duration of the last `sample` steps that finished, across tenants."""
    row = conn.execute(
        "SELECT avg(duration_ms) FROM (SELECT duration_ms FROM step_history "
        "WHERE duration_ms IS NOT NULL ORDER BY finished_at DESC LIMIT %s) recent",
        (sample,),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])
