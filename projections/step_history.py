"""step_history: one row per step — status, attempts, timing, turns, commands, checks, outcome,
and what its latest attempt did (each command and check in a few words).

A step whose `if:` was false reads skipped, the reason as its summary. A loop's row reads
completed once it came up, and its iterations' rows follow it, each with its origin; the rows
after the loop move down, so the step index of a step not yet run can change while a session
runs (as its total count can: see `session_progress`).

Times and duration are those of the step's latest attempt; turns, commands and checks count
every attempt. A step running when its session is paused reads paused, its clock stopped at the
pause; one whose session waits (an approval, a timer, a signal) reads waiting; one still
under way when its session ends takes the session's ending as its status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection

from domain.session import StepViewStatus
from domain.session import WorkflowSession as W
from domain.waits import described
from projections.view import Recorded, RowTable, SessionLog, erasures

ENDINGS = {
    W.Failed: StepViewStatus.FAILED,
    W.Cancelled: StepViewStatus.CANCELLED,
    W.Expired: StepViewStatus.EXPIRED,
}
"""A step under way when its session ends takes the session's ending as its status."""
UNDER_WAY = (StepViewStatus.RUNNING, StepViewStatus.PAUSED, StepViewStatus.WAITING)
FACT_CHARS = 160


@dataclass
class StepRow:
    session_id: UUID
    step_index: int
    text: str
    expect: str | None
    version: int
    status: StepViewStatus = StepViewStatus.PENDING
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
    did: list[str] = field(default_factory=list)
    """What the latest attempt did: `POST /todos → 201`, `saved todo_id = 7`,
    `expect status 201: passed`, one line per command or check, in order."""
    policy: dict[str, Any] = field(default_factory=dict)
    """The step's own policy as written (`{"retries": 3, "on_failure": "continue"}`)."""
    continued: bool = False
    """It failed and its session went on past it (`on_failure: continue`)."""
    condition: str | None = None
    """Its `if:`, as written."""
    origin: dict[str, Any] | None = None
    """The loop iteration it came from (`{"loop": "for each todo in vars.todos",
    "iteration": 0, "of": 3, "bind": {...}}`), or None for a step as written."""

    def __post_init__(self) -> None:
        self.status = StepViewStatus(self.status)  # read from the table as text


Steps = dict[tuple[UUID, int], StepRow]


def _rows(
    session_id: UUID, version: int, steps: list[dict[str, Any]], first: int = 0
) -> list[StepRow]:
    """Pending rows for steps as `Created` and `LoopExpanded` record them."""
    return [
        StepRow(
            session_id=session_id,
            step_index=first + number,
            text=step["text"],
            expect=step["expect"],
            version=version,
            policy=step.get("policy") or {},
            condition=step.get("if"),
            origin=step.get("origin"),
        )
        for number, step in enumerate(steps)
    ]


def _expanded(steps: Steps, recorded: Recorded, event: W.LoopExpanded) -> set[tuple[UUID, int]]:
    """The loop's row done; its iterations' rows put right after it, the rows after it moved
    down (all pending: steps run in order). Every row from the loop's on is rewritten."""
    session_id, header = recorded.session_id, event.step_index
    loop = steps.get((session_id, header))
    if loop is None or event.originator_version <= loop.version:
        return set()
    loop.version = event.originator_version
    _end(loop, StepViewStatus.COMPLETED, recorded.at)
    loop.summary = f"{event.items} iteration{'' if event.items == 1 else 's'}"
    later = sorted(
        (row for key, row in steps.items() if key[0] == session_id and key[1] > header),
        key=lambda row: row.step_index,
    )
    for row in later:
        del steps[(session_id, row.step_index)]
        row.step_index += len(event.steps)
    for row in [*_rows(session_id, event.originator_version, event.steps, header + 1), *later]:
        steps[(session_id, row.step_index)] = row
    return {
        (session_id, index) for index in range(header, header + len(event.steps) + len(later) + 1)
    }


# ---- what a step did, in a few words ----------------------------------------------------


