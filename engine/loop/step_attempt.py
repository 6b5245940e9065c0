"""One attempt at one step: its step definition's commands, a replay of its source's, or the
AI model's turns."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from uuid import UUID

from domain.actions import actions_of
from domain.errors import StandardError
from domain.extraction import Extraction
from domain.session import StepState, WorkflowSession
from engine.executors import Command, Outcome, truncated
from engine.loop.ai_attempt import AiAttempt
from engine.loop.definitions import DefinitionError, NearMiss
from engine.loop.extraction import read_by_selectors
from engine.loop.learned_attempt import Held, LearnedAttempt, Missed
from engine.loop.replay import RecordedAction, RecordedStep, interrupted
from engine.loop.step_results import Deadline, StepDone, StepFailure, StepResult, failure
from engine.loop.step_run import StepRun
from engine.loop.waits import WAIT, WaitRequest, outcome_of


def definition_key(
    session_id: UUID, step_index: int, attempt: int, position: int, kind: str = "c"
) -> str:
    """The idempotency key of a step definition's command (kind "c") or of a replayed one
    ("r"): the same on every re-send."""
    return f"{session_id}:s{step_index}:a{attempt}:{kind}{position}"


class StepAttempt:
    """One attempt at one step: its step definition's commands, or the AI model's turns.

    A definition's n-th command of an attempt always carries the same idempotency key, so a
    step resumed after a stop or a takeover skips the commands that already succeeded and
    re-sends the interrupted one under the key it was first sent with. Checks only look, so a
    resumed step makes them again. A replaying session does the same with its source's
    commands, until one returns something else than it did in the source."""

    def __init__(
        self, run: StepRun, index: int, step: StepState, attempt: int, resuming: bool
    ) -> None:
        self.run_ = run
        self.index = index
        self.step = step
        self.attempt = attempt
        self.limits = run.limits.for_step(step.policy)
        self.deadline = Deadline.after(
            self.limits.step_timeout_ms, step.policy.setting_of("step_timeout_ms")
        )
        self._diverged = False
        self._tried_learned = False
        """The attempt already tried its learned action (a resumed one asks the model)."""
        self._learned_held = False
        """...and it held: the step is done, though the run ended before it was recorded."""
        self._issued: dict[str, tuple[str, str, dict[str, Any]]] = {}
        """What each of the attempt's commands was (executor, name, args), by its key."""
        self._waited: dict[str, Outcome] = {}
        """How each wait of this attempt ended, by key."""
        self._recorded = self._finished_by_key() if resuming else {}
        self._positions = {"c": 0, "r": 0, "l": 0}

    def _finished_by_key(self) -> dict[str, WorkflowSession.CommandFinished]:
        """The results the attempt's commands got, by idempotency key (a command sent again
        under its key: its last); how its waits ended; whether its replay diverged."""
        events = self.run_.events_since(self.run_.attempt_started(self.index, self.attempt))
        actions = actions_of(events).values()
        finished = {a.issued.idempotency_key: a.finished for a in actions if a.finished}
        self._issued = {
            a.issued.idempotency_key: (a.issued.executor, a.issued.name, a.issued.args)
            for a in actions
        }
        waits: dict[str, WorkflowSession.WaitStarted] = {}
        for event in events:
            if isinstance(event, WorkflowSession.ReplayDiverged):
                self._diverged = True
            elif isinstance(event, WorkflowSession.LearnedActionUsed):
                self._tried_learned, self._learned_held = True, event.hit
            elif isinstance(event, WorkflowSession.WaitStarted):
                waits[event.key] = event
            elif isinstance(event, WorkflowSession.WaitEnded):
                self._waited[event.key] = outcome_of(waits[event.key], event)
        return finished

    def _wait(self, command: Command, key: str, action: RecordedAction | None = None) -> Outcome:
        """A wait of the step: as it ended, if it did; else waited now (see StepRun.wait)."""
        if key in self._waited:
            return self._waited[key]
        decision = None if action is None else action.decision
        return self.run_.wait(self.index, WaitRequest.of(command), key, decision)

    def run(self) -> StepResult:
        replay = self.run_.replay
        recorded = None if replay is None or self._diverged else replay.steps.get(self.index)
        if recorded is not None:
            return self._replay(recorded)
        return self._live()

    def _replay(self, recorded: RecordedStep) -> StepResult:
        """Do again what the source's step did, comparing each result with the recorded one."""
        evidence = []
        judged = self.run_.status_judged_after(self.index)
        for action in recorded.actions:
            key = self._key("r")
            done = self._recorded.get(key)
            if (
                done is not None
                and not interrupted(done)
                and action.divergence(Outcome(done.ok, done.output)) is None
            ):
                evidence.append(truncated(done.output, 300))
                continue
            if (timeout := self.run_.safe_point(self.deadline)) is not None:
                return timeout
            command = replace(action.command, error_status_expected=judged)
            if command.executor == WAIT:
                outcome = self._wait(command, key, action)
            elif self.run_.is_check(command):
                outcome = self.run_.check(self.index, command)
            else:
                outcome = self.run_.execute(self.index, command, key)
            got = action.divergence(outcome)
            if got is not None:
                return self._diverged_at(action, got)
            evidence.append(truncated(outcome.output, 300))
        self.run_.record_replayed(self.index, recorded)
        return StepDone(recorded.summary, evidence, recorded.data)

    def _diverged_at(self, action: RecordedAction, got: dict[str, Any]) -> StepResult:
        """Strict: the step fails. Otherwise the step goes on live from here."""
        command = action.command
        if self.run_.record_divergence(self.index, action, got):
            return failure(
                "REPLAY_DIVERGED",
                f"the replay diverged at {command.executor}.{command.name} "
                f"{json.dumps(command.args)}: expected {action.expected}, got {got}",
                command={"executor": command.executor, "name": command.name, "args": command.args},
                expected=action.expected,
                got=got,
            )
        self._diverged = True
        return self._live()

    def _live(self) -> StepResult:
        """The step as if for the first time: its step definition, else the model."""
        text, expect = self.step.text, self.step.expect
        if self.step.extract is not None:  # only a model (or selectors) give data
            return self._extracted(text)
        try:
            commands = self.run_.definitions.match(text)
        except DefinitionError as error:
            return _unusable(f"step {self.index}: {error}", error)
        if commands is None or self._no_server_for(commands):
            return self._learned_or_ai(text)
        result = self._run_commands(self._judged_by_a_check(commands))
        if isinstance(result, StepFailure):
            return result
        done = StepDone(summary=f"{text}: ok", evidence=result)
        if not expect:
            return done
        return self._check_expectation(expect, done)

    def _no_server_for(self, commands: list[Command]) -> bool:
        """`call support` in a workflow with no MCP server is an instruction for the model
        (telephone someone), not a tool of a server there is none of."""
        mcp = any(command.executor == "mcp" for command in commands)
        return mcp and not self.run_.config.get("mcp")

    def _extracted(self, text: str) -> StepResult:
        """A step that extracts: read by its selectors (the browser, no model), else by the
        model, whose completion must carry the data."""
        extraction = Extraction.from_dict(self.step.extract or {})
        if not extraction.by_selectors:
            return self._with_ai(text)
        done = read_by_selectors(self.run_, self.index, extraction, self._key())
        expect = self.step.expect
        if not isinstance(done, StepDone) or not expect:
            return done
        return self._check_expectation(expect, done)

    def _with_ai(self, unmatched: str, standing: list[str] | None = None) -> StepResult:
        """The step by the model; without one, why `unmatched` (the step's text or its
        expect criterion) was not run, and how it may almost be a definition. `standing`:
        what the model is told on every turn (that it only judges a learned action)."""
        ai = self.run_.ai
        if ai is None:
            near = self.run_.definitions.near_miss(unmatched)
            return StepFailure(_no_ai_provider(unmatched, near))
        attempt = AiAttempt(
            self.run_, ai, self.index, self.attempt, deadline=self.deadline, limits=self.limits
        )
        attempt.standing = list(standing or [])
        return attempt.run()

    def _learned_or_ai(self, text: str) -> StepResult:
        """The step as an earlier session's learned it, if one did and it holds; else (or
        from where it missed) by the model."""
        if self._learned_held:  # held, its expect judged, before the run ended
            return StepDone(f"{text}: done as learned", [])
        action = None if self._tried_learned else self.run_.learned_action(self.index, self.attempt)
        if action is None:
            return self._with_ai(text)
        learned = LearnedAttempt(
            self.run_,
            self.index,
            action,
            self.deadline,
            recorded=self._recorded,
            issued=self._issued,
            key=self._key,
        )
        tried = learned.run()
        if isinstance(tried, Missed):  # the model is told where, from the log (the miss)
            learned.record_miss(tried)
            return self._with_ai(text)
        if not isinstance(tried, Held):
            return tried
        return self._judged_as_learned(learned, tried)

    def _judged_as_learned(self, learned: LearnedAttempt, held: Held) -> StepResult:
        """A learned action that held completes the step if its `expect` holds: checked by
        its step definition when it has one (no model call); else the model is asked only
        whether it holds. A check that fails makes it a miss."""
        done = StepDone(f"{self.step.text}: done as learned", held.evidence)
        expect = self.step.expect
        if not expect:
            learned.record_hit()
            return done
        try:
            checks = self.run_.definitions.match(expect)
        except DefinitionError as error:
            return _unusable(f"step {self.index} expect: {error}", error)
        if checks is None:
            return self._judged_by_the_model(learned, held, expect)
        checked = self._run_commands(checks)
        if isinstance(checked, StepFailure):
            learned.record_miss(Missed(len(held.evidence), _failed_check(expect, checked)))
            return self._with_ai(self.step.text)
        learned.record_hit()
        return StepDone(done.summary, done.evidence + checked)

    def _judged_by_the_model(self, learned: LearnedAttempt, held: Held, expect: str) -> StepResult:
        """The model is asked only whether `expect` holds: it does, a hit; it does not (the
        model fails the step), a miss, and the model takes the step over from there, as after
        any miss (its completion is the next version); on hold, neither yet."""
        judged = self._with_ai(expect, [JUDGE_ONLY])
        if isinstance(judged, StepDone):
            learned.record_hit()
        elif isinstance(judged, StepFailure):
            learned.record_miss(Missed(len(held.evidence), _failed_check(expect, judged)))
            if judged.error.code == JUDGED_NOT_HOLDING:
                return self._with_ai(self.step.text)
        return judged

    def _judged_by_a_check(self, commands: list[Command]) -> list[Command]:
        """The commands, the last one's error status left to the `expect status` that judges
        it (the step's own expect, or the next step) rather than failing it."""
        if not commands or not self.run_.status_judged_after(self.index):
            return commands
        return [*commands[:-1], replace(commands[-1], error_status_expected=True)]

    def _key(self, kind: str = "c") -> str:
        position = self._positions[kind]
        self._positions[kind] += 1
        return definition_key(self.run_.session_id, self.index, self.attempt, position, kind)

    def _run_commands(self, commands: list[Command]) -> list[str] | StepFailure:
        """Run the commands in order; the evidence of each, or the first failure."""
        evidence = []
        for command in commands:
            key = self._key()
            recorded = self._recorded.get(key)
            if recorded is not None and recorded.ok:
                evidence.append(truncated(recorded.output, 300))
                continue
            if (timeout := self.run_.safe_point(self.deadline)) is not None:
                return timeout
            if command.executor == WAIT:
                outcome = self._wait(command, key)
            elif self.run_.is_check(command):
                outcome = self.run_.check(self.index, command)
            else:
                outcome = self.run_.execute(self.index, command, key)
            if not outcome.ok:
                return StepFailure(outcome.error or StandardError.of("COMMAND_FAILED", "failed"))
            evidence.append(truncated(outcome.output, 300))
        return evidence

    def _check_expectation(self, expect: str, done: StepDone) -> StepResult:
        try:
            checks = self.run_.definitions.match(expect)
        except DefinitionError as error:
            return _unusable(f"step {self.index} expect: {error}", error)
        if checks is None:
            return self._with_ai(expect)
        checked = self._run_commands(checks)
        if isinstance(checked, StepFailure):
            return checked
        return StepDone(done.summary, done.evidence + checked, done.data)


