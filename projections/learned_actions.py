"""learned_actions: what each AI step did to complete, per tenant, to do again without the model.

When an attempt of a step completes after the model decided it (it has turns, and neither
replayed a source nor did a learned action that held), its commands and checks that
succeeded, in order, become a new *version* of the learned action of its key (see
`domain.learning`): its tenant, workflow, step text, executor and starting point. The version
before it is kept, marked superseded, for the audit. Args are as the log holds them: a secret
is its `{{secrets.NAME}}` placeholder. A failed command is left out: it taught the model
something, it did not move the step on.

Each action also counts how often it held (`hits`) and missed, from `LearnedActionUsed`.
A tenant's `LearnedActions.Forgotten` marks the versions learned until then forgotten: a
rebuild forgets them again. An erased session's state is deleted, and so are the actions it
taught (they hold its step text and commands).

Per session under way that can teach or count something — one where the model took a turn or a
learned action was tried (`TRIGGERS`) — it keeps what it needs to fold: the session's key
parts, the last page it went to (`domain.learning.starting_point`) and its steps' latest
attempts; an ended session's are dropped. Most sessions never get there (no AI step), and the
view skips their events without a row: at a session's first turn it reads the session's events
before it back from the log (the `SessionLog` the projector gives every view) and folds them
then, as it would have as they went by. Read by position, that is the same live and in a
rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection
from psycopg.rows import class_row

from domain.learning import (
    INTERRUPTED,
    LearnedActions,
    LearnedKey,
    essentials,
    start_base,
    starting_point,
    target_of,
    workflow_identity,
)
from domain.session import WorkflowSession as W
from projections.view import Recorded, RowTable, SessionLog, erasures

HIT, MISS = "hit", "miss"


@dataclass
class LearningSession:
    session_id: UUID
    tenant: str
    workflow: str
    executor: str
    base_url: str | None
    """What its starting points are relative to (`domain.learning.start_base`)."""
    learns: bool
    version: int
    texts: list[str] = field(default_factory=list)
    last_target: str | None = None


@dataclass
class LearningAttempt:
    """A step's latest attempt, as far as the log has come."""

    session_id: UUID
    step_index: int
    attempt: int
    start: str
    started_at: datetime
    turns: int = 0
    tokens: int = 0
    recipe: dict[str, Any] = field(default_factory=lambda: {"commands": []})
    """{"commands": [{"executor", "name", "args", "expected"}]}: what succeeded, in order."""
    pending: dict[str, Any] = field(default_factory=dict)
    """Commands issued and not yet finished, by command id."""
    used: str = ""
    """HIT or MISS if the attempt tried a learned action."""
    replayed: bool = False
    waited: bool = False
    """The model asked a person's approval in it: never learned, so a later run cannot do
    what a person approved here without asking again."""


@dataclass
class LearnedAction:
    action_id: UUID
    version: int
    """The log position of the completion that taught it: a later version is a greater
    number (a rebuild gives the same, whatever sessions were erased meanwhile)."""
    tenant: str
    workflow: str
    step_text: str
    executor: str
    start: str
    recipe: dict[str, Any]
    turns: int
    tokens: int
    seconds: float
    """How long the learning attempt took, from its start to its completion."""
    source_session_id: UUID
    learned_at: datetime
    superseded: bool = False
    forgotten: bool = False
    hits: int = 0
    misses: int = 0

    @property
    def commands(self) -> list[dict[str, Any]]:
        return list(self.recipe.get("commands", []))


