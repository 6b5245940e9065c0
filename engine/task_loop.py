"""The task loop: drive a session step by step until it ends, pauses or is told to stop.

For the current step: decide (a step definition, else the AI model) -> record the decision ->
issue the command -> run it on an executor -> record the result -> repeat until the step is
completed or failed; then the next step; then the session completes or fails. Every decision
and result is an event. Between turns the loop re-reads the session, so a pause or a cancel
takes effect before the next command; a command that loses a race reloads and decides again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from domain.errors import InvalidStateTransition, InvalidWorkflow, StandardError
from domain.session import SessionStatus, StepStatus, WorkflowSession
from engine.ai import COMPLETE_STEP, FAIL_STEP, AiProvider, AiProviderError, finishing_tools
from engine.app import Stepline
from engine.context import build_messages
from engine.definitions import DefinitionError, Definitions, builtin
from engine.executors import Command, Executor, Outcome, truncated
from engine.executors.http import HttpExecutor
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.logs import LOGGER_NAME, on_session, on_step
from engine.secrets import Secrets
from engine.settings import Settings

log = logging.getLogger(LOGGER_NAME)

MAX_REFUSALS = 10


@dataclass(frozen=True)
class Limits:
    """The limits a session runs with: the workflow's config over the settings' defaults."""

    max_turns_per_step: int
    step_timeout_ms: int
    workflow_timeout_ms: int
    max_consecutive_failures: int
    max_repeated_commands: int
    token_budget: int
    max_attempts: int
    retry_backoff_ms: int
    context_char_budget: int

    @classmethod
    def defaults(cls, settings: Settings) -> dict[str, int]:
        return {f.name: int(getattr(settings, f.name)) for f in fields(cls)}

    @classmethod
    def of(cls, session: WorkflowSession, settings: Settings) -> Limits:
        chosen = {**cls.defaults(settings), **session.config}
        return cls(**{f.name: int(chosen[f.name]) for f in fields(cls)})


def session_config(settings: Settings, given: dict[str, Any]) -> dict[str, Any]:
    """What a new session records: the given config with every limit filled in."""
    return {**Limits.defaults(settings), **given}


@dataclass(frozen=True)
class StepDone:
    summary: str
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StepFailure:
    error: StandardError


StepResult = StepDone | StepFailure


class Interrupted(Exception):
    """The session stopped being ours to run: paused, cancelled, ended, or the runner stops."""


def _failure(code: str, message: str, **details: Any) -> StepFailure:
    return StepFailure(StandardError.of(code, message, details))


@dataclass(frozen=True)
class ExecutorSetup:
    """What an executor is built from, once per session run."""

    session_id: UUID
    config: dict[str, Any]
    loop: TaskLoop

    @property
    def settings(self) -> Settings:
        return self.loop.settings


def http_executor(setup: ExecutorSetup) -> Executor:
    settings = setup.settings
    return HttpExecutor(
        setup.config.get("base_url"),
        setup.loop.secrets,
        timeout_s=settings.request_timeout_ms / 1000,
        connect_timeout_s=settings.connection_timeout_ms / 1000,
        max_output_chars=settings.max_output_chars,
    )


def shell_executor(setup: ExecutorSetup) -> Executor:
    settings = setup.settings
    allowed = setup.config.get("shell_allow") or settings.shell_allow
    return ShellExecutor(
        Path(settings.data_dir) / "work" / str(setup.session_id),
        setup.loop.secrets,
        ShellLimits(
            timeout_s=settings.request_timeout_ms / 1000,
            max_output_chars=settings.max_output_chars,
            allowed_programs=tuple(allowed),
        ),
    )


ExecutorKind = Callable[[ExecutorSetup], Executor]
EXECUTOR_KINDS: dict[str, ExecutorKind] = {"http": http_executor, "shell": shell_executor}


class TaskLoop:
    """Everything a session run needs; `drive` runs one session."""

    def __init__(
        self,
        app: Stepline,
        settings: Settings,
        definitions: Definitions,
        secrets: Secrets,
        ai: AiProvider | None = None,
        *,
        executor_kinds: Mapping[str, ExecutorKind] | None = None,
    ) -> None:
        """`executor_kinds` adds executors to (or replaces) the built-in http and shell."""
        self.executor_kinds = {**EXECUTOR_KINDS, **(executor_kinds or {})}
        self.app = app
        self.settings = settings
        self.definitions = definitions
        self.secrets = secrets
        self.ai = ai
        self._with_user_module: dict[str, Definitions] = {}
        self._lock = threading.Lock()

    def definitions_for(self, module: str | None) -> Definitions:
        """The built-in definitions, plus a workflow's own module if it names one."""
        if not module:
            return self.definitions
        with self._lock:
            if module not in self._with_user_module:
                extended = builtin()
                extended.load(module)
                self._with_user_module[module] = extended
            return self._with_user_module[module]

    def drive(self, session_id: UUID, stop: threading.Event) -> SessionStatus:
        """Run the session until it ends or pauses, or until `stop` is set."""
        try:
            run = SessionRun(self, session_id, stop)
        except InvalidWorkflow as unusable:  # e.g. its definitions module cannot be loaded
            session = self.app.get_session(session_id)
            if session.status in (SessionStatus.PENDING, SessionStatus.RUNNING):
                self.app.fail_session(session_id, unusable.to_standard_error())
            return self.app.get_session(session_id).status
        try:
            return run.to_the_end()
        finally:
            run.close()


