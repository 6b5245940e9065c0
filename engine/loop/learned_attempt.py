"""A step done again as an earlier session's step learned it: its commands, with no model call.

Each command of the learned action is issued again and its result compared as a replay
compares it (`domain.learning.essentials`: whether it succeeded, an HTTP status, an exit
code; a browser's target not found is a command that failed). The first result that differs
is a miss: the model takes over from there, told what was tried and what came back. Whether
the step then holds is for its caller to judge (its `expect`), before a hit is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from domain.learning import essentials
from domain.session import WorkflowSession
from engine.executors import Command, truncated
from engine.loop.step_results import Deadline, StepFailure
from engine.loop.step_run import StepRun
from projections.learned_actions import LearnedAction

LEARNED = "l"
"""The kind of a learned command's idempotency key (see `step_attempt.definition_key`)."""


@dataclass(frozen=True)
class Held:
    """Every command gave the result it gave when learned."""

    evidence: list[str]


@dataclass(frozen=True)
class Missed:
    """A command gave another result: how many held before it, and what the log records of
    it (what the model is then told: `engine.ai.prompt.learned_miss_note`)."""

    done: int
    miss: dict[str, Any] = field(default_factory=dict)


class LearnedAttempt:
    """The learned action's commands, issued in order under keys of their own."""

    def __init__(
        self,
        run: StepRun,
        index: int,
        action: LearnedAction,
        deadline: Deadline,
        *,
        recorded: dict[str, WorkflowSession.CommandFinished],
        issued: dict[str, tuple[str, str, dict[str, Any]]],
        key: Callable[[str], str],
    ) -> None:
        """`recorded`: the attempt's results so far by idempotency key, and `issued`, what
        each command was (a resumed attempt skips what already held, if it was this very
        command: another version may have been learned since); `key(kind)`: the next
        idempotency key of that kind."""
        self.run_ = run
        self.index = index
        self.action = action
        self.deadline = deadline
        self.recorded = recorded
        self.issued = issued
        self.key = key

    def run(self) -> Held | Missed | StepFailure:
        evidence = []
        judged = self.run_.status_judged_after(self.index)
        for done, learned in enumerate(self.action.commands):
            command = Command(learned["executor"], learned["name"], dict(learned["args"]))
            key = self.key(LEARNED)
            before = self.recorded.get(key)
            same = self.issued.get(key) == (command.executor, command.name, command.args)
            if before is not None and same:
                got = essentials(command.executor, command.name, before.ok, before.output)
                if got == learned["expected"]:
                    evidence.append(truncated(before.output, 300))
                    continue
            if (timeout := self.run_.safe_point(self.deadline)) is not None:
                return timeout
            command = replace(command, error_status_expected=judged)
            if self.run_.is_check(command):
                outcome = self.run_.check(self.index, command)
            else:
                outcome = self.run_.execute(self.index, command, key)
            got = essentials(command.executor, command.name, outcome.ok, outcome.output)
            if got != learned["expected"]:
                return self._missed(done, command, learned["expected"], got)
            evidence.append(truncated(outcome.output, 300))
        return Held(evidence)

    def _missed(
        self, done: int, command: Command, expected: dict[str, Any], got: dict[str, Any]
    ) -> Missed:
        miss = {
            "executor": command.executor,
            "name": command.name,
            "args": command.args,
            "expected": expected,
            "got": got,
        }
        return Missed(done, miss)

    def record_hit(self) -> None:
        action = self.action
        self.run_.record_learned_action_used(
            self.index,
            action_id=str(action.action_id),
            action_version=action.version,
            hit=True,
            commands=len(action.commands),
            tokens_saved=action.tokens,
            seconds_saved=action.seconds,
        )

    def record_miss(self, missed: Missed) -> None:
        action = self.action
        self.run_.record_learned_action_used(
            self.index,
            action_id=str(action.action_id),
            action_version=action.version,
            hit=False,
            commands=missed.done,
            miss=missed.miss,
        )
