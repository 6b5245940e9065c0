"""What a recorded session did, step by step, so that a replay can do it again without the model.

A replay issues, for each step its source completed, the commands (and checks) of the attempt
that completed it, in order, and compares each result with the recorded one. Only what does not
change from run to run is compared: whether it succeeded, an HTTP response's status, a
program's exit code. Bodies differ (ids, times); what else must hold is what the step checks:
its checks are made again, on the new results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from uuid import UUID

from domain.actions import actions_of
from domain.errors import InvalidWorkflow, SessionErased
from domain.learning import INTERRUPTED
from domain.learning import essentials as result_essentials
from domain.payloads import CompletedStep
from domain.session import StepSpec, StepState, StepStatus, WorkflowSession
from domain.session import WorkflowSession as W
from engine.executors import Command, Outcome
from engine.loop.waits import RecordedDecision, recorded_wait
from engine.store.app import SessionRequest, Stepline
from engine.workflows.inputs import written_in


def interrupted(finished: W.CommandFinished) -> bool:
    """Whether the result is the one recorded for a command its owner never saw finish."""
    return finished.error is not None and finished.error.get("code") == INTERRUPTED


def essentials(command: Command, ok: bool, output: str) -> dict[str, Any]:
    """The part of a result a replay must reproduce (see `domain.learning.essentials`)."""
    return result_essentials(command.executor, command.name, ok, output)


@dataclass(frozen=True)
class RecordedAction:
    """One command or check of the source, and the part of its result a replay reproduces."""

    command: Command
    expected: dict[str, Any]
    decision: RecordedDecision | None = None
    """A wait's: the approval or the signal that ended it, used again."""

    @classmethod
    def of(cls, executor: str, name: str, args: dict[str, Any], ok: bool, output: str) -> Self:
        command = Command(executor, name, args)
        return cls(command, essentials(command, ok, output))

    def divergence(self, outcome: Outcome) -> dict[str, Any] | None:
        """How `outcome` differs from the recorded result, or None if it matches."""
        got = essentials(self.command, outcome.ok, outcome.output)
        return None if got == self.expected else got


@dataclass
class RecordedStep:
    """The source's attempt that completed a step: its actions, and what it cost."""

    step_index: int
    actions: list[RecordedAction] = field(default_factory=list)
    summary: str = ""
    turns: int = 0
    tokens: int = 0
    data: Any = None
    """What the step extracted, used again: a replay does not ask the model for it."""


def recorded_steps(history: Sequence[W.Event]) -> dict[int, RecordedStep]:
    """For each step the session completed, what its completing attempt did. A command its
    owner was interrupted in is left out: it was sent again, or decided again, after. A wait
    is an action too, with the decision that ended it (see RecordedDecision)."""
    attempts: dict[int, RecordedStep] = {}
    actions = actions_of(history)
    waits: dict[str, W.WaitStarted] = {}
    done: dict[int, RecordedStep] = {}
    for event in history:
        match event:
            case W.StepStarted(step_index=index):
                attempts[index] = RecordedStep(index)
            case W.TurnRecorded(step_index=index):
                attempts[index].turns += 1
                attempts[index].tokens += event.prompt_tokens + event.completion_tokens
            case W.CommandIssued(step_index=index, command_id=command_id):
                finished = actions[command_id].finished
                if finished is not None and not interrupted(finished):
                    attempts[index].actions.append(
                        RecordedAction.of(
                            event.executor, event.name, event.args, finished.ok, finished.output
                        )
                    )
            case W.Checked(step_index=index):
                attempts[index].actions.append(
                    RecordedAction.of(
                        event.executor, event.name, event.args, event.ok, event.output
                    )
                )
            case W.WaitStarted(key=key):
                waits[key] = event
            case W.WaitEnded(step_index=index, key=key):
                started = waits[key]
                decision = RecordedDecision.of(str(event.originator_id), started, event)
                ok = event.outcome in ("approved", "due", "signalled")
                waited = RecordedAction(recorded_wait(started), {"ok": ok}, decision)
                attempts[index].actions.append(waited)
            case W.StepReplayed(step_index=index):
                attempts[index].turns += event.turns_saved
                attempts[index].tokens += event.tokens_saved
            case W.StepCompleted(step_index=index):
                step = attempts.pop(index)
                step.summary = event.summary
                step.data = event.data
                done[index] = step
    return done


@dataclass(frozen=True)
class Replay:
    """What a replaying session does again: its source's completed steps."""

    source_session_id: str
    strict: bool
    steps: dict[int, RecordedStep]

    @classmethod
    def of(cls, app: Stepline, session: WorkflowSession) -> Replay | None:
        if session.replay_of is None:
            return None
        source_id = UUID(session.replay_of["session_id"])
        steps = recorded_steps(lineage_history(app, source_id))
        return cls(str(source_id), bool(session.replay_of["strict"]), steps)