class SessionRun:
    def __init__(self, loop: TaskLoop, session_id: UUID, stop: threading.Event) -> None:
        self.loop = loop
        self.app = loop.app
        self.secrets = loop.secrets
        self.session_id = session_id
        self.stop = stop
        session = self.app.get_session(session_id)
        self.config = session.config
        self.limits = Limits.of(session, loop.settings)
        self.definitions = loop.definitions_for(session.config.get("definitions"))
        self.executors: dict[str, Executor] = {}

    def close(self) -> None:
        for executor in self.executors.values():
            executor.close()

    # ---- the session --------------------------------------------------------------------

    def to_the_end(self) -> SessionStatus:
        self._recover()
        refusals = 0
        while True:
            session = self.app.get_session(self.session_id)
            if session.status.is_terminal or session.status is SessionStatus.PAUSED:
                return session.status
            if self.stop.is_set():
                return session.status
            try:
                self._advance(session)
                refusals = 0
            except Interrupted:
                continue
            except InvalidStateTransition as refused:
                refusals += 1
                if refusals > MAX_REFUSALS:
                    log.error("Gave up driving: %s", refused, extra=on_session(self.session_id))
                    return session.status

    def _advance(self, session: WorkflowSession) -> None:
        if self._workflow_timed_out(session):
            error = StandardError.of(
                "TASK_LOOP_TIMEOUT",
                f"the workflow ran longer than {self.limits.workflow_timeout_ms} ms",
                {"limit": "workflow_timeout_ms"},
            )
            self.app.fail_session(self.session_id, error)
            return
        if session.all_steps_completed:
            self.app.complete_session(self.session_id)
            return
        index = session.current_step
        step = session.steps[index]
        if step.status is not StepStatus.RUNNING:
            if step.status is StepStatus.FAILED and not session.can_start_next_step():
                self.app.fail_session(self.session_id, StandardError.from_dict(step.error or {}))
                return
            if step.status is StepStatus.FAILED:
                self._back_off(step.attempts)
            self.app.start_step(self.session_id, index)
        self._record(index, self._run_step(index, step.text, step.expect))

    def _record(self, index: int, result: StepResult) -> None:
        if isinstance(result, StepDone):
            self.app.complete_step(
                self.session_id,
                index,
                summary=self.secrets.redact(result.summary),
                evidence=self.secrets.redact_all(result.evidence),
            )
        else:
            error = StandardError.from_dict(self.secrets.redact_all(result.error.to_dict()))
            self.app.fail_step(self.session_id, index, error)

    def _workflow_timed_out(self, session: WorkflowSession) -> bool:
        elapsed = datetime.now(UTC) - session.created_on
        return elapsed.total_seconds() * 1000 > self.limits.workflow_timeout_ms

    def _back_off(self, attempts_so_far: int) -> None:
        delay_s = self.limits.retry_backoff_ms / 1000 * 2 ** (attempts_so_far - 1)
        if self.stop.wait(delay_s):
            raise Interrupted

    # ---- recovery -----------------------------------------------------------------------

    def _recover(self) -> None:
        """Record commands left without a result as interrupted; rebuild executor state."""
        session = self.app.get_session(self.session_id)
        running = session.running_step
        if running is not None:
            for command_id in list(session.steps[running].open_commands):
                error = StandardError.of(
                    "COMMAND_INTERRUPTED", "the runner stopped before this command's result"
                )
                self.app.finish_command(
                    self.session_id,
                    running,
                    command_id=command_id,
                    ok=False,
                    output="interrupted",
                    error=error.to_dict(),
                )
                log.warning(
                    "Command %s was interrupted; deciding again",
                    command_id,
                    extra=on_step(self.session_id, running),
                )
        self._restore_executors()

    def _restore_executors(self) -> None:
        issued: dict[str, WorkflowSession.CommandIssued] = {}
        for event in self.app.history(self.session_id):
            if isinstance(event, WorkflowSession.CommandIssued):
                issued[event.command_id] = event
            elif isinstance(event, WorkflowSession.CommandFinished) and event.ok:
                command = issued.get(event.command_id)
                if command is not None and command.executor in ("http", "shell"):
                    self.executor(command.executor).restore(
                        Command(command.executor, command.name, command.args), event.output
                    )

    # ---- one step -----------------------------------------------------------------------

    def _run_step(self, index: int, text: str, expect: str | None) -> StepResult:
        deadline = time.monotonic() + self.limits.step_timeout_ms / 1000
        try:
            commands = self.definitions.match(text)
        except DefinitionError as error:
            return _failure("VALIDATION_FAILED", f"step {index}: {error}")
        if commands is None:
            return self._run_with_ai(index, text, deadline)
        result = self._run_commands(index, commands, deadline)
        if isinstance(result, StepFailure):
            return result
        done = StepDone(summary=f"{text}: ok", evidence=result)
        if not expect:
            return done
        return self._check_expectation(index, text, expect, deadline, done)

    def _run_commands(
        self, index: int, commands: list[Command], deadline: float
    ) -> list[str] | StepFailure:
        """Run the commands in order; the evidence of each, or the first failure."""
        evidence = []
        for command in commands:
            if (timeout := self.safe_point(deadline)) is not None:
                return timeout
            outcome = self.execute(index, command)
            if not outcome.ok:
                return StepFailure(outcome.error or StandardError.of("COMMAND_FAILED", "failed"))
            evidence.append(truncated(outcome.output, 300))
        return evidence

    def _check_expectation(
        self, index: int, text: str, expect: str, deadline: float, done: StepDone
    ) -> StepResult:
        try:
            checks = self.definitions.match(expect)
        except DefinitionError as error:
            return _failure("VALIDATION_FAILED", f"step {index} expect: {error}")
        if checks is None:
            return self._run_with_ai(index, text, deadline)
        checked = self._run_commands(index, checks, deadline)
        if isinstance(checked, StepFailure):
            return checked
        return StepDone(done.summary, done.evidence + checked)

    def safe_point(self, deadline: float) -> StepFailure | None:
        """Raise Interrupted unless the session is still ours to run; a timeout fails the step."""
        if self.stop.is_set():
            raise Interrupted
        if self.app.get_session(self.session_id).status is not SessionStatus.RUNNING:
            raise Interrupted
        if time.monotonic() > deadline:
            return _failure(
                "TASK_LOOP_TIMEOUT",
                f"the step ran longer than {self.limits.step_timeout_ms} ms",
                limit="step_timeout_ms",
            )
        return None

    def executor(self, kind: str) -> Executor:
        if kind not in self.executors:
            build = self.loop.executor_kinds.get(kind)
            if build is None:
                kinds = ", ".join(sorted(self.loop.executor_kinds))
                raise ValueError(f"no executor named {kind!r}; there are {kinds}")
            self.executors[kind] = build(ExecutorSetup(self.session_id, self.config, self.loop))
        return self.executors[kind]

    def execute(self, index: int, command: Command) -> Outcome:
        """Issue, run and record one command. Secrets never reach the recorded args or output."""
        try:
            executor = self.executor(command.executor)
        except ValueError as error:
            return Outcome.failed("UNKNOWN_EXECUTOR", str(error))
        command_id = f"s{index}-{uuid4().hex[:12]}"
        self.app.issue_command(
            self.session_id,
            index,
            command_id=command_id,
            executor=command.executor,
            name=command.name,
            args=self.secrets.redact_all(command.args),
        )
        started = time.monotonic()
        outcome = executor.run(command)
        self.app.finish_command(
            self.session_id,
            index,
            command_id=command_id,
            ok=outcome.ok,
            output=self.secrets.redact(outcome.output),
            duration_ms=int((time.monotonic() - started) * 1000),
            error=self.secrets.redact_all(outcome.error.to_dict()) if outcome.error else None,
        )
        return outcome

    # ---- the AI path --------------------------------------------------------------------

    def _run_with_ai(self, index: int, text: str, deadline: float) -> StepResult:
        ai = self.loop.ai
        if ai is None:
            return _failure(
                "NO_AI_PROVIDER",
                f"no step definition matches {text!r} and no AI provider is configured; set "
                "STEPLINE_AI_MODEL and STEPLINE_AI_API_KEY (or STEPLINE_AI_BASE_URL for a "
                "local OpenAI-compatible server), or write the step as a step definition",
            )
        return AiStep(self, ai, index, deadline).run()