APPLIED = (
    W.LoopExpanded,
    W.StepStarted,
    W.TurnRecorded,
    W.CommandIssued,
    W.CommandFinished,
    W.Checked,
    W.LearnedActionUsed,
    W.StepReplayed,
    W.WaitStarted,
    W.StepCompleted,
    W.Erased,
    W.Redacted,
    LearnedActions.Forgotten,
    W.Completed,
    W.Failed,
    W.Cancelled,
    W.Expired,
)
ENDS = (W.Completed, W.Failed, W.Cancelled, W.Expired, W.Erased)
TRIGGERS = (W.TurnRecorded, W.LearnedActionUsed)
"""Only an attempt with a turn of the model can teach, only one that tried a learned action
can count: a session gets rows at its first of these (an erased session's come back
`Redacted`, and start nothing)."""
ActionKey = tuple[UUID, int]
Versions = Callable[[UUID], list[LearnedAction]]
Earlier = Callable[[UUID, int], list[Recorded]]
"""A session's events before a position, from the log."""


def _created(recorded: Recorded, event: W.Created) -> LearningSession:
    texts = [step["text"] for step in event.steps]
    config = event.config
    return LearningSession(
        session_id=recorded.session_id,
        tenant=event.tenant,
        workflow=workflow_identity(event.name, config, texts),
        executor=str(config.get("executor") or "http"),
        base_url=start_base(config),
        learns=config.get("learn") is not False and event.replay_of is None,
        version=event.originator_version,
        texts=texts,
    )


class Learned:
    """The actions a batch touches, every version of each: loaded when first needed,
    changed in memory."""

    def __init__(self, versions_of: Versions) -> None:
        self._versions_of = versions_of
        self.rows: dict[ActionKey, LearnedAction] = {}
        self._loaded: set[UUID] = set()
        self.changed: set[ActionKey] = set()

    def versions(self, action_id: UUID) -> list[LearnedAction]:
        if action_id not in self._loaded:
            self._loaded.add(action_id)
            for row in self._versions_of(action_id):
                self.rows[(row.action_id, row.version)] = row
        return [row for key, row in self.rows.items() if key[0] == action_id]

    def current(self, action_id: UUID) -> LearnedAction | None:
        return max(self.versions(action_id), key=lambda row: row.version, default=None)

    def learn(self, action: LearnedAction) -> None:
        """Add `action` as its key's latest version, the one before it superseded."""
        before = self.current(action.action_id)
        if before is not None:
            before.superseded = True
            self.changed.add((before.action_id, before.version))
        self.rows[(action.action_id, action.version)] = action
        self.changed.add((action.action_id, action.version))

    def count_use(self, action_id: UUID, version: int, hit: bool) -> None:
        action = self.rows.get((action_id, version))
        if action is None and action_id not in self._loaded:
            self.versions(action_id)
            action = self.rows.get((action_id, version))
        if action is None:
            return  # a use of a version since deleted (its session erased)
        if hit:
            action.hits += 1
        else:
            action.misses += 1
        self.changed.add((action.action_id, action.version))


def _finished(attempt: LearningAttempt, event: W.CommandFinished) -> None:
    issued = attempt.pending.pop(event.command_id, None)
    interrupted = event.error is not None and event.error.get("code") == INTERRUPTED
    if issued is None or not event.ok or interrupted:
        return
    expected = essentials(issued["executor"], issued["name"], event.ok, event.output)
    attempt.recipe["commands"].append({**issued, "expected": expected})


def _checked(attempt: LearningAttempt, event: W.Checked) -> None:
    if event.ok:
        expected = essentials(event.executor, event.name, event.ok, event.output)
        attempt.recipe["commands"].append(
            {
                "executor": event.executor,
                "name": event.name,
                "args": event.args,
                "expected": expected,
            }
        )


def _completed(
    session: LearningSession, attempt: LearningAttempt, recorded: Recorded, learned: Learned
) -> None:
    """The attempt completed: if the model decided it, what it did is the key's next version."""
    if not session.learns or attempt.turns == 0 or attempt.used == HIT or attempt.replayed:
        return
    if attempt.waited:
        return
    if getattr(recorded.event, "data", None) is not None:  # extracted: the model's reading
        return  # of the page is the result, which doing the commands again would not give
    if not attempt.recipe["commands"]:
        return
    key = LearnedKey(
        session.tenant,
        session.workflow,
        session.texts[attempt.step_index],
        session.executor,
        attempt.start,
    )
    learned.learn(
        LearnedAction(
            action_id=key.action_id,
            version=recorded.position,
            tenant=key.tenant,
            workflow=key.workflow,
            step_text=key.step_text,
            executor=key.executor,
            start=key.start,
            recipe={"commands": list(attempt.recipe["commands"])},
            turns=attempt.turns,
            tokens=attempt.tokens,
            seconds=round((recorded.at - attempt.started_at).total_seconds(), 3),
            source_session_id=session.session_id,
            learned_at=recorded.at,
        )
    )


