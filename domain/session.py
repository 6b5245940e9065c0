"""The WorkflowSession aggregate: one run of an ordered list of plain-language steps.

Public methods are commands: they check the invariants and raise a DomainError, or record an
event through a private `@event` method whose body is the only place state changes — the same
body that rebuilds the session when its events are replayed.

    pending -> running <-> paused -> completed | failed | cancelled | expired
               running <-> waiting (an approval, a timer, a signal: see domain/waits.py)
"""

from __future__ import annotations

import json
import re
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidStateTransition, InvalidWorkflow
from domain.expressions import ROOTS, Expression, ExpressionError
from domain.extraction import Extraction, check_extraction
from domain.loops import (
    MAX_EXPANDED_STEPS,
    MAX_ITERATIONS,
    MAX_SESSION_EXPANSION_CHARS,
    VARIABLE,
    Loop,
    LoopRefused,
)
from domain.payloads import (
    ArtifactRef,
    CarriedStep,
    CompletedStep,
    ErrorPayload,
    ForkedFrom,
    ReplayOf,
)
from domain.step_policy import StepPolicy
from domain.waits import Wait, WaitKind, WaitOutcome

MAX_STEPS = 500
MAX_STEP_TEXT = 2_000
MAX_NAME = 200
MAX_LABELS = 50
MAX_LABEL_TEXT = 100
WORKER = "stepline"
"""The actor recorded on events the runtime causes by itself (the task loop, expiry)."""
ERASED = "[erased]"
"""What an erased session shows where its texts were."""