class AiStep:
    """One step decided turn by turn by the model, within the loop's limits."""

    def __init__(self, run: SessionRun, ai: AiProvider, index: int, deadline: float) -> None:
        self.run_ = run
        self.ai = ai
        self.index = index
        self.deadline = deadline
        self.limits = run.limits
        self.feedback: list[str] = []
        self.malformed_replies = 0
        self.consecutive_failures = 0
        self.recent_commands: list[str] = []
        self._attempt_started: int | None = None

    def _attempt_events(self) -> list[WorkflowSession.Event]:
        """The events of this step's current attempt. The whole history is read once, to find
        where the attempt started; later turns read only from there."""
        app, session_id = self.run_.app, self.run_.session_id
        if self._attempt_started is None:
            starts = [
                e.originator_version
                for e in app.history(session_id)
                if isinstance(e, WorkflowSession.StepStarted) and e.step_index == self.index
            ]
            self._attempt_started = starts[-1] if starts else 1
        return app.history(session_id, after=self._attempt_started - 1)

    def run(self) -> StepResult:
        while True:
            if (timeout := self.run_.safe_point(self.deadline)) is not None:
                return timeout
            session = self.run_.app.get_session(self.run_.session_id)
            step = session.steps[self.index]
            if step.turns >= self.limits.max_turns_per_step:
                return _failure(
                    "MAX_TURNS_EXCEEDED",
                    f"step {self.index} used all {self.limits.max_turns_per_step} turns",
                    limit="max_turns_per_step",
                )
            result = self._turn(
                session, step.expect, last=step.turns + 1 >= self.limits.max_turns_per_step
            )
            if result is not None:
                return result

    def _tools(self, expect: str | None, last: bool) -> list[dict[str, Any]]:
        finishing = finishing_tools(expect)
        if last:
            return finishing
        executor = self.run_.executor(str(self.run_.config.get("executor", "http")))
        return executor.tools() + finishing

    def _turn(self, session: WorkflowSession, expect: str | None, last: bool) -> StepResult | None:
        run = self.run_
        messages = build_messages(
            session,
            self.index,
            attempt_events=self._attempt_events(),
            feedback=self.feedback,
            secrets=run.secrets,
            char_budget=self.limits.context_char_budget,
        )
        try:
            decision = self.ai.decide(messages, self._tools(expect, last))
        except AiProviderError as error:
            return StepFailure(error.error)
        run.app.record_turn(
            run.session_id,
            self.index,
            reasoning=run.secrets.redact(decision.reasoning or (decision.malformed or "")),
            model=decision.model,
            prompt_tokens=decision.prompt_tokens,
            completion_tokens=decision.completion_tokens,
            latency_ms=decision.latency_ms,
        )
        self.feedback = []
        used = run.app.get_session(run.session_id).tokens_used
        if used > self.limits.token_budget:
            return _failure(
                "TOKEN_BUDGET_EXCEEDED",
                f"the session used {used} tokens; its budget is {self.limits.token_budget}",
                limit="token_budget",
            )
        return self._act_on(decision.call, decision.malformed, expect)

    def _act_on(self, call: Any, malformed: str | None, expect: str | None) -> StepResult | None:
        if call is None:
            self.malformed_replies += 1
            if self.malformed_replies > 1:
                return _failure(
                    "AI_PROVIDER_ERROR", f"the model replied malformed twice: {malformed}"
                )
            self.feedback = [
                f"Your last reply was not usable: {malformed}. Reply with one valid tool call."
            ]
            return None
        if call.name == COMPLETE_STEP:
            if expect and call.arguments.get("expect_met") is not True:
                self.feedback = [
                    f"The step may complete only if this holds: {expect}. Check it with the "
                    "tools, then call complete_step with expect_met=true, or call fail_step."
                ]
                return None
            evidence = call.arguments.get("evidence") or []
            return StepDone(str(call.arguments.get("summary", "")), [str(e) for e in evidence])
        if call.name == FAIL_STEP:
            return _failure("STEP_FAILED", str(call.arguments.get("reason", "the model gave up")))
        return self._command(call)

    def _command(self, call: Any) -> StepResult | None:
        run = self.run_
        executor = run.executor(str(run.config.get("executor", "http")))
        command = executor.command_for_tool(call.name, call.arguments)
        if command is None:  # the tool list came from this executor, so this is a bug guard
            return _failure("AI_PROVIDER_ERROR", f"no command for tool {call.name}")
        if (timeout := run.safe_point(self.deadline)) is not None:
            return timeout
        signature = json.dumps([command.name, command.args], sort_keys=True)
        repeats = self.limits.max_repeated_commands
        self.recent_commands = [*self.recent_commands, signature][-repeats:]
        if len(self.recent_commands) == repeats and len(set(self.recent_commands)) == 1:
            return _failure(
                "LOOP_DETECTED",
                f"the model issued the same command {repeats} times in a row",
                limit="max_repeated_commands",
            )
        outcome = run.execute(self.index, command)
        self.consecutive_failures = 0 if outcome.ok else self.consecutive_failures + 1
        if self.consecutive_failures >= self.limits.max_consecutive_failures:
            return _failure(
                "CONSECUTIVE_FAILURES",
                f"{self.consecutive_failures} commands failed in a row",
                limit="max_consecutive_failures",
            )
        return None
