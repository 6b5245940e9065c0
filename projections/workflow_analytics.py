"""workflow_analytics: every attempt of every step, kept with its workflow, version, step and
UTC day, so the analytics (runs, completed, failed by error code, retries, p50/p95 duration,
flaky steps) are exact aggregates computed in SQL at query time, never estimates kept here.

A session's workflow is its `Created.name`; its version the registered version its config
records (`config.workflow.version`), 0 for a session sent inline (no registry version).

A step is identified by its *place*: a step as written is its position in `Created.steps`
("2"); a loop's iteration step is the loop's place and its position in the loop's body
("2.0" for the body's first step, whatever item it ran with; "2.0.1" inside a nested loop).
So every iteration of a loop body's step counts under one step, and a step repeated at two
places of a workflow (`expect status 200`) is two steps. A fork counts by its own positions.

A run is a step in a session (one or more attempts); it belongs to the UTC day its first
attempt started. An attempt's duration is wall-clock from `StepStarted` to `StepCompleted`
or `StepFailed` (a pause inside it included); a loop step's attempt ends when it expands. An
attempt cut short by its session's end has no duration and no outcome.

Tokens and cost are not kept here: they are the `ai_usage` view's, joined by session and step
at query time. An erased session's rows are deleted (its step texts were sealed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection, sql

from domain.session import WorkflowSession as W
from projections.view import Recorded, RowTable, SessionLog, erasures

INLINE_VERSION = 0
"""The version of a session sent inline: it ran no registered version."""
COMPLETED, FAILED, RUNNING = "completed", "failed", "running"


@dataclass
class AnalyzedSession:
    session_id: UUID
    tenant: str
    workflow: str
    workflow_version: int
    version: int
    """The last of the session's events this view applied."""
    places: list[str] = field(default_factory=list)
    """Each step's place, by its step index as of now (loops put steps in)."""
    texts: list[str] = field(default_factory=list)


@dataclass
class StepAttempt:
    session_id: UUID
    step_index: int
    attempt: int
    tenant: str
    workflow: str
    workflow_version: int
    place: str
    text: str
    day: date
    """The UTC day the attempt started."""
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int | None = None
    outcome: str = RUNNING
    error_code: str | None = None


AttemptKey = tuple[UUID, int, int]
APPLIED = (W.Created, W.StepStarted, W.StepCompleted, W.StepFailed, W.LoopExpanded, W.Erased)


def version_of(config: Mapping[str, Any]) -> int:
    """The registered version a session's config records, or 0 for an inline session."""
    workflow = config.get("workflow")
    if isinstance(workflow, Mapping) and isinstance(workflow.get("version"), int):
        return int(workflow["version"])
    return INLINE_VERSION


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date() if at.tzinfo else at.date()


def _created(recorded: Recorded, event: W.Created) -> AnalyzedSession:
    return AnalyzedSession(
        session_id=recorded.session_id,
        tenant=event.tenant,
        workflow=event.name,
        workflow_version=version_of(event.config),
        version=event.originator_version,
        places=[str(index) for index in range(len(event.steps))],
        texts=[step["text"] for step in event.steps],
    )


def _expanded(session: AnalyzedSession, event: W.LoopExpanded) -> None:
    """The iterations' steps put in after the loop, each at the place of its body's step."""
    header = event.step_index
    body = len(event.steps) // event.items if event.items else 1
    places = [f"{session.places[header]}.{number % body}" for number in range(len(event.steps))]
    session.places[header + 1 : header + 1] = places
    session.texts[header + 1 : header + 1] = [step["text"] for step in event.steps]


def _started(session: AnalyzedSession, recorded: Recorded, event: W.StepStarted) -> StepAttempt:
    index = event.step_index
    return StepAttempt(
        session_id=session.session_id,
        step_index=index,
        attempt=event.attempt,
        tenant=session.tenant,
        workflow=session.workflow,
        workflow_version=session.workflow_version,
        place=session.places[index],
        text=session.texts[index],
        day=utc_day(recorded.at),
        started_at=recorded.at,
    )