class SessionStatus(Enum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING = "waiting"
    """For an approval, a time or a signal: no worker drives it meanwhile."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in ENDED

    @property
    def is_runnable(self) -> bool:
        """A worker should drive it: pending or running (not paused, not ended)."""
        return self in RUNNABLE


ENDED = frozenset(
    {
        SessionStatus.COMPLETED,
        SessionStatus.FAILED,
        SessionStatus.CANCELLED,
        SessionStatus.EXPIRED,
    }
)
RUNNABLE = frozenset({SessionStatus.PENDING, SessionStatus.RUNNING})


def values(statuses: frozenset[SessionStatus]) -> list[str]:
    """The statuses as stored in the views, for queries."""
    return sorted(status.value for status in statuses)


class StepStatus(Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Its `if:` was false when it came up: done, without running."""


class StepViewStatus(StrEnum):
    """A step as the step history view shows it: its own status (`StepStatus`); paused or
    waiting while its session is, the step under way; or its session's ending (failed,
    cancelled, expired) when the session ended with the step under way. Rows store the value."""

    PENDING = StepStatus.PENDING.value
    RUNNING = StepStatus.RUNNING.value
    COMPLETED = StepStatus.COMPLETED.value
    FAILED = StepStatus.FAILED.value
    SKIPPED = StepStatus.SKIPPED.value
    PAUSED = SessionStatus.PAUSED.value
    WAITING = SessionStatus.WAITING.value
    CANCELLED = SessionStatus.CANCELLED.value
    EXPIRED = SessionStatus.EXPIRED.value


@dataclass(frozen=True)
class StepSpec:
    """A step as the user wrote it: the instruction, an optional success criterion, and its
    own policy (retries, timeout, turns, on_failure) over the workflow's config; the
    condition it runs under (`if:`), or the loop it is (`for each`, its text the header);
    and where it came from (a loop's iteration, a template)."""

    text: str
    expect: str | None = None
    policy: StepPolicy = field(default_factory=StepPolicy)
    condition: str | None = None
    loop: Loop | None = None
    origin: dict[str, Any] | None = None
    extract: Extraction | None = None
    """The data it completes with, in a declared shape (see `domain.extraction`)."""
    save_as: str | None = None
    """The variable its data is saved as, `{{vars.NAME}}` to the steps after it."""

    def to_dict(self) -> dict[str, Any]:
        """As `Created` records it: the keys a step sets beyond text, expect and policy only
        when it sets them, so a step with none is recorded as steps always were."""
        recorded: dict[str, Any] = {
            "text": self.text,
            "expect": self.expect,
            "policy": self.policy.to_dict(),
        }
        if self.condition is not None:
            recorded["if"] = self.condition
        if self.loop is not None:
            recorded["loop"] = self.loop.to_dict()
        if self.origin is not None:
            recorded["origin"] = self.origin
        if self.extract is not None:
            recorded["extract"] = self.extract.to_dict()
        if self.save_as is not None:
            recorded["save_as"] = self.save_as
        return recorded

    def bound_names(self) -> list[str]:
        """The loop variables its iteration binds, for its condition and its own loop."""
        return list(((self.origin or {}).get("bind") or {}).keys())

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> StepSpec:
        loop = recorded.get("loop")
        extract = recorded.get("extract")
        return cls(
            text=recorded["text"],
            expect=recorded.get("expect"),
            policy=StepPolicy.from_dict(recorded.get("policy")),
            condition=recorded.get("if"),
            loop=Loop.from_dict(loop) if loop else None,
            origin=recorded.get("origin"),
            extract=Extraction.from_dict(extract) if extract else None,
            save_as=recorded.get("save_as"),
        )


@dataclass
class StepState:
    text: str
    expect: str | None = None
    policy: StepPolicy = field(default_factory=StepPolicy)
    """Its own limits and on_failure; a default, so snapshots taken before it load."""
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    turns: int = 0
    open_commands: list[str] = field(default_factory=list)
    summary: str | None = None
    evidence: list[str] = field(default_factory=list)
    error: ErrorPayload | None = None
    retryable: bool = False
    condition: str | None = None
    """Its `if:`, evaluated when it comes up; defaults, so snapshots taken before load."""
    loop: dict[str, Any] | None = None
    """The loop it is (`Loop.to_dict`), expanded into its iterations when it comes up."""
    origin: dict[str, Any] | None = None
    """The loop iteration (and its bound variables) or the template it came from."""
    expanded: int | None = None
    """A loop that came up: how many steps its iterations put right after it."""
    extract: dict[str, Any] | None = None
    """What its data must be (`Extraction.to_dict`); defaults, so snapshots taken before load."""
    save_as: str | None = None
    data: Any = None
    """The data it completed with, if it declares `extract`."""

    @classmethod
    def of(cls, recorded: dict[str, Any]) -> StepState:
        """A pending step as `Created` or `LoopExpanded` records it (one made without a
        policy, by a test or another writer, has none)."""
        return cls(
            text=recorded["text"],
            expect=recorded.get("expect"),
            policy=StepPolicy.from_dict(recorded.get("policy")),
            condition=recorded.get("if"),
            loop=recorded.get("loop"),
            origin=recorded.get("origin"),
            extract=recorded.get("extract"),
            save_as=recorded.get("save_as"),
        )

    def spec(self) -> StepSpec:
        """The step as written (its iteration's origin kept), without what its runs did."""
        return StepSpec(
            self.text,
            self.expect,
            self.policy,
            self.condition,
            Loop.from_dict(self.loop) if self.loop else None,
            self.origin,
            Extraction.from_dict(self.extract) if self.extract else None,
            self.save_as,
        )

    @property
    def bound(self) -> dict[str, Any]:
        """The loop variables its iteration binds (empty outside a loop)."""
        return dict((self.origin or {}).get("bind") or {})

    @property
    def done(self) -> bool:
        return self.status in (StepStatus.COMPLETED, StepStatus.SKIPPED)

    def __deepcopy__(self, memo: dict[int, Any]) -> StepState:
        # Sessions are copied on every load from the cache; the generic deepcopy of each
        # step's fields was most of the task loop's CPU time.
        return replace(
            self,
            open_commands=list(self.open_commands),
            evidence=list(self.evidence),
            error=deepcopy(self.error, memo),
            data=deepcopy(self.data, memo),
        )


def _refuse_nul(text: str, field: str) -> None:
    """NUL cannot be stored as text in PostgreSQL, so it never enters the model."""
    if "\x00" in text:
        raise InvalidWorkflow(
            f"{field} contains a NUL character",
            suggested_action=f"Remove the NUL character (\\u0000) from {field}",
            field=field,
        )


def _validated_steps(steps: list[StepSpec]) -> list[StepSpec]:
    if not steps:
        raise InvalidWorkflow(
            "a workflow needs at least one step",
            suggested_action="Give steps a list of at least one step",
            field="steps",
        )
    written = [step for step in steps if "iteration" not in (step.origin or {})]
    if len(written) > MAX_STEPS:
        raise InvalidWorkflow(
            f"a workflow has at most {MAX_STEPS} steps, got {len(written)}",
            suggested_action="Split the workflow in two, or join steps a definition can do in one",
            field="steps",
            limit=MAX_STEPS,
        )
    if len(steps) > MAX_EXPANDED_STEPS:  # a fork of a session whose loops ran
        raise InvalidWorkflow(
            f"a session has at most {MAX_EXPANDED_STEPS} steps with its loops' iterations, "
            f"got {len(steps)}",
            suggested_action="Fork from a later step, or split the loop's list",
            field="steps",
            limit=MAX_EXPANDED_STEPS,
        )
    return [
        _validated_step(step, index, f"step {index}", f"steps[{index}]", set(step.bound_names()))
        for index, step in enumerate(steps)
    ]


def _validated_step(step: StepSpec, index: int, label: str, at: str, names: set[str]) -> StepSpec:
    """The step stripped and checked: its text, expect and policy; its condition and its
    loop (and the loop's steps) read with the loop variables in scope, `names`."""
    text = step.text.strip()
    if not text:
        raise InvalidWorkflow(
            f"{label} is empty", suggested_action=f"Write {label}, or remove it", field=at
        )
    if len(text) > MAX_STEP_TEXT:
        raise InvalidWorkflow(
            f"{label} has {len(text)} characters; the limit is {MAX_STEP_TEXT}",
            suggested_action=f"Shorten {label}, or split it into several steps",
            field=at,
            limit=MAX_STEP_TEXT,
        )
    _refuse_nul(text, at)
    expect = step.expect.strip() if step.expect else None
    if expect:
        _refuse_nul(expect, f"{at}.expect")
    if expect is not None and len(expect) > MAX_STEP_TEXT:
        raise InvalidWorkflow(
            f"the expect criterion of {label} is longer than {MAX_STEP_TEXT} characters",
            suggested_action=f"Shorten the expect of {label}",
            field=f"{at}.expect",
            limit=MAX_STEP_TEXT,
        )
    condition = _readable(step.condition, f"{at}.if", names)
    loop = _validated_loop(step.loop, index, label, at, names) if step.loop else None
    check_extraction(step.extract, step.save_as, step.loop is not None, label, at)
    return replace(
        step,
        text=text,
        expect=expect or None,
        policy=step.policy.validated(index),
        condition=condition,
        loop=loop,
    )


def _refuse_long_texts(loop: str, expanded: list[dict[str, Any]]) -> None:
    """An iteration's step is held to the length of a step as written, its expect too."""
    for number, recorded in enumerate(expanded):
        for key in ("text", "expect"):
            written = recorded.get(key) or ""
            if len(written) > MAX_STEP_TEXT:
                raise LoopRefused(
                    "LOOP_ITEM_INVALID",
                    f"{loop}: the {key} of step {number} of its iterations would be "
                    f"{len(written)} characters, more than {MAX_STEP_TEXT}",
                )


def _readable(expression: str | None, at: str, names: set[str]) -> str | None:
    """The expression, stripped, if it parses with `names` in scope; else InvalidWorkflow."""
    if expression is None:
        return None
    try:
        return Expression.parse(expression, names).text
    except ExpressionError as error:
        raise InvalidWorkflow(
            f"{at}: {error.described()}",
            suggested_action="Write the expression with comparisons, and, or, not, in, len() "
            f"and paths from {', '.join(sorted({*ROOTS, *names}))}",
            field=at,
            expression=error.expression,
        ) from None


def _validated_loop(loop: Loop, index: int, label: str, at: str, names: set[str]) -> Loop:
    if not re.fullmatch(VARIABLE, loop.var) or loop.var in (*ROOTS, *names):
        raise InvalidWorkflow(
            f"{label}: a loop variable is a name (letters, digits, _) not already in use "
            f"({', '.join(sorted({*ROOTS, *names}))}); got {loop.var!r}",
            suggested_action="Name the loop's variable something else, e.g. `for each item in`",
            field=f"{at}.for_each",
        )
    over = _readable(loop.over, f"{at}.for_each", names)
    bound = loop.max_iterations
    if not isinstance(bound, int) or isinstance(bound, bool) or not 1 <= bound <= MAX_ITERATIONS:
        raise InvalidWorkflow(
            f"{label}: max_iterations must be an integer from 1 to {MAX_ITERATIONS}",
            suggested_action=f"Set max_iterations of {label} to 1 to {MAX_ITERATIONS}",
            field=f"{at}.max_iterations",
        )
    if not loop.steps:
        raise InvalidWorkflow(
            f"{label}: a loop needs at least one step",
            suggested_action="Give the loop a list of steps",
            field=f"{at}.steps",
        )
    inner = {*names, loop.var}
    body = [
        _validated_step(
            StepSpec.from_dict(step), index, f"{label}.{n}", f"{at}.steps[{n}]", inner
        ).to_dict()
        for n, step in enumerate(loop.steps)
    ]
    return replace(loop, over=over or loop.over, steps=tuple(body))


def check_tenant(tenant: str) -> None:
    _refuse_nul(tenant, "tenant")
    if not tenant.strip():
        raise InvalidWorkflow(
            "the tenant must not be empty", suggested_action="Name a tenant", field="tenant"
        )


def _validate_header(name: str, tenant: str, labels: dict[str, str]) -> None:
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidWorkflow(
            f"the name must be 1 to {MAX_NAME} characters",
            suggested_action=f"Give the workflow a name of 1 to {MAX_NAME} characters",
            field="name",
        )
    _refuse_nul(name, "name")
    check_tenant(tenant)
    if len(labels) > MAX_LABELS:
        raise InvalidWorkflow(
            f"at most {MAX_LABELS} labels",
            suggested_action=f"Keep {MAX_LABELS} labels or fewer",
            field="labels",
        )
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_TEXT or len(value) > MAX_LABEL_TEXT:
            raise InvalidWorkflow(
                f"label keys must be 1 to {MAX_LABEL_TEXT} characters and values at most "
                f"{MAX_LABEL_TEXT}",
                suggested_action=f"Shorten label {key!r} (or give it a key)",
                field=f"labels.{key}",
            )
        _refuse_nul(key + value, f"labels.{key}")


def _validate_config(config: dict[str, Any]) -> None:
    max_attempts = config.get("max_attempts", 1)
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise InvalidWorkflow(
            "config.max_attempts must be an integer of at least 1",
            suggested_action="Set config.max_attempts to 1 (no retry) or more",
            field="config.max_attempts",
        )


class WorkflowSession(Aggregate):
    class_version = 3
    """Of the session's snapshots: v3 holds its wait, its mailbox of signals and the time it
    waited; v2 holds `replay_of` and `forked_from`; v1 had neither."""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["replay_of"] = None
        state["forked_from"] = None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["waiting"] = None
        state["mailbox"] = {}
        state["waited_ms"] = 0

    class Event(Aggregate.Event):
        class_version = 1

    class Created(Event, Aggregate.Created):
        """v4 holds each step's own policy (`{"text", "expect", "policy"}`, the policy `{}`
        for a step with none); v3 records where the session came from: `replay_of` or
        `forked_from`, both None for a new session; v2 holds steps as {"text", "expect"}
        objects; v1 held them as plain strings."""

        name: str
        steps: list[dict[str, Any]]
        config: dict[str, Any]
        tenant: str
        labels: dict[str, str]
        actor: str
        replay_of: ReplayOf | None
        forked_from: ForkedFrom | None

        class_version = 4

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["steps"] = [{"text": text, "expect": None} for text in state["steps"]]

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["replay_of"] = None
            state["forked_from"] = None

        @staticmethod
        def upcast_v3_v4(state: dict[str, Any]) -> None:
            state["steps"] = [{**step, "policy": {}} for step in state["steps"]]

    class StepsCarriedOver(Event):
        """A fork's first steps, completed in its source: each as the source recorded it."""

        steps: list[CarriedStep]
        actor: str

    class StepStarted(Event):
        step_index: int
        attempt: int
        actor: str

    class TurnRecorded(Event):
        """v2 lists the artifacts the model was shown (vision: the page's screenshot)."""

        step_index: int
        turn: int
        reasoning: str
        model: str
        prompt_tokens: int
        completion_tokens: int
        latency_ms: int
        actor: str
        artifacts: list[ArtifactRef]

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["artifacts"] = []

    class CommandIssued(Event):
        """v2 carries the idempotency key sent with the command (v1: the command id)."""

        step_index: int
        command_id: str
        executor: str
        name: str
        args: dict[str, Any]
        idempotency_key: str
        actor: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["idempotency_key"] = state["command_id"]

    class CommandFinished(Event):
        """v2 lists the artifacts (screenshots) the command produced, by hash; v1 had none."""

        step_index: int
        command_id: str
        ok: bool
        output: str
        duration_ms: int
        error: ErrorPayload | None
        artifacts: list[ArtifactRef]
        actor: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["artifacts"] = []

    class Checked(Event):
        """A check with no side effect (`expect status 200`) and its verdict, in one event:
        there is nothing to issue durably before it runs, so it has no CommandIssued."""

        step_index: int
        executor: str
        name: str
        args: dict[str, Any]
        ok: bool
        output: str
        duration_ms: int
        error: ErrorPayload | None
        artifacts: list[ArtifactRef]
        actor: str

    class StepReplayed(Event):
        """The step did again what its source's step did, without the model: `turns_saved`
        model turns and `tokens_saved` tokens the source spent on it were not spent again."""

        step_index: int
        source_session_id: str
        actions: int
        turns_saved: int
        tokens_saved: int
        actor: str

    class ReplayDiverged(Event):
        """A replayed command or check did not return what the source's did: the world
        changed here. `expected` and `got` hold what a replay compares (ok, status...)."""

        step_index: int
        executor: str
        name: str
        args: dict[str, Any]
        expected: dict[str, Any]
        got: dict[str, Any]
        strict: bool
        actor: str

    class LearnedActionUsed(Event):
        """The step tried what an earlier session's step learned (`action_id` at
        `action_version`), without the model. A hit did all `commands` as recorded, saving
        about `tokens_saved` tokens and `seconds_saved` seconds; a miss (`hit` false) names in
        `miss` the command whose result differed, and the model takes over from there."""

        step_index: int
        action_id: str
        action_version: int
        hit: bool
        commands: int
        tokens_saved: int
        seconds_saved: float
        miss: dict[str, Any] | None
        actor: str

    class StepCompleted(Event):
        """v2 holds the step's extracted `data` (None for a step that extracts nothing)."""

        step_index: int
        summary: str
        evidence: list[str]
        actor: str
        data: Any = None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["data"] = None

    class StepFailed(Event):
        step_index: int
        error: ErrorPayload
        retryable: bool
        actor: str

    class StepSkipped(Event):
        """Step `step_index`'s `if:` was false when it came up (`reason` says so): it is done
        without running, and the session goes on to the next step."""

        step_index: int
        reason: str
        actor: str

    class LoopExpanded(Event):
        """Step `step_index`, a loop, came up over `items` items: `steps` are its iterations'
        steps (as `Created` records steps, each with its origin), put right after it. The
        loop step is done; the next step is the first iteration's first."""

        step_index: int
        items: int
        steps: list[dict[str, Any]]
        actor: str

    class ContinuedAfterFailure(Event):
        """Step `step_index` failed for good (no attempt left, or not retryable) and its
        policy says `on_failure: continue`: the session goes on to the next step, the step's
        failure kept on the record."""

        step_index: int
        actor: str

    class WaitStarted(Event):
        """The step waits for an approval (asking `question`), a timer or a signal (named
        `signal`). `due_at` is when a worker ends the wait unprompted: a timer's wake-up
        time, an approval's or a signal's timeout (None: it waits until answered). `key`
        tells this wait from the step's others (a definition's position, a model's turn)."""

        step_index: int
        kind: str
        key: str
        question: str | None
        signal: str | None
        started_at: datetime
        due_at: datetime | None
        actor: str

    class WaitEnded(Event):
        """How the wait ended (a WaitOutcome): approved or rejected by `actor` with
        `comment`, due, timed out, or signalled (`data`: the signal's body, taken from the
        mailbox). `waited_ms` is how long it waited."""

        step_index: int
        key: str
        kind: str
        outcome: str
        comment: str
        data: Any
        waited_ms: int
        actor: str

    class SignalReceived(Event):
        """A signal sent to the session, kept in its mailbox until a wait for it takes it."""

        name: str
        body: Any
        actor: str

    class Paused(Event):
        reason: str
        actor: str

    class Resumed(Event):
        reason: str
        actor: str

    class Cancelled(Event):
        reason: str
        actor: str

    class Completed(Event):
        outcome: str
        actor: str

    class Failed(Event):
        outcome: str
        error: ErrorPayload
        actor: str

    class Expired(Event):
        outcome: str
        error: ErrorPayload
        actor: str

    class WebhookDeliveryFailed(Event):
        """A webhook about this session was given up on: no attempt to deliver it succeeded
        (`error` says why the last one failed). It changes nothing of the session."""

        webhook_id: str
        event_type: str
        url: str
        attempts: int
        error: ErrorPayload
        actor: str

    class Erased(Event):
        """The session's data key was destroyed: what was sealed with it is gone. Kept wholly
        in clear: who erased it, why, the status it ended in and when it ended."""

        reason: str
        actor: str
        status: str
        ended_at: datetime

    class Redacted(Event):
        """What is left of an erased session's event (of type `event_type`): its clear
        fields only. Never recorded; read in place of the event once the key is gone."""

        event_type: str

    name: str
    steps: list[StepState]
    config: dict[str, Any]
    tenant: str
    labels: dict[str, str]
    created_by: str
    status: SessionStatus
    paused_from: SessionStatus | None
    current_step: int
    commands: dict[str, int]
    tokens_used: int
    outcome: str | None
    error: ErrorPayload | None
    replay_of: ReplayOf | None
    forked_from: ForkedFrom | None
    waiting: Wait | None
    mailbox: dict[str, list[Any]]
    """Signals received and not yet taken by a wait, by name, oldest first."""
    waited_ms: int
    """Time spent waiting, all waits together: it counts towards no timeout."""

    erased = False
    """Set by Erased; a class default, so snapshots taken before there was erasure load."""

    # ---- creation ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        name: str,
        steps: list[StepSpec],
        tenant: str,
        actor: str,
        config: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        replay_of: ReplayOf | None = None,
        forked_from: ForkedFrom | None = None,
        session_id: UUID | None = None,
    ) -> WorkflowSession:
        """`replay_of` / `forked_from` link a replay or a fork to its source (see Created);
        `session_id` is given when the id must not depend on who creates it (a schedule's
        firing), so a second creation conflicts with the first."""
        valid_steps = _validated_steps(steps)
        labels = labels or {}
        config = config or {}
        _validate_header(name, tenant, labels)
        _validate_config(config)
        return cls(
            id=session_id or uuid4(),
            name=name.strip(),
            steps=[step.to_dict() for step in valid_steps],
            config=config,
            tenant=tenant,
            labels=labels,
            actor=actor,
            replay_of=replay_of,
            forked_from=forked_from,
        )

    @event(Created)
    def __init__(
        self,
        *,
        id: UUID,  # the library passes the aggregate's id by this name
        name: str,
        steps: list[dict[str, Any]],
        config: dict[str, Any],
        tenant: str,
        labels: dict[str, str],
        actor: str,
        replay_of: ReplayOf | None,
        forked_from: ForkedFrom | None,
    ) -> None:
        self.name = name
        self.steps = [StepState.of(recorded) for recorded in steps]
        self.config = config
        self.tenant = tenant
        self.labels = labels
        self.created_by = actor
        self.status = SessionStatus.PENDING
        self.paused_from = None
        self.current_step = 0
        self.commands = {}
        self.tokens_used = 0
        self.outcome = None
        self.error = None
        self.replay_of = replay_of
        self.forked_from = forked_from
        self.waiting = None
        self.mailbox = {}
        self.waited_ms = 0

    # ---- derived -----------------------------------------------------------------------

    @property
    def max_attempts(self) -> int:
        return int(self.config.get("max_attempts", 1))

    def attempts_allowed(self, step_index: int) -> int:
        """Tries of the step: its own `retries` and the first, else the config's."""
        retries = self.steps[step_index].policy.retries
        return self.max_attempts if retries is None else retries + 1

    @property
    def running_step(self) -> int | None:
        """The index of the step in progress, if any."""
        step = self.current_step
        if step < len(self.steps) and self.steps[step].status is StepStatus.RUNNING:
            return step
        return None

    @property
    def all_steps_done(self) -> bool:
        """No step is left to run: each completed, or failed with `on_failure: continue`."""
        return self.current_step == len(self.steps)

    @property
    def continued_steps(self) -> list[int]:
        """The steps that failed and that the session went on past (`on_failure: continue`)."""
        return [
            index
            for index, step in enumerate(self.steps[: self.current_step])
            if step.status is StepStatus.FAILED
        ]

    def can_start_next_step(self) -> bool:
        """Whether `start_step(self.current_step)` would be accepted now."""
        try:
            self._check_step_can_start(self.current_step)
        except InvalidStateTransition:
            return False
        return True

    # ---- guards ------------------------------------------------------------------------

    def _refuse(self, action: str, **details: Any) -> InvalidStateTransition:
        return InvalidStateTransition(
            f"cannot {action}: session is {self.status.value}",
            status=self.status.value,
            **details,
        )

    def _require_status(self, action: str, *allowed: SessionStatus) -> None:
        if self.status not in allowed:
            raise self._refuse(action, allowed=[s.value for s in allowed])

    def _require_running_step(self, action: str, step_index: int) -> StepState:
        self._require_status(action, SessionStatus.RUNNING)
        if step_index != self.running_step:
            raise InvalidStateTransition(
                f"cannot {action}: step {step_index} is not the step in progress "
                f"({self.running_step})",
                step_index=step_index,
                running_step=self.running_step,
            )
        return self.steps[step_index]

    def _check_step_can_start(self, step_index: int) -> None:
        self._require_status("start a step", SessionStatus.PENDING, SessionStatus.RUNNING)
        if step_index != self.current_step:
            raise InvalidStateTransition(
                f"cannot start step {step_index}: steps run in order and the next is "
                f"{self.current_step}",
                step_index=step_index,
                next_step=self.current_step,
            )
        if self.all_steps_done:
            raise InvalidStateTransition("cannot start a step: every step is done")
        step = self.steps[step_index]
        if step.status is StepStatus.RUNNING:
            raise InvalidStateTransition(
                f"cannot start step {step_index}: it is already running", step_index=step_index
            )
        if step.status is StepStatus.FAILED and not step.retryable:
            raise InvalidStateTransition(
                f"cannot start step {step_index}: it failed and is not retryable",
                step_index=step_index,
            )
        allowed = self.attempts_allowed(step_index)
        if step.attempts >= allowed:
            raise InvalidStateTransition(
                f"cannot start step {step_index}: all {allowed} attempts are used",
                step_index=step_index,
                max_attempts=allowed,
            )

    # ---- commands ----------------------------------------------------------------------

    def carry_over(self, completed: list[CompletedStep], actor: str = WORKER) -> None:
        """Take a fork's first steps as completed, as its source completed them; at least
        one step is left to run."""
        self._require_status("carry steps over", SessionStatus.PENDING)
        if self.current_step != 0 or not 0 < len(completed) < len(self.steps):
            raise InvalidStateTransition(
                f"cannot carry {len(completed)} steps over into a session of {len(self.steps)} "
                f"steps whose next step is {self.current_step}",
                steps=len(completed),
            )
        steps: list[CarriedStep] = []
        for index, step in enumerate(completed):
            carried: CarriedStep = {
                "step_index": index,
                "summary": step["summary"],
                "evidence": list(step["evidence"]),
            }
            if step.get("skipped"):
                carried["skipped"] = True
            if "expanded" in step:
                carried["expanded"] = step["expanded"]
            if step.get("data") is not None:
                carried["data"] = step["data"]
            steps.append(carried)
        self._steps_carried_over(steps=steps, actor=actor)

    def start_step(self, step_index: int, actor: str = WORKER) -> int:
        """Start the next step (again, after a retryable failure). Returns the attempt."""
        self._check_step_can_start(step_index)
        attempt = self.steps[step_index].attempts + 1
        self._step_started(step_index=step_index, attempt=attempt, actor=actor)
        return attempt

    def record_turn(
        self,
        step_index: int,
        *,
        reasoning: str,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_ms: int = 0,
        actor: str = WORKER,
        artifacts: list[ArtifactRef] | None = None,
    ) -> int:
        """Record one decision of the AI model, and what it was shown besides text (`artifacts`).
        Returns the turn number within the step."""
        step = self._require_running_step("record a turn", step_index)
        turn = step.turns + 1
        self._turn_recorded(
            step_index=step_index,
            turn=turn,
            reasoning=reasoning,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            actor=actor,
            artifacts=artifacts or [],
        )
        return turn

    def issue_command(
        self,
        step_index: int,
        *,
        command_id: str,
        executor: str,
        name: str,
        args: dict[str, Any],
        idempotency_key: str | None = None,
        actor: str = WORKER,
    ) -> None:
        """Issue a command. A command re-issued after an interruption keeps its idempotency
        key, so the target can tell the second delivery from a new request."""
        self._require_running_step("issue a command", step_index)
        if command_id in self.commands:
            raise InvalidStateTransition(
                f"command {command_id} was already issued", command_id=command_id
            )
        self._command_issued(
            step_index=step_index,
            command_id=command_id,
            executor=executor,
            name=name,
            args=args,
            idempotency_key=idempotency_key or command_id,
            actor=actor,
        )

    def finish_command(
        self,
        step_index: int,
        *,
        command_id: str,
        ok: bool,
        output: str = "",
        duration_ms: int = 0,
        error: ErrorPayload | None = None,
        artifacts: list[ArtifactRef] | None = None,
        actor: str = WORKER,
    ) -> None:
        """Record a command's result. Allowed while paused: the command was already running."""
        self._require_status("record a command result", SessionStatus.RUNNING, SessionStatus.PAUSED)
        step = self.steps[step_index] if 0 <= step_index < len(self.steps) else None
        if step is None or command_id not in step.open_commands:
            raise InvalidStateTransition(
                f"command {command_id} has no open issue in step {step_index}",
                command_id=command_id,
                step_index=step_index,
            )
        self._command_finished(
            step_index=step_index,
            command_id=command_id,
            ok=ok,
            output=output,
            duration_ms=duration_ms,
            error=error,
            artifacts=artifacts or [],
            actor=actor,
        )

    def record_check(
        self,
        step_index: int,
        *,
        executor: str,
        name: str,
        args: dict[str, Any],
        ok: bool,
        output: str = "",
        duration_ms: int = 0,
        error: ErrorPayload | None = None,
        artifacts: list[ArtifactRef] | None = None,
        actor: str = WORKER,
    ) -> None:
        """Record a check the step made and what it found."""
        self._require_running_step("record a check", step_index)
        self._checked(
            step_index=step_index,
            executor=executor,
            name=name,
            args=args,
            ok=ok,
            output=output,
            duration_ms=duration_ms,
            error=error,
            artifacts=artifacts or [],
            actor=actor,
        )

    def record_replayed(
        self,
        step_index: int,
        *,
        source_session_id: str,
        actions: int,
        turns_saved: int,
        tokens_saved: int,
        actor: str = WORKER,
    ) -> None:
        """Record that the step was done again from its source's record, without the model."""
        self._require_running_step("record a replayed step", step_index)
        self._step_replayed(
            step_index=step_index,
            source_session_id=source_session_id,
            actions=actions,
            turns_saved=turns_saved,
            tokens_saved=tokens_saved,
            actor=actor,
        )

    def record_divergence(
        self,
        step_index: int,
        *,
        executor: str,
        name: str,
        args: dict[str, Any],
        expected: dict[str, Any],
        got: dict[str, Any],
        strict: bool,
        actor: str = WORKER,
    ) -> None:
        """Record where a replay found the world changed."""
        self._require_running_step("record a divergence", step_index)
        self._replay_diverged(
            step_index=step_index,
            executor=executor,
            name=name,
            args=args,
            expected=expected,
            got=got,
            strict=strict,
            actor=actor,
        )

    def record_learned_action_used(
        self,
        step_index: int,
        *,
        action_id: str,
        action_version: int,
        hit: bool,
        commands: int,
        tokens_saved: int = 0,
        seconds_saved: float = 0.0,
        miss: dict[str, Any] | None = None,
        actor: str = WORKER,
    ) -> None:
        """Record that the step tried a learned action, and whether it held."""
        self._require_running_step("record a learned action used", step_index)
        self._learned_action_used(
            step_index=step_index,
            action_id=action_id,
            action_version=action_version,
            hit=hit,
            commands=commands,
            tokens_saved=tokens_saved if hit else 0,
            seconds_saved=seconds_saved if hit else 0.0,
            miss=None if hit else miss,
            actor=actor,
        )

    def complete_step(
        self,
        step_index: int,
        *,
        summary: str,
        evidence: list[str] | None = None,
        actor: str = WORKER,
        data: Any = None,
    ) -> None:
        """`data`: what a step that declares `extract` completes with, checked against it."""
        step = self._require_running_step("complete a step", step_index)
        self._require_no_open_commands("complete", step)
        self._require_declared_data(step_index, step, data)
        self._step_completed(
            step_index=step_index, summary=summary, evidence=evidence or [], actor=actor, data=data
        )

    def _require_declared_data(self, step_index: int, step: StepState, data: Any) -> None:
        if step.extract is None:
            if data is not None:
                raise InvalidStateTransition(
                    f"step {step_index} declares no extract: it completes without data",
                    step_index=step_index,
                )
            return
        problem = Extraction.from_dict(step.extract).problem(data)
        if problem is not None:
            raise InvalidStateTransition(
                f"step {step_index} cannot complete with data that is not what it declares: "
                f"{problem}",
                step_index=step_index,
            )

    def fail_step(
        self,
        step_index: int,
        *,
        error: ErrorPayload,
        retryable: bool,
        actor: str = WORKER,
    ) -> None:
        self._require_no_open_commands(
            "fail", self._require_running_step("fail a step", step_index)
        )
        self._step_failed(step_index=step_index, error=error, retryable=retryable, actor=actor)

    def continue_after_failure(self, step_index: int, actor: str = WORKER) -> None:
        """Go on past the current step, which failed for good, as its `on_failure: continue`
        says: the next step is the one after it (or the session may complete)."""
        self._require_status("continue after a failed step", SessionStatus.RUNNING)
        step = self.steps[step_index] if step_index == self.current_step else None
        if step is None or step.status is not StepStatus.FAILED:
            raise InvalidStateTransition(
                f"cannot continue after step {step_index}: it is not the failed current step",
                step_index=step_index,
                next_step=self.current_step,
            )
        if not step.policy.continues:
            raise InvalidStateTransition(
                f"cannot continue after step {step_index}: its on_failure is "
                f"{step.policy.on_failure.value}",
                step_index=step_index,
            )
        if step.retryable and step.attempts < self.attempts_allowed(step_index):
            raise InvalidStateTransition(
                f"cannot continue after step {step_index}: it has attempts left",
                step_index=step_index,
            )
        self._continued_after_failure(step_index=step_index, actor=actor)

    def skip_step(self, step_index: int, reason: str, actor: str = WORKER) -> None:
        """Pass over the next step, whose `if:` was false: it never started."""
        self._check_step_can_start(step_index)
        step = self.steps[step_index]
        if step.condition is None or step.attempts:
            raise InvalidStateTransition(
                f"cannot skip step {step_index}: only a step with an if: that has not started "
                "is skipped",
                step_index=step_index,
            )
        self._step_skipped(step_index=step_index, reason=reason, actor=actor)

    def expand_loop(self, step_index: int, items: list[Any], actor: str = WORKER) -> None:
        """The loop under way goes over `items`: its iterations' steps are put after it, and
        it is done. LoopRefused (with the code its step fails with) for items it cannot take."""
        step = self._require_running_step("expand a loop", step_index)
        if step.loop is None:
            raise InvalidStateTransition(
                f"cannot expand step {step_index}: it is not a loop", step_index=step_index
            )
        expanded = Loop.from_dict(step.loop).iterations(items, step.bound)
        if len(self.steps) + len(expanded) > MAX_EXPANDED_STEPS:
            raise LoopRefused(
                "LOOP_LIMIT_EXCEEDED",
                f"{step.text}: {len(expanded)} more steps would make the session's "
                f"{len(self.steps) + len(expanded)}, more than its limit ({MAX_EXPANDED_STEPS})",
            )
        _refuse_long_texts(step.text, expanded)
        added = len(json.dumps(expanded, ensure_ascii=False))
        if self._expanded_chars() + added > MAX_SESSION_EXPANSION_CHARS:
            raise LoopRefused(
                "LOOP_LIMIT_EXCEEDED",
                f"{step.text}: its iterations' steps would take the session's loops past "
                f"{MAX_SESSION_EXPANSION_CHARS:,} characters of steps",
            )
        self._loop_expanded(step_index=step_index, items=len(items), steps=expanded, actor=actor)

    def _expanded_chars(self) -> int:
        """What the session's loops have added so far, as their events recorded it."""
        added = [step.spec().to_dict() for step in self.steps if "iteration" in (step.origin or {})]
        return len(json.dumps(added, ensure_ascii=False)) if added else 0

    def _require_no_open_commands(self, verb: str, step: StepState) -> None:
        if step.open_commands:
            raise InvalidStateTransition(
                f"cannot {verb} the step while commands {step.open_commands} have no result",
                open_commands=list(step.open_commands),
            )

    # ---- waits ----------------------------------------------------------------------------

    def begin_wait(
        self,
        step_index: int,
        *,
        kind: WaitKind,
        key: str,
        question: str | None = None,
        signal: str | None = None,
        due_at: datetime | None = None,
        now: datetime | None = None,
        actor: str = WORKER,
    ) -> None:
        """The running step waits. A signal already in the mailbox ends the wait at once."""
        self._require_no_open_commands("wait in", self._require_running_step("wait", step_index))
        if (kind is WaitKind.SIGNAL) != (signal is not None):
            raise InvalidStateTransition("a wait names a signal if, and only if, it awaits one")
        self._wait_started(
            step_index=step_index,
            kind=kind.value,
            key=key,
            question=question,
            signal=signal,
            started_at=now or datetime.now(UTC),
            due_at=due_at,
            actor=actor,
        )
        if signal is not None and self.mailbox.get(signal):
            self._end_wait(WaitOutcome.SIGNALLED, "", now, actor, data=self.mailbox[signal][0])

    def approve(self, comment: str = "", actor: str = WORKER, now: datetime | None = None) -> None:
        self._require_waiting_for("approve", WaitKind.APPROVAL)
        self._end_wait(WaitOutcome.APPROVED, comment, now, actor)

    def reject(self, comment: str = "", actor: str = WORKER, now: datetime | None = None) -> None:
        self._require_waiting_for("reject", WaitKind.APPROVAL)
        self._end_wait(WaitOutcome.REJECTED, comment, now, actor)

    def receive_signal(
        self, name: str, body: Any, actor: str = WORKER, now: datetime | None = None
    ) -> None:
        """Keep the signal in the mailbox; a wait for it in progress takes it at once."""
        if self.status.is_terminal:
            raise self._refuse("receive a signal")
        self._signal_received(name=name, body=body, actor=actor)
        wait = self.waiting
        if self.status is SessionStatus.WAITING and wait is not None and wait.signal == name:
            self._end_wait(WaitOutcome.SIGNALLED, "", now, actor, data=self.mailbox[name][0])

    def wake(self, now: datetime | None = None, actor: str = WORKER) -> None:
        """End a wait whose due time has come: a timer is due; an approval or a signal that
        did not come in time has timed out."""
        wait = self._require_waiting_for("wake")
        now = now or datetime.now(UTC)
        if wait.due_at is None or now < wait.due_at:
            raise InvalidStateTransition(
                f"cannot wake the session: its wait is due {wait.due_at or 'never'}",
                due_at=wait.due_at.isoformat() if wait.due_at else None,
            )
        timer = wait.kind is WaitKind.TIMER
        self._end_wait(WaitOutcome.DUE if timer else WaitOutcome.TIMED_OUT, "", now, actor)

    def _require_waiting_for(self, action: str, kind: WaitKind | None = None) -> Wait:
        self._require_status(action, SessionStatus.WAITING)
        wait = self.waiting
        assert wait is not None  # waiting is entered with a wait, and left with it
        if kind is not None and wait.kind is not kind:
            raise InvalidStateTransition(
                f"cannot {action}: the session waits for {wait.describe()}, not {kind.value}",
                waiting_for=wait.describe(),
            )
        return wait

    def _end_wait(
        self,
        outcome: WaitOutcome,
        comment: str,
        now: datetime | None,
        actor: str,
        data: Any = None,
    ) -> None:
        wait = self.waiting
        assert wait is not None
        waited = (now or datetime.now(UTC)) - wait.started_at
        self._wait_ended(
            step_index=wait.step_index,
            key=wait.key,
            kind=wait.kind.value,
            outcome=outcome.value,
            comment=comment,
            data=data,
            waited_ms=max(0, int(waited.total_seconds() * 1000)),
            actor=actor,
        )

    def pause(self, reason: str = "", actor: str = WORKER) -> None:
        self._require_status("pause", SessionStatus.PENDING, SessionStatus.RUNNING)
        self._paused(reason=reason, actor=actor)

    def resume(self, reason: str = "", actor: str = WORKER) -> None:
        self._require_status("resume", SessionStatus.PAUSED)
        self._resumed(reason=reason, actor=actor)

    def cancel(self, reason: str = "", actor: str = WORKER) -> None:
        if self.status.is_terminal:
            raise self._refuse("cancel")
        self._cancelled(reason=reason, actor=actor)

    def complete(self, outcome: str = "", actor: str = WORKER) -> None:
        """Complete the session once no step is left to run. Steps that failed under
        `on_failure: continue` do not stop it completing; its outcome names them."""
        self._require_status("complete the session", SessionStatus.RUNNING)
        if not self.all_steps_done:
            raise InvalidStateTransition(
                f"cannot complete the session: step {self.current_step} is not completed",
                next_step=self.current_step,
            )
        self._completed(outcome=outcome or self._completed_outcome(), actor=actor)

    def _completed_outcome(self) -> str:
        continued = self.continued_steps
        skipped = sum(step.status is StepStatus.SKIPPED for step in self.steps)
        passed_over = f", {skipped} skipped (if: false)" if skipped else ""
        if not continued:
            if not skipped:
                return f"all {len(self.steps)} steps completed"
            completed = len(self.steps) - skipped
            return f"{completed} of {len(self.steps)} steps completed{passed_over}"
        completed = len(self.steps) - len(continued) - skipped
        named = ", ".join(map(str, continued))
        failed = f"step {named} failed" if len(continued) == 1 else f"steps {named} failed"
        return (
            f"{completed} of {len(self.steps)} steps completed{passed_over}; {failed} and the "
            "session went on (on_failure: continue)"
        )

    def fail(self, error: ErrorPayload, outcome: str = "", actor: str = WORKER) -> None:
        self._require_status("fail the session", SessionStatus.PENDING, SessionStatus.RUNNING)
        self._failed(outcome=outcome or str(error.get("message", "")), error=error, actor=actor)

    def expire(self, error: ErrorPayload, outcome: str = "", actor: str = WORKER) -> None:
        if self.status.is_terminal:
            raise self._refuse("expire")
        self._expired(outcome=outcome or "session TTL reached", error=error, actor=actor)

    def record_webhook_failure(
        self,
        *,
        webhook_id: str,
        event_type: str,
        url: str,
        attempts: int,
        error: ErrorPayload,
        actor: str = WORKER,
    ) -> None:
        """Record that a webhook about the session was given up on; in any status (a session
        that ended is what most webhooks are about)."""
        self._webhook_delivery_failed(
            webhook_id=webhook_id,
            event_type=event_type,
            url=url,
            attempts=attempts,
            error=error,
            actor=actor,
        )

    def erase(self, reason: str, actor: str) -> None:
        """Forget the session's content: only an ended session, and only once (the caller
        cancels a session still under way first)."""
        if self.erased:
            raise self._refuse("erase")
        if not self.status.is_terminal:
            raise self._refuse("erase")
        self._erased(
            reason=reason, actor=actor, status=self.status.value, ended_at=self.modified_on
        )

    # ---- events: the only place state changes ------------------------------------------

    @event(StepsCarriedOver)
    def _steps_carried_over(self, *, steps: list[CarriedStep], actor: str) -> None:
        for carried in steps:
            step = self.steps[carried["step_index"]]
            step.status = StepStatus.SKIPPED if carried.get("skipped") else StepStatus.COMPLETED
            step.expanded = carried.get("expanded")
            step.summary = carried["summary"]
            step.evidence = list(carried["evidence"])
            step.data = carried.get("data")
        self.current_step = len(steps)

    @event(StepStarted)
    def _step_started(self, *, step_index: int, attempt: int, actor: str) -> None:
        step = self.steps[step_index]
        step.status = StepStatus.RUNNING
        step.attempts = attempt
        step.turns = 0
        step.error = None
        step.retryable = False
        self.status = SessionStatus.RUNNING

    @event(TurnRecorded)
    def _turn_recorded(
        self,
        *,
        step_index: int,
        turn: int,
        reasoning: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_ms: int,
        actor: str,
        artifacts: list[ArtifactRef],
    ) -> None:
        self.steps[step_index].turns = turn
        self.tokens_used += prompt_tokens + completion_tokens

    @event(CommandIssued)
    def _command_issued(
        self,
        *,
        step_index: int,
        command_id: str,
        executor: str,
        name: str,
        args: dict[str, Any],
        idempotency_key: str,
        actor: str,
    ) -> None:
        self.commands[command_id] = step_index
        self.steps[step_index].open_commands.append(command_id)

    @event(CommandFinished)
    def _command_finished(
        self,
        *,
        step_index: int,
        command_id: str,
        ok: bool,
        output: str,
        duration_ms: int,
        error: ErrorPayload | None,
        artifacts: list[ArtifactRef],
        actor: str,
    ) -> None:
        self.steps[step_index].open_commands.remove(command_id)

    @event(Checked)
    def _checked(
        self,
        *,
        step_index: int,
        executor: str,
        name: str,
        args: dict[str, Any],
        ok: bool,
        output: str,
        duration_ms: int,
        error: ErrorPayload | None,
        artifacts: list[ArtifactRef],
        actor: str,
    ) -> None:
        """A check changes nothing the session decides on; the step's outcome records it."""

    @event(StepReplayed)
    def _step_replayed(
        self,
        *,
        step_index: int,
        source_session_id: str,
        actions: int,
        turns_saved: int,
        tokens_saved: int,
        actor: str,
    ) -> None:
        """Nothing the session decides on changes: the step's end follows."""

    @event(ReplayDiverged)
    def _replay_diverged(
        self,
        *,
        step_index: int,
        executor: str,
        name: str,
        args: dict[str, Any],
        expected: dict[str, Any],
        got: dict[str, Any],
        strict: bool,
        actor: str,
    ) -> None:
        """Nothing the session decides on changes: the step fails, or goes on live."""

    @event(LearnedActionUsed)
    def _learned_action_used(
        self,
        *,
        step_index: int,
        action_id: str,
        action_version: int,
        hit: bool,
        commands: int,
        tokens_saved: int,
        seconds_saved: float,
        miss: dict[str, Any] | None,
        actor: str,
    ) -> None:
        """Nothing the session decides on changes: the step completes, or the model goes on."""

    @event(StepCompleted)
    def _step_completed(
        self, *, step_index: int, summary: str, evidence: list[str], actor: str, data: Any = None
    ) -> None:
        step = self.steps[step_index]
        step.status = StepStatus.COMPLETED
        step.summary = summary
        step.evidence = evidence
        step.data = data
        self.current_step = step_index + 1

    @event(StepFailed)
    def _step_failed(
        self, *, step_index: int, error: ErrorPayload, retryable: bool, actor: str
    ) -> None:
        step = self.steps[step_index]
        step.status = StepStatus.FAILED
        step.error = error
        step.retryable = retryable

    @event(StepSkipped)
    def _step_skipped(self, *, step_index: int, reason: str, actor: str) -> None:
        step = self.steps[step_index]
        step.status = StepStatus.SKIPPED
        step.summary = reason
        self.current_step = step_index + 1
        self.status = SessionStatus.RUNNING

    @event(LoopExpanded)
    def _loop_expanded(
        self, *, step_index: int, items: int, steps: list[dict[str, Any]], actor: str
    ) -> None:
        loop = self.steps[step_index]
        loop.status = StepStatus.COMPLETED
        loop.summary = f"{items} iteration{'' if items == 1 else 's'}"
        loop.expanded = len(steps)
        self.steps[step_index + 1 : step_index + 1] = [StepState.of(s) for s in steps]
        self.current_step = step_index + 1

    @event(ContinuedAfterFailure)
    def _continued_after_failure(self, *, step_index: int, actor: str) -> None:
        self.current_step = step_index + 1

    @event(WaitStarted)
    def _wait_started(
        self,
        *,
        step_index: int,
        kind: str,
        key: str,
        question: str | None,
        signal: str | None,
        started_at: datetime,
        due_at: datetime | None,
        actor: str,
    ) -> None:
        self.waiting = Wait(step_index, WaitKind(kind), key, started_at, due_at, question, signal)
        self.status = SessionStatus.WAITING

    @event(WaitEnded)
    def _wait_ended(
        self,
        *,
        step_index: int,
        key: str,
        kind: str,
        outcome: str,
        comment: str,
        data: Any,
        waited_ms: int,
        actor: str,
    ) -> None:
        wait = self.waiting
        if outcome == WaitOutcome.SIGNALLED.value and wait is not None and wait.signal:
            self.mailbox[wait.signal].pop(0)
            if not self.mailbox[wait.signal]:
                del self.mailbox[wait.signal]
        self.waiting = None
        self.waited_ms += waited_ms
        self.status = SessionStatus.RUNNING

    @event(SignalReceived)
    def _signal_received(self, *, name: str, body: Any, actor: str) -> None:
        self.mailbox.setdefault(name, []).append(body)

    @event(Paused)
    def _paused(self, *, reason: str, actor: str) -> None:
        self.paused_from = self.status
        self.status = SessionStatus.PAUSED

    @event(Resumed)
    def _resumed(self, *, reason: str, actor: str) -> None:
        self.status = self.paused_from or SessionStatus.RUNNING
        self.paused_from = None

    @event(Cancelled)
    def _cancelled(self, *, reason: str, actor: str) -> None:
        self.status = SessionStatus.CANCELLED
        self.outcome = reason or "cancelled"

    @event(Completed)
    def _completed(self, *, outcome: str, actor: str) -> None:
        self.status = SessionStatus.COMPLETED
        self.outcome = outcome

    @event(Failed)
    def _failed(self, *, outcome: str, error: ErrorPayload, actor: str) -> None:
        self.status = SessionStatus.FAILED
        self.outcome = outcome
        self.error = error

    @event(Expired)
    def _expired(self, *, outcome: str, error: ErrorPayload, actor: str) -> None:
        self.status = SessionStatus.EXPIRED
        self.outcome = outcome
        self.error = error

    @event(WebhookDeliveryFailed)
    def _webhook_delivery_failed(
        self,
        *,
        webhook_id: str,
        event_type: str,
        url: str,
        attempts: int,
        error: ErrorPayload,
        actor: str,
    ) -> None:
        """Nothing of the session changes: the event is the record that it was not told."""

    @event(Erased)
    def _erased(self, *, reason: str, actor: str, status: str, ended_at: datetime) -> None:
        self.erased = True
        self.status = SessionStatus(status)  # its events before may be unreadable now
        self.paused_from = None
        self.name = ERASED
        self.steps = []
        self.config = {}
        self.labels = {}
        self.commands = {}
        self.outcome = None
        self.error = None