JUDGED_NOT_HOLDING = "STEP_FAILED"
"""The judge's fail_step: the expectation does not hold (any other failure, a limit's or the
provider's, ends the step as it would any step)."""

JUDGE_ONLY = (
    "An earlier run of this step learned how to do it, and its commands were done again, "
    "each giving the result it gave then. Judge only whether the step's expectation holds "
    "now: call complete_step with expect_met=true if it does (check it first if you must), "
    "else fail_step."
)


def _failed_check(expect: str, checked: StepFailure) -> dict[str, Any]:
    """A miss at the step's own check: what the model is told the check found."""
    error = checked.error
    return {
        "executor": "expect",
        "name": "check",
        "args": {"expect": expect},
        "expected": {"ok": True},
        "got": {"ok": False, "code": error.code, "message": error.message[:300]},
    }


AI_SETUP = (
    "set STEPLINE_AI_MODEL and STEPLINE_AI_API_KEY (or STEPLINE_AI_BASE_URL for a local "
    "OpenAI-compatible server)"
)


def _no_ai_provider(unmatched: str, near: NearMiss | None) -> StandardError:
    """No definition matches and no model is configured: first what the step almost is."""
    if near is None:
        return StandardError.of(
            "NO_AI_PROVIDER",
            f"no step definition matches {unmatched!r} and no AI provider is configured; "
            f"{AI_SETUP}, or write the step as a step definition",
        )
    return StandardError.of(
        "NO_AI_PROVIDER",
        f"no step definition matches {unmatched!r} ({near.hint}) and no AI provider is "
        "configured to run it as written",
        {"near_miss": near.hint, "written": near.written},
        suggested_action=f"{near.advice}; or, for a model to run it as written, {AI_SETUP}",
    )


def _unusable(message: str, error: DefinitionError) -> StepFailure:
    """A step a definition matched, with arguments it cannot use (a body that is not JSON)."""
    return StepFailure(
        StandardError.of("VALIDATION_FAILED", message, suggested_action=error.suggested_action)
    )
