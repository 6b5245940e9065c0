"""audit_log: every event in the store — who changed what, when."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import class_row, tuple_row

from domain.batch import Batch
from domain.learning import LearnedActions
from domain.schedule import Schedule
from domain.session import ERASED
from domain.session import WorkflowSession as W
from domain.tenant import TenantPolicy
from domain.waits import described
from domain.workflow import Workflow
from projections.view import Recorded, RowTable, SessionLog, erasures


@dataclass
class AuditEntry:
    position: int
    session_id: UUID
    tenant: str
    event_type: str
    actor: str
    occurred_at: datetime
    description: str


def event_type(event: object) -> str:
    """The event's name; a batch's, a schedule's, a tenant policy's and a workflow's are
    prefixed, so `Created` stays a session's."""
    kind = type(event)
    name = _TYPE_NAMES.get(kind)
    if name is not None:
        return name
    if isinstance(event, W.Redacted):  # its own name, never one of its class
        return event.event_type
    name = _TYPE_NAMES[kind] = _type_name(event)
    return name


_TYPE_NAMES: dict[type, str] = {}
"""Each class's `event_type`, worked out once (every event of the log has one)."""


def _type_name(event: object) -> str:
    name = type(event).__name__
    if isinstance(event, Batch.Event):
        return f"Batch.{name}"
    if isinstance(event, Schedule.Event):
        return f"Schedule.{name}"
    if isinstance(event, TenantPolicy.Event):
        return f"TenantPolicy.{name}"
    if isinstance(event, Workflow.Event):
        return f"Workflow.{name}"
    if isinstance(event, LearnedActions.Event):
        return f"LearnedActions.{name}"
    return name