class Attempts:
    """The attempts of a batch's sessions, and the latest attempt of each of their steps."""

    def __init__(self, loaded: Sequence[StepAttempt]) -> None:
        self.rows: dict[AttemptKey, StepAttempt] = {}
        self.latest: dict[tuple[UUID, int], StepAttempt] = {}
        for attempt in sorted(loaded, key=lambda a: a.attempt):
            self.add(attempt)

    def add(self, attempt: StepAttempt) -> AttemptKey:
        key = (attempt.session_id, attempt.step_index, attempt.attempt)
        self.rows[key] = self.latest[(attempt.session_id, attempt.step_index)] = attempt
        return key

    def end(
        self, session_id: UUID, index: int, outcome: str, at: datetime, code: str | None = None
    ) -> AttemptKey | None:
        """End the step's attempt under way with `outcome`; the attempt's key, if one was."""
        attempt = self.latest.get((session_id, index))
        if attempt is None or attempt.outcome != RUNNING:
            return None
        attempt.outcome, attempt.finished_at, attempt.error_code = outcome, at, code
        attempt.duration_ms = int((at - attempt.started_at).total_seconds() * 1000)
        return (session_id, index, attempt.attempt)


def _evolve(session: AnalyzedSession, attempts: Attempts, recorded: Recorded) -> AttemptKey | None:
    """Fold one later event of the session; the attempt it changed, if any."""
    event, at, session_id = recorded.event, recorded.at, recorded.session_id
    match event:
        case W.StepStarted():
            return attempts.add(_started(session, recorded, event))
        case W.StepCompleted(step_index=index):
            return attempts.end(session_id, index, COMPLETED, at)
        case W.LoopExpanded(step_index=index):
            _expanded(session, event)
            return attempts.end(session_id, index, COMPLETED, at)
        case W.StepFailed(step_index=index, error=error):
            return attempts.end(session_id, index, FAILED, at, error.get("code"))
    return None


def fold(
    sessions: dict[UUID, AnalyzedSession],
    attempts: Attempts,
    batch: Sequence[Recorded],
) -> tuple[set[UUID], set[AttemptKey]]:
    """Apply a batch; returns the sessions and the attempts that changed."""
    sessions_changed: set[UUID] = set()
    attempts_changed: set[AttemptKey] = set()
    for recorded in batch:
        event, session_id = recorded.event, recorded.session_id
        if isinstance(event, W.Created):
            if session_id not in sessions:
                sessions[session_id] = _created(recorded, event)
                sessions_changed.add(session_id)
            continue
        session = sessions.get(session_id)
        if session is None or event.originator_version <= session.version:
            continue
        session.version = event.originator_version
        sessions_changed.add(session_id)
        changed = _evolve(session, attempts, recorded)
        if changed is not None:
            attempts_changed.add(changed)
    return sessions_changed, attempts_changed