def _evolve(
    session: LearningSession,
    attempts: dict[tuple[UUID, int], LearningAttempt],
    recorded: Recorded,
    learned: Learned,
) -> tuple[UUID, int] | None:
    """Fold one later event of the session; the attempt it changed, if any."""
    event = recorded.event
    index = getattr(event, "step_index", None)
    key = (session.session_id, index) if isinstance(index, int) else None
    attempt = attempts.get(key) if key is not None else None
    match event:
        case W.LoopExpanded(step_index=header):
            session.texts[header + 1 : header + 1] = [step["text"] for step in event.steps]
            return None
        case W.StepStarted(step_index=started, attempt=number):
            start = starting_point(session.executor, session.base_url, session.last_target)
            attempts[(session.session_id, started)] = LearningAttempt(
                session.session_id, started, number, start, recorded.at
            )
            return (session.session_id, started)
        case W.CommandIssued(executor=executor, name=name, args=args):
            session.last_target = target_of(executor, name, args) or session.last_target
            if attempt is None:
                return None
            attempt.pending[event.command_id] = {"executor": executor, "name": name, "args": args}
        case W.TurnRecorded() if attempt is not None:
            attempt.turns += 1
            attempt.tokens += event.prompt_tokens + event.completion_tokens
        case W.CommandFinished() if attempt is not None:
            _finished(attempt, event)
        case W.Checked() if attempt is not None:
            _checked(attempt, event)
        case W.LearnedActionUsed(hit=hit) if attempt is not None:
            attempt.used = HIT if hit else MISS
        case W.StepReplayed() if attempt is not None:
            attempt.replayed = True
        case W.WaitStarted() if attempt is not None:
            attempt.waited = True
        case W.StepCompleted() if attempt is not None:
            _completed(session, attempt, recorded, learned)
        case _:
            return None
    return key


def _forgotten(learned: Learned, event: LearnedActions.Forgotten, position: int) -> None:
    """Every version of the action its tenant learned before the forgetting, in the log's
    order (a version is the position that taught it; clocks of processes may disagree)."""
    for row in learned.versions(UUID(event.action_id)):
        if row.tenant == event.tenant and row.version < position and not row.forgotten:
            row.forgotten = True
            learned.changed.add((row.action_id, row.version))


def _used(event: W.Event) -> tuple[UUID, int, bool] | None:
    """Which action and version a `LearnedActionUsed` used and whether it held; also when
    its session was erased (those fields stay clear), so a rebuild counts it again."""
    if isinstance(event, W.Redacted) and event.event_type != W.LearnedActionUsed.__name__:
        return None
    if not isinstance(event, W.LearnedActionUsed | W.Redacted):
        return None
    used: Any = event
    return UUID(used.action_id), int(used.action_version), bool(used.hit)


def _caught_up(
    sessions: dict[UUID, LearningSession],
    attempts: dict[tuple[UUID, int], LearningAttempt],
    learned: Learned,
    earlier: list[Recorded],
) -> LearningSession | None:
    """The session as its events before its first turn left it, folded now from the log as they
    would have been as they went by (none of them can teach: no attempt had a turn yet)."""
    first = earlier[0] if earlier else None
    if first is None or not isinstance(first.event, W.Created):
        return None
    session = sessions[first.session_id] = _created(first, first.event)
    for recorded in earlier[1:]:
        session.version = recorded.event.originator_version
        _evolve(session, attempts, recorded, learned)
    return session