def describe(event: object) -> str:  # noqa: PLR0911, PLR0912, PLR0915 - one case per event type
    """A short sentence for a person reading the trail."""
    # The session's most frequent events first: a case is an isinstance check, and this runs
    # for every event of the log.
    match event:
        case W.StepStarted(step_index=index, attempt=attempt):
            return f"started step {index} (attempt {attempt})"
        case W.CommandIssued(step_index=index, command_id=command_id, executor=ex, name=name):
            return f"issued {ex}.{name} ({command_id}) in step {index}"
        case W.CommandFinished(command_id=command_id, ok=ok, duration_ms=ms, error=error):
            outcome = "ok" if ok else f"failed: {error['code'] if error else 'error'}"
            return f"command {command_id} {outcome} in {ms} ms"
        case W.Checked(step_index=index, executor=ex, name=name, ok=ok, error=error):
            verdict = "passed" if ok else f"failed: {error['code'] if error else 'error'}"
            return f"checked {ex}.{name} in step {index}: {verdict}"
        case W.StepCompleted(step_index=index):
            return f"completed step {index}"
        case W.TurnRecorded(step_index=index, turn=turn, model=model):
            return f"recorded turn {turn} of step {index} ({model})"
        case W.Created(name=name, replay_of=dict(replay_of)):
            return f'created "{name}", a replay of {replay_of["session_id"]}'
        case W.Created(name=name, forked_from=dict(fork)):
            return f'created "{name}", a fork of {fork["session_id"]} from step {fork["step"]}'
        case W.Created(name=name, steps=steps):
            return f'created "{name}" with {len(steps)} steps'
        case W.StepsCarriedOver(steps=steps):
            return f"carried over steps 0 to {len(steps) - 1}, completed in the source"
        case W.StepReplayed(step_index=index, turns_saved=turns):
            return f"replayed step {index} without the model ({turns} model turns saved)"
        case W.ReplayDiverged(step_index=index, executor=ex, name=name, got=got):
            return f"replay diverged in step {index} at {ex}.{name}: got {got}"
        case W.LearnedActionUsed(step_index=index, hit=True, tokens_saved=tokens):
            return f"did step {index} as learned, without the model ({tokens} tokens saved)"
        case W.LearnedActionUsed(step_index=index, miss=miss):
            where = f" at {miss.get('executor')}.{miss.get('name')}" if miss else ""
            return f"learned action of step {index} missed{where}: the model takes over"
        case W.StepFailed(step_index=index, error=error, retryable=retryable):
            again = ", retryable" if retryable else ""
            return f"step {index} failed: {error.get('code')}{again}"
        case W.StepSkipped(step_index=index, reason=reason):
            return f"step {index} {reason}"
        case W.LoopExpanded(step_index=index, items=items, steps=steps):
            return f"loop step {index} came up over {items} items: {len(steps)} steps put after it"
        case W.ContinuedAfterFailure(step_index=index):
            return f"went on past failed step {index} (on_failure: continue)"
        case W.WaitStarted(step_index=index, kind=kind, question=question, signal=signal):
            until = f" until {event.due_at.isoformat()}" if event.due_at else ""
            return f"step {index} waits for {described(kind, question, signal)}{until}"
        case W.WaitEnded(step_index=index, kind=kind, outcome=outcome, comment=comment):
            said = f": {comment}" if comment else ""
            return f"{kind} of step {index} {outcome.replace('_', ' ')}{said}"
        case W.SignalReceived(name=name):
            return f"received signal {name}"
        case W.Paused(reason=reason) | W.Resumed(reason=reason) | W.Cancelled(reason=reason):
            verb = type(event).__name__.lower()
            return f"{verb}: {reason}" if reason else verb
        case W.Completed(outcome=outcome):
            return f"completed: {outcome}"
        case W.WebhookDeliveryFailed(event_type=kind, url=url, attempts=attempts):
            return f"gave up on the {kind} webhook to {url} after {attempts} attempts"
        case W.Failed(error=error) | W.Expired(error=error):
            return f"{type(event).__name__.lower()}: {error.get('code')}"
        case W.Erased(reason=reason):
            return f"erased: {reason}" if reason else "erased"
        case W.Redacted():
            return ERASED
        case Batch.Created(session_ids=session_ids):
            return f"created a batch of {len(session_ids)} sessions"
        case Batch.Cancelled(reason=reason):
            return f"cancelled the batch: {reason}" if reason else "cancelled the batch"
        case Schedule.Created(name=name, timing=timing):
            return f'created the schedule "{name}" ({timing["cron"] or "every " + timing["every"]})'
        case Schedule.Changed(changes=changes):
            return "changed the schedule: " + ", ".join(sorted(changes))
        case Schedule.Fired(fired_at=fired_at, session_id=session_id):
            return f"fired for {fired_at}: session {session_id}"
        case Schedule.FiringRefused(fired_at=fired_at, error=error):
            return f"refused the firing for {fired_at}: {error.get('code')}"
        case Schedule.FiringsLetGo(through=through):
            return f"let go of the firings missed up to {through} (catch_up: none)"
        case Schedule.Paused() | Schedule.Resumed() | Schedule.Deleted():
            return f"{type(event).__name__.lower()} the schedule"
        case TenantPolicy.Created(tenant=tenant):
            return f"created the policy of tenant {tenant}"
        case TenantPolicy.PolicySet(changes=changes):
            return "set the tenant's policy: " + ", ".join(
                f"{name}={value}" for name, value in sorted(changes.items())
            )
        case Workflow.Created(name=name):
            return f'registered the workflow "{name}"'
        case Workflow.Pushed(version=version, sha256=sha256):
            return f"pushed version {version} ({sha256[:12]})"
        case Workflow.RolledBack(to_version=to_version, from_version=from_version):
            return f"rolled back to version {to_version} (from {from_version})"
        case LearnedActions.Created(tenant=tenant):
            return f"started the learned actions of tenant {tenant}"
        case LearnedActions.Forgotten(action_id=action_id):
            return f"forgot learned action {action_id}"
    return event_type(event)


