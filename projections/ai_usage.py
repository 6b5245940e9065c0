"""ai_usage: the model's tokens per session, step, day (UTC) and model — what AI steps cost.

Tokens come from `TurnRecorded` events; a replayed step spends none. Cost is not stored: it is
tokens times the prices of the model at the time of the query (STEPLINE_AI_PRICES), so a price
change needs no rebuild. Each session's row in `ai_usage_sessions` holds its tenant and the
version of its last turn applied, so applying an event twice changes nothing. Only sessions
created and turns concern this view: a batch with neither costs it no statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection
from psycopg.rows import class_row

from domain.session import WorkflowSession as W
from projections.view import Recorded, RowTable, SessionLog


@dataclass
class Usage:
    session_id: UUID
    step_index: int
    day: date
    model: str
    tenant: str
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class SessionSeen:
    session_id: UUID
    tenant: str
    version: int


UsageKey = tuple[UUID, int, date, str]


def fold(
    sessions: dict[UUID, SessionSeen], usage: dict[UsageKey, Usage], batch: Sequence[Recorded]
) -> tuple[set[UUID], set[UsageKey]]:
    """Apply a batch; returns the sessions and the usage rows that changed."""
    seen_changed: set[UUID] = set()
    usage_changed: set[UsageKey] = set()
    for recorded in batch:
        event, session_id = recorded.event, recorded.session_id
        if isinstance(event, W.Created):
            if session_id not in sessions:
                sessions[session_id] = SessionSeen(session_id, event.tenant, 1)
                seen_changed.add(session_id)
            continue
        seen = sessions.get(session_id)
        if seen is None or not _a_turn(event) or event.originator_version <= seen.version:
            continue
        seen.version = event.originator_version
        seen_changed.add(session_id)
        # An erased session's turns are Redacted: their counts and model stay in clear.
        turn: Any = event
        key = (session_id, turn.step_index, recorded.at.date(), turn.model)
        row = usage.setdefault(key, Usage(*key, tenant=seen.tenant))
        row.turns += 1
        row.prompt_tokens += turn.prompt_tokens
        row.completion_tokens += turn.completion_tokens
        usage_changed.add(key)
    return seen_changed, usage_changed


def _a_turn(event: W.Event) -> bool:
    if isinstance(event, W.Redacted):
        return event.event_type == W.TurnRecorded.__name__
    return isinstance(event, W.TurnRecorded)


class AiUsageView:
    name: ClassVar[str] = "ai_usage"
    version: ClassVar[int] = 2  # 2: its sessions' version moves on turns only
    tables: ClassVar[tuple[str, ...]] = ("ai_usage", "ai_usage_sessions")
    rows = RowTable("ai_usage", Usage, key=("session_id", "step_index", "day", "model"))
    sessions = RowTable("ai_usage_sessions", SessionSeen, key=("session_id",), carried=True)

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS ai_usage (
                session_id uuid NOT NULL,
                step_index integer NOT NULL,
                day date NOT NULL,
                model text NOT NULL,
                tenant text NOT NULL,
                turns integer NOT NULL,
                prompt_tokens bigint NOT NULL,
                completion_tokens bigint NOT NULL,
                PRIMARY KEY (session_id, step_index, day, model)
            )
            """
        )
        conn.execute("CREATE INDEX IF NOT EXISTS ai_usage_by_tenant_day ON ai_usage (tenant, day)")
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS ai_usage_sessions (
                session_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                version integer NOT NULL
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, W.Created) or _a_turn(r.event)]
        if not touched:
            return
        session_ids = {r.session_id for r in touched}
        sessions = {s.session_id: s for s in self.sessions.load_for_sessions(conn, session_ids)}
        turned = {r.session_id for r in touched if _a_turn(r.event)}
        usage = {
            (u.session_id, u.step_index, u.day, u.model): u
            for u in self.rows.load_for_sessions(conn, turned)
        }
        seen_changed, usage_changed = fold(sessions, usage, touched)
        self.sessions.upsert(conn, (sessions[i] for i in seen_changed))
        self.rows.upsert(conn, (usage[k] for k in usage_changed))


def of_session(conn: Connection[Any], session_id: UUID) -> list[Usage]:
    """The session's usage rows, by step, day and model."""
    rows = AiUsageView.rows.load_for_sessions(conn, [session_id])
    return sorted(rows, key=lambda u: (u.step_index, u.day, u.model))


@dataclass(frozen=True)
class DailyUsage:
    day: date
    model: str
    sessions: int
    turns: int
    prompt_tokens: int
    completion_tokens: int


def of_tenant(
    conn: Connection[Any], tenant: str, since: date | None, until: date | None
) -> list[DailyUsage]:
    """The tenant's usage by day and model, between the days of `since` and `until`."""
    with conn.cursor(row_factory=class_row(DailyUsage)) as cursor:
        return cursor.execute(
            "SELECT day, model, count(DISTINCT session_id)::int AS sessions, "
            "sum(turns)::int AS turns, sum(prompt_tokens)::bigint AS prompt_tokens, "
            "sum(completion_tokens)::bigint AS completion_tokens FROM ai_usage "
            "WHERE tenant = %s AND (%s::date IS NULL OR day >= %s::date) "
            "AND (%s::date IS NULL OR day <= %s::date) GROUP BY day, model ORDER BY day, model",
            (tenant, since, since, until, until),
        ).fetchall()


def tokens_on(conn: Connection[Any], tenant: str, day: date) -> int:
    """The tokens the tenant's sessions used on `day` (UTC), as far as the view has seen."""
    row = conn.execute(
        "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM ai_usage "
        "WHERE tenant = %s AND day = %s",
        (tenant, day),
    ).fetchone()
    return int(row[0]) if row else 0