def fold(
    sessions: dict[UUID, LearningSession],
    attempts: dict[tuple[UUID, int], LearningAttempt],
    learned: Learned,
    batch: Sequence[Recorded],
    earlier: Earlier,
) -> tuple[set[UUID], set[tuple[UUID, int]]]:
    """Apply a batch; returns the sessions and the attempts that changed (the actions that
    changed are `learned.changed`). `sessions` holds the rows of the batch's sessions that
    have them; a session without one gets one at its first of `TRIGGERS`."""
    sessions_changed: set[UUID] = set()
    attempts_changed: set[tuple[UUID, int]] = set()
    for recorded in batch:
        event, session_id = recorded.event, recorded.session_id
        if isinstance(event, LearnedActions.Forgotten):
            _forgotten(learned, event, recorded.position)
            continue
        if (use := _used(event)) is not None:
            learned.count_use(*use)
        session = sessions.get(session_id)
        if session is None:
            if not isinstance(event, TRIGGERS):
                continue
            before = earlier(session_id, recorded.position)
            session = _caught_up(sessions, attempts, learned, before)
            if session is None:
                continue
            attempts_changed.update(key for key in attempts if key[0] == session_id)
        if event.originator_version <= session.version:
            continue
        session.version = event.originator_version
        sessions_changed.add(session_id)
        changed = _evolve(session, attempts, recorded, learned)
        if changed is not None:
            attempts_changed.add(changed)
    return sessions_changed, attempts_changed


class LearnedActionsView:
    name: ClassVar[str] = "learned_actions"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = (
        "learned_actions",
        "learning_sessions",
        "learning_attempts",
    )
    actions = RowTable("learned_actions", LearnedAction, key=("action_id", "version"))
    sessions = RowTable("learning_sessions", LearningSession, key=("session_id",), carried=True)
    attempts = RowTable("learning_attempts", LearningAttempt, key=("session_id", "step_index"))

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS learned_actions (
                action_id uuid NOT NULL,
                version bigint NOT NULL,
                tenant text NOT NULL,
                workflow text NOT NULL,
                step_text text NOT NULL,
                executor text NOT NULL,
                start text NOT NULL,
                recipe jsonb NOT NULL,
                turns integer NOT NULL,
                tokens bigint NOT NULL,
                seconds double precision NOT NULL,
                source_session_id uuid NOT NULL,
                learned_at timestamptz NOT NULL,
                superseded boolean NOT NULL,
                forgotten boolean NOT NULL,
                hits integer NOT NULL,
                misses integer NOT NULL,
                PRIMARY KEY (action_id, version)
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS learned_actions_by_tenant "
            "ON learned_actions (tenant, learned_at)"
        )
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS learning_sessions (
                session_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                workflow text NOT NULL,
                executor text NOT NULL,
                base_url text,
                learns boolean NOT NULL,
                version integer NOT NULL,
                texts text[] NOT NULL,
                last_target text
            )
            """
        )
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS learning_attempts (
                session_id uuid NOT NULL,
                step_index integer NOT NULL,
                attempt integer NOT NULL,
                start text NOT NULL,
                started_at timestamptz NOT NULL,
                turns integer NOT NULL,
                tokens bigint NOT NULL,
                recipe jsonb NOT NULL,
                pending jsonb NOT NULL,
                used text NOT NULL,
                replayed boolean NOT NULL,
                waited boolean NOT NULL,
                PRIMARY KEY (session_id, step_index)
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, APPLIED)]
        if not touched:
            return
        sessions = {
            s.session_id: s
            for s in self.sessions.load_for_sessions(conn, {r.session_id for r in touched})
        }
        held = set(sessions)
        """The sessions that had rows before the batch: the only ones with rows to delete."""
        attempts = {
            (a.session_id, a.step_index): a for a in self.attempts.load_for_sessions(conn, held)
        }
        learned = Learned(lambda action_id: _versions(conn, action_id))

        def earlier(session_id: UUID, position: int) -> list[Recorded]:
            return log.before(conn, session_id, position)

        sessions_changed, attempts_changed = fold(sessions, attempts, learned, touched, earlier)
        # An ended session teaches nothing more: what the fold kept of it is dropped.
        ended = {r.session_id for r in touched if isinstance(r.event, ENDS)}
        self.sessions.upsert(conn, (sessions[i] for i in sessions_changed - ended))
        self.attempts.upsert(conn, (attempts[k] for k in attempts_changed if k[0] not in ended))
        self.actions.upsert(conn, (learned.rows[k] for k in learned.changed))
        self.sessions.delete_sessions(conn, ended & held)
        self.attempts.delete_sessions(conn, ended & held)
        erased = [r.session_id for r in erasures(touched)]
        if erased:
            _forget_erased(conn, erased)


_UNSUPERSEDED = """
UPDATE learned_actions l SET superseded = false
FROM (SELECT action_id, max(version) AS version FROM learned_actions
      WHERE action_id = ANY(%s) GROUP BY action_id) latest