def _shown(value: Any) -> str:
    """A value as a person would write it in a step: a word bare, anything else as JSON."""
    if isinstance(value, str) and value and not any(c.isspace() or c == '"' for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _action(name: str, args: dict[str, Any]) -> str:
    """`GET /todos`, `click "Sign in"`, `expect status 201`."""
    if name == "request":
        return f"{str(args.get('method', '')).upper()} {args.get('url', '')}"
    return " ".join([name.replace("_", " "), *map(_shown, args.values())])


def _result(action: str, event: W.CommandFinished) -> str:
    """The command's action with what came of it: a status, an exit code, a saved value."""
    if not event.ok:
        return f"{action}: {event.error['code'] if event.error else 'failed'}"
    try:
        output = json.loads(event.output)
    except json.JSONDecodeError:
        output = None
    if not isinstance(output, dict):
        return f"{action}: ok"
    if "saved" in output:
        return f"saved {output['saved']} = {_shown(output.get('value'))}"
    if "status" in output:
        return f"{action} → {output['status']}"
    if "exit_code" in output:
        return f"{action} → exit {output['exit_code']}"
    return f"{action}: ok"


def _noted(row: StepRow, fact: str) -> None:
    cut = fact if len(fact) <= FACT_CHARS else fact[: FACT_CHARS - 1] + "…"
    row.did.append(cut)


def _finished(row: StepRow, event: W.CommandFinished) -> None:
    """The command issued last, now with its result (commands of a step run one at a time)."""
    issued = row.did.pop() if row.did else event.command_id
    _noted(row, _result(issued, event))


# ---- the fold ---------------------------------------------------------------------------


def _clock_ms(row: StepRow, at: datetime) -> int | None:
    if row.started_at is None:
        return None
    return int((at - row.started_at).total_seconds() * 1000)


def _end(row: StepRow, status: StepViewStatus, at: datetime) -> None:
    if row.status is not StepViewStatus.PAUSED:  # a paused step's clock stopped at the pause
        row.duration_ms = _clock_ms(row, at)
    row.status = status
    row.finished_at = at


def _evolve_step(row: StepRow, event: W.Event, at: datetime) -> None:
    match event:
        case W.StepStarted(attempt=attempt):
            row.status, row.attempts, row.started_at = StepViewStatus.RUNNING, attempt, at
            row.finished_at = row.duration_ms = row.error_code = row.error_message = None
            row.did = []
        case W.TurnRecorded():
            row.turns += 1
        case W.CommandIssued(name=name, args=args):
            row.commands += 1
            row.did.append(_action(name, args))
        case W.CommandFinished():
            _finished(row, event)
        case W.Checked(name=name, args=args, ok=ok):
            row.checks += 1
            _noted(row, f"{_action(name, args)}: {'passed' if ok else 'failed'}")
        case W.Paused() if row.status is StepViewStatus.RUNNING:
            row.status, row.duration_ms = StepViewStatus.PAUSED, _clock_ms(row, at)
        case W.Resumed() if row.status is StepViewStatus.PAUSED:
            row.status, row.duration_ms = StepViewStatus.RUNNING, None
        case W.WaitStarted(kind=kind, question=question, signal=signal, due_at=due_at):
            row.status = StepViewStatus.WAITING
            until = f" until {due_at:%Y-%m-%d %H:%M:%S}Z" if due_at else ""
            _noted(row, f"wait for {described(kind, question, signal)}{until}")
        case W.WaitEnded(outcome=outcome, actor=actor, comment=comment):
            row.status = StepViewStatus.RUNNING
            by = "" if outcome in ("due", "timed_out") else f" by {actor}"
            _noted(row, f"{outcome.replace('_', ' ')}{by}" + (f": {comment}" if comment else ""))
        case _:
            _evolve_outcome(row, event, at)


def _evolve_outcome(row: StepRow, event: W.Event, at: datetime) -> None:
    """How the step ended: completed, failed (and gone on past), or skipped (never started)."""
    match event:
        case W.StepCompleted(summary=summary):
            _end(row, StepViewStatus.COMPLETED, at)
            row.summary = summary
        case W.StepFailed(error=error):
            _end(row, StepViewStatus.FAILED, at)
            row.error_code, row.error_message = error.get("code"), error.get("message")
        case W.ContinuedAfterFailure():
            row.continued = True
        case W.StepSkipped(reason=reason):
            row.status, row.summary, row.finished_at = StepViewStatus.SKIPPED, reason, at


def _carried_over(
    steps: Steps, recorded: Recorded, event: W.StepsCarriedOver
) -> set[tuple[UUID, int]]:
    """A fork's first steps: completed in its source, so with no attempt, time or command."""
    changed = set()
    for carried in event.steps:
        key = (recorded.session_id, carried["step_index"])
        row = steps.get(key)
        if row is not None and event.originator_version > row.version:
            skipped = carried.get("skipped", False)
            row.version, row.status, row.summary = (
                event.originator_version,
                StepViewStatus.SKIPPED if skipped else StepViewStatus.COMPLETED,
                carried["summary"],
            )
            changed.add(key)
    return changed


_NO_STEP = object()


def _target(steps: Steps, running: dict[UUID, int], recorded: Recorded) -> StepRow | None:
    """The step row an event changes: its own step, or the running one for session events."""
    index: Any = getattr(recorded.event, "step_index", _NO_STEP)
    if index is _NO_STEP:
        index = running.get(recorded.session_id)
    return None if index is None else steps.get((recorded.session_id, index))


def fold(
    steps: Steps, running: dict[UUID, int], batch: Sequence[Recorded]
) -> set[tuple[UUID, int]]:
    """Apply a batch; `running` maps sessions to their running step. Returns changed keys."""
    changed: set[tuple[UUID, int]] = set()
    for recorded in batch:
        event = recorded.event
        if isinstance(event, W.Created):
            for new in _rows(recorded.session_id, event.originator_version, event.steps):
                key = (recorded.session_id, new.step_index)
                if key not in steps:
                    steps[key] = new
                    changed.add(key)
            continue
        if isinstance(event, W.StepsCarriedOver):
            changed |= _carried_over(steps, recorded, event)
            continue
        if isinstance(event, W.LoopExpanded):
            changed |= _expanded(steps, recorded, event)
            running.pop(recorded.session_id, None)  # the loop is done; nothing runs
            continue
        row = _target(steps, running, recorded)
        if row is None or event.originator_version <= row.version:
            continue
        row.version = event.originator_version
        if type(event) in ENDINGS:
            if row.status in UNDER_WAY:
                _end(row, ENDINGS[type(event)], recorded.at)
        else:
            _evolve_step(row, event, recorded.at)
        if row.status in UNDER_WAY:
            running[recorded.session_id] = row.step_index
        else:
            running.pop(recorded.session_id, None)
        changed.add((recorded.session_id, row.step_index))
    return changed


class StepHistoryView:
    name: ClassVar[str] = "step_history"
    version: ClassVar[int] = 6  # 2: checks counted apart from commands. 3: paused, did.
    # 4: waiting. 5: the step's policy; continued past its failure. 6: skipped steps, a
    # step's condition, the loop iteration it came from (loops put rows in)
    tables: ClassVar[tuple[str, ...]] = ("step_history",)
    rows = RowTable(
        "step_history",
        StepRow,
        key=("session_id", "step_index"),
        carried=True,  # the fold changes a step's row only to write it
    )

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
                did text[] NOT NULL,
                policy jsonb NOT NULL,
                continued boolean NOT NULL,
                condition text,
                origin jsonb,
                PRIMARY KEY (session_id, step_index)
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        loaded = self.rows.load_for_sessions(conn, {r.session_id for r in batch})
        steps = {(row.session_id, row.step_index): row for row in loaded}
        running = {row.session_id: row.step_index for row in loaded if row.status in UNDER_WAY}
        changed = fold(steps, running, batch)
        self.rows.upsert(conn, (steps[key] for key in changed))
        self.rows.delete_sessions(conn, [r.session_id for r in erasures(batch)])


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
