"""What a recorded session did, step by step, so that a replay can do it again without the model.

A replay issues, for each step its source completed, the commands (and checks) of the attempt
that completed it, in order, and compares each result with the recorded one. Only what does not
change from run to run is compared: whether it succeeded, an HTTP response's status, a
program's exit code. Bodies differ (ids, times); what else must hold is what the step checks:
its checks are made again, on the new results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.session import WorkflowSession as W
from engine.executors import Command, Outcome

INTERRUPTED = "COMMAND_INTERRUPTED"


def essentials(command: Command, ok: bool, output: str) -> dict[str, Any]:
    """The part of a result a replay must reproduce."""
    found: dict[str, Any] = {"ok": ok}
    key = {("http", "request"): "status", ("shell", "run"): "exit_code"}.get(
        (command.executor, command.name)
    )
    if key is not None and ok:
        try:
            recorded = json.loads(output)
        except json.JSONDecodeError:
            return found
        if isinstance(recorded, dict) and key in recorded:
            found[key] = recorded[key]
    return found


@dataclass(frozen=True)
class RecordedAction:
    """One command or check of the source, and what it returned."""

    command: Command
    check: bool
    expected: dict[str, Any]

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
    evidence: list[str] = field(default_factory=list)
    turns: int = 0
    tokens: int = 0


def recorded_steps(history: Sequence[W.Event]) -> dict[int, RecordedStep]:
    """For each step the session completed, what its completing attempt did. A command its
    owner was interrupted in is left out: it was sent again, or decided again, after."""
    attempts: dict[int, RecordedStep] = {}
    issued: dict[str, W.CommandIssued] = {}
    done: dict[int, RecordedStep] = {}
    for event in history:
        match event:
            case W.StepStarted(step_index=index):
                attempts[index] = RecordedStep(index)
            case W.TurnRecorded(step_index=index):
                attempts[index].turns += 1
                attempts[index].tokens += event.prompt_tokens + event.completion_tokens
            case W.CommandIssued(command_id=command_id):
                issued[command_id] = event
            case W.CommandFinished(step_index=index, command_id=command_id):
                if (event.error or {}).get("code") != INTERRUPTED:
                    attempts[index].actions.append(_command(issued[command_id], event))
            case W.Checked(step_index=index):
                attempts[index].actions.append(_check(event))
            case W.StepReplayed(step_index=index):
                attempts[index].turns += event.turns_saved
                attempts[index].tokens += event.tokens_saved
            case W.StepCompleted(step_index=index):
                step = attempts.pop(index)
                step.summary, step.evidence = event.summary, list(event.evidence)
                done[index] = step
    return done


def _command(issued: W.CommandIssued, finished: W.CommandFinished) -> RecordedAction:
    command = Command(issued.executor, issued.name, issued.args)
    return RecordedAction(command, False, essentials(command, finished.ok, finished.output))


def _check(checked: W.Checked) -> RecordedAction:
    command = Command(checked.executor, checked.name, checked.args)
    return RecordedAction(command, True, essentials(command, checked.ok, checked.output))