_STATUS_AFTER: dict[type[WorkflowSession.Event], SessionStatus] = {
    WorkflowSession.StepStarted: SessionStatus.RUNNING,
    WorkflowSession.StepSkipped: SessionStatus.RUNNING,
    WorkflowSession.Paused: SessionStatus.PAUSED,
    WorkflowSession.WaitStarted: SessionStatus.WAITING,
    WorkflowSession.WaitEnded: SessionStatus.RUNNING,
    WorkflowSession.Completed: SessionStatus.COMPLETED,
    WorkflowSession.Failed: SessionStatus.FAILED,
    WorkflowSession.Cancelled: SessionStatus.CANCELLED,
    WorkflowSession.Expired: SessionStatus.EXPIRED,
}
ENDING_EVENTS: tuple[type[WorkflowSession.Event], ...] = tuple(
    event for event, status in _STATUS_AFTER.items() if status in ENDED
)
"""The events that end a session, each in one of the `ENDED` statuses."""


def status_after(
    event: WorkflowSession.Event, status: SessionStatus, started: bool
) -> SessionStatus:
    """The session's status once `event` has happened, given its status before and whether a
    step ever started: the rule the aggregate's events follow, for the read models."""
    if isinstance(event, WorkflowSession.Resumed):
        return SessionStatus.RUNNING if started else SessionStatus.PENDING
    return _STATUS_AFTER.get(type(event), status)


def stored_artifacts(event: WorkflowSession.Event) -> list[ArtifactRef]:
    """The files (screenshots) a command or a check stored, or a turn's model was shown, as
    recorded in its event."""
    if isinstance(
        event,
        WorkflowSession.CommandFinished | WorkflowSession.Checked | WorkflowSession.TurnRecorded,
    ):
        return event.artifacts
    return []