class WorkflowAnalyticsView:
    name: ClassVar[str] = "workflow_analytics"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("analytics_sessions", "analytics_step_attempts")
    sessions = RowTable("analytics_sessions", AnalyzedSession, key=("session_id",), carried=True)
    attempts = RowTable(
        "analytics_step_attempts",
        StepAttempt,
        key=("session_id", "step_index", "attempt"),
        carried=True,  # the fold changes an attempt only to write it
    )

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS analytics_sessions (
                session_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                workflow text NOT NULL,
                workflow_version integer NOT NULL,
                version integer NOT NULL,
                places text[] NOT NULL,
                texts text[] NOT NULL
            )
            """
        )
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS analytics_step_attempts (
                session_id uuid NOT NULL,
                step_index integer NOT NULL,
                attempt integer NOT NULL,
                tenant text NOT NULL,
                workflow text NOT NULL,
                workflow_version integer NOT NULL,
                place text NOT NULL,
                text text NOT NULL,
                day date NOT NULL,
                started_at timestamptz NOT NULL,
                finished_at timestamptz,
                duration_ms bigint,
                outcome text NOT NULL,
                error_code text,
                PRIMARY KEY (session_id, step_index, attempt)
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS analytics_sessions_by_workflow "
            "ON analytics_sessions (tenant, workflow)"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS analytics_step_attempts_by_workflow "
            "ON analytics_step_attempts (tenant, workflow, workflow_version, day)"
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, APPLIED)]
        if not touched:
            return
        session_ids = {r.session_id for r in touched}
        sessions = {s.session_id: s for s in self.sessions.load_for_sessions(conn, session_ids)}
        attempts = Attempts(self.attempts.load_for_sessions(conn, session_ids))
        sessions_changed, attempts_changed = fold(sessions, attempts, touched)
        self.sessions.upsert(conn, (sessions[i] for i in sessions_changed))
        self.attempts.upsert(conn, (attempts.rows[k] for k in attempts_changed))
        erased = [r.session_id for r in erasures(touched)]
        self.sessions.delete_sessions(conn, erased)
        self.attempts.delete_sessions(conn, erased)


# ---- queries: exact aggregates of the attempts ------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Whose attempts, of which workflow (None: all), from the day `since` to `until` (UTC,
    both included; None: unbounded) by the day each run began."""

    tenant: str
    workflow: str | None = None
    since: date | None = None
    until: date | None = None

    def params(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "workflow": self.workflow,
            "since": self.since,
            "until": self.until,
        }


GROUPINGS = {
    "workflow": ("workflow", "workflow_version"),
    "step": ("workflow", "workflow_version", "place"),
    "day": ("day",),
}
"""What the counts can be grouped by: a workflow's version, a step of one, a day."""

_RUNS = """
WITH attempts AS (
    SELECT * FROM analytics_step_attempts
    WHERE tenant = %(tenant)s AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
), all_runs AS (
    SELECT session_id, step_index, workflow, workflow_version, place, min(text) AS text,
        min(day) AS day, count(*) AS attempts, bool_or(outcome = 'failed') AS failed_once,
        (array_agg(outcome ORDER BY attempt DESC))[1] AS outcome,
        (array_agg(error_code ORDER BY attempt DESC))[1] AS error_code
    FROM attempts GROUP BY session_id, step_index, workflow, workflow_version, place
), runs AS (
    SELECT * FROM all_runs
    WHERE (%(since)s::date IS NULL OR day >= %(since)s::date)
        AND (%(until)s::date IS NULL OR day <= %(until)s::date)
), timed AS (
    SELECT r.workflow, r.workflow_version, r.place, r.day, a.duration_ms
    FROM runs r JOIN attempts a USING (session_id, step_index)
    WHERE a.duration_ms IS NOT NULL
)
"""


@dataclass(frozen=True)
class Counts:
    """Runs of steps and how they ended, with their attempts' durations (ms)."""

    group: tuple[Any, ...]
    text: str
    sessions: int
    runs: int
    completed: int
    failed: int
    retries: int
    passed_on_retry: bool
    """A run of it failed and then passed on a retry."""
    p50_ms: int | None
    p95_ms: int | None

    @property
    def flaky(self) -> bool:
        """Failed then passed on a retry, or passed in some runs and failed in others."""
        return self.passed_on_retry or (self.completed > 0 and self.failed > 0)


def _grouped(
    text: str, by: str, table: Callable[[str], str] | None = None, after_runs: bool = True
) -> bytes:
    """The statement (after the `_RUNS` it reads, unless not `after_runs`) with `{columns}`
    the grouping's columns (of table `table(column)`, if given)."""
    names = [
        sql.Identifier(column) if table is None else sql.Identifier(table(column), column)
        for column in GROUPINGS[by]
    ]
    statement = sql.SQL(text).format(columns=sql.SQL(", ").join(names))
    return (sql.SQL(_RUNS) + statement if after_runs else statement).as_bytes()