class AuditLogView:
    name: ClassVar[str] = "audit_log"
    version: ClassVar[int] = 2  # 2: batch events are filed under their batch's tenant
    tables: ClassVar[tuple[str, ...]] = ("audit_log",)
    rows = RowTable("audit_log", AuditEntry, key=("position",))

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS audit_log (
                position bigint PRIMARY KEY,
                session_id uuid NOT NULL,
                tenant text NOT NULL,
                event_type text NOT NULL,
                actor text NOT NULL,
                occurred_at timestamptz NOT NULL,
                description text NOT NULL
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS audit_log_by_session ON audit_log (session_id, position)"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant, position)"
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        tenants = {
            r.session_id: r.event.tenant
            for r in batch
            # A batch's, a schedule's, a policy's and a workflow's events are filed under
            # their tenant.
            if isinstance(
                r.event,
                W.Created
                | Batch.Created
                | Schedule.Created
                | TenantPolicy.Created
                | Workflow.Created
                | LearnedActions.Created,
            )
        }
        unknown = list({r.session_id for r in batch} - tenants.keys())
        if unknown:
            with conn.cursor(row_factory=tuple_row) as cursor:
                found = cursor.execute(
                    "SELECT DISTINCT ON (session_id) session_id, tenant FROM audit_log "
                    "WHERE session_id = ANY(%s)",
                    (unknown,),
                ).fetchall()
            tenants.update(dict(found))
        self.rows.upsert(
            conn,
            (
                AuditEntry(
                    position=r.position,
                    session_id=r.session_id,
                    tenant=tenants.get(r.session_id, ""),
                    event_type=event_type(r.event),
                    actor=getattr(r.event, "actor", ""),
                    occurred_at=r.at,
                    description=describe(r.event),
                )
                for r in batch
            ),
        )
        for erased in erasures(batch):
            _redact(conn, erased)


def _redact(conn: Connection[Any], erased: Recorded) -> None:
    """An erased session's entries keep who did what and when; what was said goes."""
    conn.execute(
        "UPDATE audit_log SET description = %s WHERE session_id = %s AND position < %s",
        (ERASED, erased.session_id, erased.position),
    )


def _of_a_step(cls: object) -> bool:
    """A session event whose fields name a step."""
    if not (isinstance(cls, type) and issubclass(cls, W.Event) and is_dataclass(cls)):
        return False
    return "step_index" in {f.name for f in fields(cls)}


PER_STEP_EVENTS = tuple(sorted(name for name, cls in vars(W).items() if _of_a_step(cls)))
"""The events of one step (started, turns, commands, checks, its end): what `per_step=False`
leaves out, so the session-level changes — created, paused, cancelled, ended — stand out."""


@dataclass(frozen=True)
class AuditFilter:
    tenant: str | None = None
    session_id: UUID | None = None
    actor: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    per_step: bool = True


def entries(
    conn: Connection[Any],
    where: AuditFilter,
    limit: int = 100,
    after: int = 0,
    *,
    newest_first: bool = False,
    before: int | None = None,
) -> list[AuditEntry]:
    """Oldest first, after `after`; or newest first, before `before` if given. Pass the last
    entry's position as `after` (or `before`) for the next page."""
    conditions: list[sql.Composable] = [sql.SQL("position > %s")]
    params: list[Any] = [after]
    if before is not None:
        conditions.append(sql.SQL("position < %s"))
        params.append(before)
    for column, value in (
        ("tenant", where.tenant),
        ("session_id", where.session_id),
        ("actor", where.actor),
        ("event_type", where.event_type),
    ):
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if where.since is not None:
        conditions.append(sql.SQL("occurred_at >= %s"))
        params.append(where.since)
    if where.until is not None:
        conditions.append(sql.SQL("occurred_at < %s"))
        params.append(where.until)
    if not where.per_step:
        conditions.append(sql.SQL("NOT event_type = ANY(%s)"))
        params.append(list(PER_STEP_EVENTS))
    query = sql.SQL(
        "SELECT {columns} FROM audit_log WHERE {conditions} ORDER BY position {order} LIMIT %s"
    ).format(
        columns=sql.SQL(AuditLogView.rows.names),
        conditions=sql.SQL(" AND ").join(conditions),
        order=sql.SQL("DESC" if newest_first else "ASC"),
    )
    with conn.cursor(row_factory=class_row(AuditEntry)) as cursor:
        return cursor.execute(query, [*params, limit]).fetchall()