def lineage_history(app: Stepline, session_id: UUID, upto: int | None = None) -> list[W.Event]:
    """The session's events (the first `upto`), after those its steps carried over from: for a
    fork, its source's events up to the fork, and so on up the line."""
    history = app.history(session_id, limit=upto)
    created = history[0]
    assert isinstance(created, W.Created)
    fork = created.forked_from
    if fork is None:
        return history
    return lineage_history(app, UUID(fork["session_id"]), fork["version"]) + history


def replay_request(
    source: WorkflowSession, *, strict: bool, base_url: str | None = None
) -> SessionRequest:
    """A new session with the source's steps and config (against `base_url` if given), which
    does again what the source did."""
    refuse_erased(source)
    config = dict(source.config)
    if base_url:
        config["base_url"] = base_url
    return SessionRequest(
        name=source.name,
        steps=_specs(_unexpanded(source.steps)),
        config=config,
        labels=dict(source.labels),
        replay_of={"session_id": str(source.id), "strict": strict},
    )


def fork_request(
    source: WorkflowSession,
    history: Sequence[W.Event],
    *,
    from_step: int,
    steps: list[StepSpec] | None = None,
) -> SessionRequest:
    """A new session whose steps before `from_step` are the source's, completed as the source
    completed them, and which runs from `from_step` on: the source's steps, or `steps` (with
    the source's input values written in)."""
    refuse_erased(source)
    if not 0 <= from_step < len(source.steps):
        raise InvalidWorkflow(
            f"from_step must be a step of the source, 0 to {len(source.steps) - 1}",
            suggested_action=f"Fork from a step 0 to {len(source.steps) - 1}",
            field="from_step",
        )
    done = source.steps[:from_step]
    undone = [i for i, step in enumerate(done) if not step.done]
    if undone:
        raise InvalidWorkflow(
            f"step {undone[0]} of the source is not completed; fork from step {undone[0]} or "
            "earlier",
            suggested_action=f"Fork from step {undone[0]} or earlier",
            field="from_step",
            completed_steps=undone[0],
        )
    carried: list[CompletedStep] = [_carried(step) for step in done]
    # New steps may use the source's inputs: written in with the values it recorded.
    recorded_inputs = source.config.get("inputs") or {}
    tail = (
        _specs(_unexpanded(source.steps[from_step:]))
        if steps is None
        else written_in(steps, recorded_inputs)
    )
    config = dict(source.config)
    if steps is not None:  # no longer the registered version's steps (see engine.workflows)
        config.pop("workflow", None)
    return SessionRequest(
        name=source.name,
        steps=_specs(done) + tail,
        config=config,
        labels=dict(source.labels),
        forked_from={
            "session_id": str(source.id),
            "version": _fork_version(history, from_step),
            "step": from_step,
        },
        carried_over=carried,
    )


def refuse_erased(source: WorkflowSession) -> None:
    if source.erased:
        raise SessionErased(
            f"session {source.id} was erased: it cannot be replayed or forked",
            session_id=str(source.id),
        )


def _fork_version(history: Sequence[W.Event], from_step: int) -> int:
    """The source's version once the step before `from_step` was done (its creation for 0):
    completed, skipped, or a loop that made its iterations."""
    if from_step == 0:
        return 1
    done = W.StepCompleted | W.StepSkipped | W.LoopExpanded
    return max(
        e.originator_version
        for e in history
        if isinstance(e, done) and e.step_index == from_step - 1
    )


def _specs(steps: Sequence[StepState]) -> list[StepSpec]:
    """The steps as written, each loop's iterations among them as the source expanded it
    (a fork's loops that came up before it are done, and are not expanded again)."""
    return [step.spec() for step in steps]


def _unexpanded(steps: Sequence[StepState]) -> list[StepState]:
    """The steps with each loop among them as it was before it came up: the steps its
    iterations put after it (and theirs, for a loop inside) left out, as the loop will put
    them in again when it comes up in the new session."""
    kept, index = [], 0
    while index < len(steps):
        kept.append(steps[index])
        index += 1 + _span(steps, index)
    return kept


def _span(steps: Sequence[StepState], header: int) -> int:
    """How many steps follow loop `header` that its expansion put there, a loop's inside
    it and theirs counted in (0 for a step that is not a loop that came up)."""
    span = 0
    for _ in range(steps[header].expanded or 0):
        child = header + 1 + span
        span += 1 + _span(steps, child)
    return span


def _carried(step: StepState) -> CompletedStep:
    carried: CompletedStep = {"summary": step.summary or "", "evidence": step.evidence}
    if step.status is StepStatus.SKIPPED:
        carried["skipped"] = True
    if step.expanded is not None:  # its iterations are carried over after it
        carried["expanded"] = step.expanded
    if step.data is not None:
        carried["data"] = step.data
    return carried