def counts(conn: Connection[Any], selection: Selection, by: str) -> list[Counts]:
    """The runs of the selection grouped `by` one of GROUPINGS, in its order. Percentiles
    are `percentile_disc`: the least duration with at least 50 (95) % of the attempts at or
    below it, an attempt's own duration, exact."""
    statement = _grouped(
        """
        , counted AS (
            SELECT {columns}, min(text) AS text, count(DISTINCT session_id) AS sessions,
                count(*) AS runs, count(*) FILTER (WHERE outcome = 'completed') AS completed,
                count(*) FILTER (WHERE outcome = 'failed') AS failed,
                sum(attempts - 1) AS retries,
                bool_or(failed_once AND outcome = 'completed') AS passed_on_retry
            FROM runs GROUP BY {columns}
        ), durations AS (
            SELECT {columns},
                percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
                percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
            FROM timed GROUP BY {columns}
        )
        SELECT {columns}, text, sessions, runs, completed, failed, retries, passed_on_retry,
            p50_ms, p95_ms
        FROM counted LEFT JOIN durations USING ({columns}) ORDER BY {columns}
        """,
        by,
    )
    width = len(GROUPINGS[by])
    rows = conn.execute(statement, selection.params()).fetchall()
    return [_counts(tuple(row[:width]), *row[width:]) for row in rows]


def _counts(group: tuple[Any, ...], text: str, *numbers: Any) -> Counts:
    sessions, runs, completed, failed, retries, passed_on_retry, p50, p95 = numbers
    return Counts(
        group=group,
        text=text,
        sessions=int(sessions),
        runs=int(runs),
        completed=int(completed),
        failed=int(failed),
        retries=int(retries),
        passed_on_retry=bool(passed_on_retry),
        p50_ms=None if p50 is None else int(p50),
        p95_ms=None if p95 is None else int(p95),
    )


def failures(
    conn: Connection[Any], selection: Selection, by: str
) -> dict[tuple[Any, ...], dict[str, int]]:
    """Runs that failed for good, by their last attempt's error code, grouped `by`."""
    statement = _grouped(
        """
        SELECT {columns}, coalesce(error_code, 'UNKNOWN') AS code, count(*) FROM runs
        WHERE outcome = 'failed' GROUP BY {columns}, code ORDER BY {columns}, code
        """,
        by,
    )
    width = len(GROUPINGS[by])
    found: dict[tuple[Any, ...], dict[str, int]] = {}
    for row in conn.execute(statement, selection.params()).fetchall():
        found.setdefault(tuple(row[:width]), {})[row[width]] = int(row[width + 1])
    return found


@dataclass(frozen=True)
class Tokens:
    group: tuple[Any, ...]
    model: str
    prompt_tokens: int
    completion_tokens: int


def tokens(conn: Connection[Any], selection: Selection, by: str) -> list[Tokens]:
    """The model's tokens on the selection's steps (the `ai_usage` view's, counted on the day
    of their turn), grouped `by` and by model."""
    statement = _grouped(
        """
        SELECT {columns}, u.model, sum(u.prompt_tokens), sum(u.completion_tokens)
        FROM ai_usage u JOIN (
            SELECT DISTINCT session_id, step_index, workflow, workflow_version, place
            FROM analytics_step_attempts
            WHERE tenant = %(tenant)s AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
        ) r USING (session_id, step_index)
        WHERE u.tenant = %(tenant)s
            AND (%(since)s::date IS NULL OR u.day >= %(since)s::date)
            AND (%(until)s::date IS NULL OR u.day <= %(until)s::date)
        GROUP BY {columns}, u.model ORDER BY {columns}, u.model
        """,
        by,
        lambda column: "u" if column == "day" else "r",
        after_runs=False,
    )
    width = len(GROUPINGS[by])
    return [
        Tokens(tuple(row[:width]), row[width], int(row[width + 1]), int(row[width + 2]))
        for row in conn.execute(statement, selection.params()).fetchall()
    ]


def has_workflow(conn: Connection[Any], tenant: str, workflow: str) -> bool:
    """Whether the tenant has a session of the workflow."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM analytics_sessions WHERE tenant = %s AND workflow = %s)",
        (tenant, workflow),
    ).fetchone()
    return bool(row and row[0])