WHERE l.action_id = latest.action_id AND l.version = latest.version
"""


def _forget_erased(conn: Connection[Any], erased: list[UUID]) -> None:
    """Delete the actions the erased sessions taught; where one was its key's latest, the
    version before it is the latest again (as a rebuild, which never sees it, finds)."""
    deleted = conn.execute(
        "DELETE FROM learned_actions WHERE source_session_id = ANY(%s) RETURNING action_id",
        (erased,),
    ).fetchall()
    if deleted:
        conn.execute(_UNSUPERSEDED, (list({row[0] for row in deleted}),))


def _versions(conn: Connection[Any], action_id: UUID) -> list[LearnedAction]:
    with conn.cursor(row_factory=class_row(LearnedAction)) as cursor:
        return cursor.execute(
            f"SELECT {LearnedActionsView.actions.names} FROM learned_actions "  # noqa: S608
            "WHERE action_id = %s",
            (action_id,),
        ).fetchall()


# ---- queries: always one tenant's ---------------------------------------------------------


def current(conn: Connection[Any], key: LearnedKey) -> LearnedAction | None:
    """The action to try for `key`: its latest version, unless forgotten; only ever the
    key's own tenant's (the tenant is part of the id, and asked again here)."""
    with conn.cursor(row_factory=class_row(LearnedAction)) as cursor:
        return cursor.execute(
            f"SELECT {LearnedActionsView.actions.names} FROM learned_actions "  # noqa: S608
            "WHERE action_id = %s AND tenant = %s AND NOT superseded AND NOT forgotten",
            (key.action_id, key.tenant),
        ).fetchone()


def of_tenant(
    conn: Connection[Any], tenant: str, *, limit: int = 100, with_old: bool = False
) -> list[LearnedAction]:
    """The tenant's learned actions, newest first: each key's live version (every version,
    superseded and forgotten ones too, `with_old`)."""
    with conn.cursor(row_factory=class_row(LearnedAction)) as cursor:
        return cursor.execute(
            f"SELECT {LearnedActionsView.actions.names} FROM learned_actions "  # noqa: S608
            "WHERE tenant = %s AND (%s OR (NOT superseded AND NOT forgotten)) "
            "ORDER BY learned_at DESC, action_id, version DESC LIMIT %s",
            (tenant, with_old, limit),
        ).fetchall()


def versions(conn: Connection[Any], tenant: str, action_id: UUID) -> list[LearnedAction]:
    """Every version of one of the tenant's actions, newest first; none for another's."""
    with conn.cursor(row_factory=class_row(LearnedAction)) as cursor:
        return cursor.execute(
            f"SELECT {LearnedActionsView.actions.names} FROM learned_actions "  # noqa: S608
            "WHERE tenant = %s AND action_id = %s ORDER BY version DESC",
            (tenant, action_id),
        ).fetchall()
