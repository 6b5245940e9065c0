"""The AI path: one step decided turn by turn by the model, within the loop's limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from domain.errors import StandardError
from domain.extraction import Extraction
from domain.session import WorkflowSession
from domain.waits import WaitKind
from engine.ai.prompt import build_conversation, build_messages, with_view
from engine.ai.provider import (
    COMPLETE_STEP,
    FAIL_STEP,
    REQUEST_APPROVAL,
    AiProvider,
    AiProviderError,
    Decision,
    Mistake,
    ToolCall,
    approval_tool,
    finishing_tools,
)
from engine.executors import Executor, Showing, View, holds_placeholder
from engine.executors.http import HTTP_STATUS_ERROR
from engine.executors.kinds import DEFAULT_EXECUTOR
from engine.loop.limits import Limits
from engine.loop.step_results import (
    Deadline,
    StepDone,
    StepFailure,
    StepOnHold,
    StepResult,
    failure,
)
from engine.loop.step_run import StepRun
from engine.loop.waits import WaitRequest, outcome_of
from engine.tracing import ended, used


class AiAttempt:
    """One step decided turn by turn by the model, within the loop's limits."""

    def __init__(
        self,
        run: StepRun,
        ai: AiProvider,
        index: int,
        attempt: int,
        *,
        deadline: Deadline,
        limits: Limits,
    ) -> None:
        """`limits`: the step's own (its policy over the session's)."""
        self.run_ = run
        self.ai = ai
        self.index = index
        self.attempt = attempt
        self.deadline = deadline
        self.limits = limits
        self.feedback: list[str] = []
        """What the model is told on its next turn only (what was wrong with its last)."""
        self.standing: list[str] = []
        """What it is told on every turn of the attempt (a judge's brief)."""
        self.last_mistake: Mistake | None = None
        self.consecutive_failures = 0
        self.recent_commands: list[str] = []
        self._attempt_started: int | None = None

    def _attempt_events(self) -> list[WorkflowSession.Event]:
        """The events of this step's attempt. The whole history is read once, to find where
        the attempt started; later turns read only from there."""
        if self._attempt_started is None:
            self._attempt_started = self.run_.attempt_started(self.index, self.attempt)
        return self.run_.events_since(self._attempt_started)

    def run(self) -> StepResult:
        if (rejected := self._after_a_wait()) is not None:
            return rejected
        while True:
            if (timeout := self.run_.safe_point(self.deadline)) is not None:
                return timeout
            session = self.run_.session
            step = session.steps[self.index]
            if step.turns >= self.limits.max_turns_per_step:
                return self._out_of_turns()
            result = self._turn(
                session, step.expect, last=step.turns + 1 >= self.limits.max_turns_per_step
            )
            if result is not None:
                return result

    def _after_a_wait(self) -> StepResult | None:
        """The attempt resumed after the model asked for an approval: a rejection (or no
        answer in time) fails the step; an approval is on the record the model reads."""
        events = self._attempt_events()
        last = events[-1] if events else None
        if not isinstance(last, WorkflowSession.WaitEnded) or last.outcome == "approved":
            return None
        started = next(
            e for e in events if isinstance(e, WorkflowSession.WaitStarted) and e.key == last.key
        )
        outcome = outcome_of(started, last)
        assert outcome.error is not None  # not approved: rejected or timed out
        return StepFailure(outcome.error)

    def _out_of_turns(self) -> StepFailure:
        used = f"step {self.index} used all {self.limits.max_turns_per_step} turns"
        setting = self.run_.session.steps[self.index].policy.setting_of("max_turns_per_step")
        mistake = self.last_mistake
        if mistake is not None:  # say what went wrong, not only that time ran out
            return failure(
                mistake.code,
                f"{used}; the model's last reply was unusable: {mistake.reason}",
                reason=mistake.reason,
                tool=mistake.tool,
                limit=setting,
            )
        return failure("MAX_TURNS_EXCEEDED", f"{used} ({setting})", limit=setting)

    def _messages(
        self, session: WorkflowSession, events: list[WorkflowSession.Event]
    ) -> list[dict[str, Any]]:
        """The prompt, in the configured conversation shape (STEPLINE_AI_CONVERSATION)."""
        context: dict[str, Any] = {
            "attempt_events": events,
            "feedback": self._briefed(events) + self.standing + self.feedback,
            "secrets": self.run_.secrets,
            "char_budget": self.limits.context_char_budget,
        }
        if self.run_.settings.ai_conversation == "messages":
            return build_conversation(
                session, self.index, tool_call_of=self._tool_call_of, **context
            )
        return build_messages(session, self.index, **context)

    def _briefed(self, events: list[WorkflowSession.Event]) -> list[str]:
        """Before the attempt's first command, what the executor says the model should see
        first (the browser: the page as it is, and whether the browser was restarted)."""
        if any(isinstance(e, WorkflowSession.CommandIssued) for e in events):
            return []
        briefing = self._executor().briefing()
        return [briefing] if briefing else []

    def _view(self) -> View | None:
        """With vision on (config.vision, else STEPLINE_AI_VISION), what the executor shows
        of where it is (the browser's screenshot); None otherwise."""
        vision = self.run_.config.get("vision")
        if not (self.run_.settings.ai_vision if vision is None else vision):
            return None
        executor = self._executor()
        return executor.view() if isinstance(executor, Showing) else None

    def _executor(self) -> Executor:
        return self.run_.executor(str(self.run_.config.get("executor", DEFAULT_EXECUTOR)))

    def _tool_call_of(
        self, kind: str, name: str, args: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The tool call that stands for a recorded command, if one of the executor's does."""
        try:
            executor = self.run_.executor(kind)
        except ValueError:
            return None
        for tool in executor.tools():
            tool_name = tool["function"]["name"]
            command = executor.command_for_tool(tool_name, args)
            if command is not None and (command.executor, command.name) == (kind, name):
                return tool_name, args
        return None

    def _tools(
        self, expect: str | None, last: bool, error_status: int | None
    ) -> list[dict[str, Any]]:
        finishing = finishing_tools(expect, error_status, self._extraction_schema())
        if last:
            return finishing
        asking = [approval_tool()] if self.run_.config.get("approvals") == "model" else []
        return self._executor().tools() + asking + finishing

    def _turn(self, session: WorkflowSession, expect: str | None, last: bool) -> StepResult | None:
        run = self.run_
        if (used_up := run.model_budget_used_up()) is not None:
            return StepOnHold(used_up)
        events = self._attempt_events()
        messages = self._messages(session, events)
        view = self._view()
        if view is not None:
            messages = with_view(messages, view.content, view.media_type, withheld=view.withheld)
        error_status = unjudged_error_status(events)
        try:
            decision = self._asked(messages, self._tools(expect, last, error_status))
        except AiProviderError as error:
            if error.outage and run.settings.ai_pause_on_outage:
                return StepOnHold(error.error)
            return StepFailure(error.error)
        decision = self._with_data_checked(decision)
        run.record_turn(
            self.index,
            reasoning=run.secrets.redact(_turn_note(decision, view)),
            model=decision.model,
            prompt_tokens=decision.prompt_tokens,
            completion_tokens=decision.completion_tokens,
            latency_ms=decision.latency_ms,
            artifacts=view.kept() if view is not None else [],
        )
        self.feedback = []
        used = run.session.tokens_used
        if used > self.limits.token_budget:
            return failure(
                "TOKEN_BUDGET_EXCEEDED",
                f"the session used {used} tokens; its budget is {self.limits.token_budget}",
                limit="token_budget",
            )
        if decision.mistake is not None:
            return self._mistaken(decision.mistake)
        assert decision.call is not None  # a reply is a tool call or a mistake
        self.last_mistake = None
        return self._act_on(decision.call, expect, error_status)

    def _asked(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Decision:
        """The model's decision; the call is a span of the step's (see `engine.tracing`)."""
        with self.run_.tracing.chat(self.ai.model) as span:
            try:
                decision = self.ai.decide(messages, tools)
            except AiProviderError as error:
                ended(span, "failed", error.error)
                raise
            used(span, decision.model, decision.prompt_tokens, decision.completion_tokens)
            return decision

    def _mistaken(self, mistake: Mistake) -> StepResult | None:
        """A reply that was no usable tool call counts as a failed turn; the model is told
        exactly what was wrong and asked again, until the failures in a row run out."""
        self.last_mistake = mistake
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.limits.max_consecutive_failures:
            return failure(
                mistake.code,
                f"the model's last {self.consecutive_failures} replies were unusable; the "
                f"last: {mistake.reason}",
                reason=mistake.reason,
                tool=mistake.tool,
                limit="max_consecutive_failures",
            )
        self.feedback = [
            f"Your last reply could not be used: {mistake.reason}. Reply with exactly one call "
            "of one of the tools offered, with arguments that fit its parameters."
        ]
        return None

    def _act_on(
        self, call: ToolCall, expect: str | None, error_status: int | None
    ) -> StepResult | None:
        if call.name == COMPLETE_STEP:
            if error_status is not None and call.arguments.get("expected_status") != error_status:
                self.feedback = [
                    f"The last request failed: it was answered {error_status}. The step may "
                    "not complete on a failed request: try another request, or call "
                    "fail_step. If that answer is what this step is meant to show, call "
                    f"complete_step with expected_status={error_status}."
                ]
                return None
            if expect and call.arguments.get("expect_met") is not True:
                self.feedback = [
                    f"The step may complete only if this holds: {expect}. Check it with the "
                    "tools, then call complete_step with expect_met=true, or call fail_step."
                ]
                return None
            evidence = call.arguments.get("evidence") or []
            summary = str(call.arguments.get("summary", ""))
            return StepDone(summary, [str(e) for e in evidence], call.arguments.get("data"))
        if call.name == FAIL_STEP:
            return failure("STEP_FAILED", str(call.arguments.get("reason", "the model gave up")))
        if call.name == REQUEST_APPROVAL:
            return self._ask_approval(str(call.arguments.get("question", "")))
        return self._command(call)

    def _extraction(self) -> Extraction | None:
        recorded = self.run_.session.steps[self.index].extract
        return Extraction.from_dict(recorded) if recorded else None

    def _extraction_schema(self) -> dict[str, Any] | None:
        extraction = self._extraction()
        return None if extraction is None else extraction.schema

    def _with_data_checked(self, decision: Decision) -> Decision:
        """A completion whose data (secrets redacted, as it would be recorded) is not what
        the step's `extract` declares is a mistake, told to the model with what is wrong.
        So is data holding a placeholder: data is never filled in, and a page could have
        the model write `{{secrets.NAME}}` into a variable a later step sends."""
        call, extraction = decision.call, self._extraction()
        if call is None or call.name != COMPLETE_STEP or extraction is None:
            return decision
        given = call.arguments.get("data")
        data = self.run_.secrets.redact_all(given)
        problem = extraction.problem(data)
        if holds_placeholder(given):
            problem = "it holds a {{namespace.name}} placeholder; write the values themselves"
        if problem is None:
            return replace(decision, call=replace(call, arguments={**call.arguments, "data": data}))
        mistake = Mistake(
            "MODEL_BAD_DATA",
            f"the data of {COMPLETE_STEP} does not fit the step's extract schema: {problem}",
            tool=COMPLETE_STEP,
        )
        return replace(decision, call=None, mistake=mistake)

    def _ask_approval(self, question: str) -> StepResult | None:
        """Wait for a person's approval of what the model asks (the run ends meanwhile, the
        session waiting; see StepRun.wait). Approved, the model goes on."""
        run = self.run_
        turn = run.session.steps[self.index].turns
        key = f"{run.session_id}:s{self.index}:a{self.attempt}:t{turn}"
        request = WaitRequest(WaitKind.APPROVAL, question=run.secrets.redact(question)[:500])
        outcome = run.wait(self.index, request, key)
        return (
            None
            if outcome.ok
            else StepFailure(outcome.error or StandardError.of("APPROVAL_REJECTED", outcome.output))
        )

    def _command(self, call: ToolCall) -> StepResult | None:
        run = self.run_
        command = self._executor().command_for_tool(call.name, call.arguments)
        if command is None:  # the tool list came from this executor, so this is a bug guard
            return failure("MODEL_UNKNOWN_TOOL", f"no command for tool {call.name}")
        if (timeout := run.safe_point(self.deadline)) is not None:
            return timeout
        signature = json.dumps([command.name, command.args], sort_keys=True)
        repeats = self.limits.max_repeated_commands
        self.recent_commands = [*self.recent_commands, signature][-repeats:]
        if len(self.recent_commands) == repeats and len(set(self.recent_commands)) == 1:
            return failure(
                "LOOP_DETECTED",
                f"the model issued the same command {repeats} times in a row",
                limit="max_repeated_commands",
            )
        outcome = run.execute(self.index, command)
        self.consecutive_failures = 0 if outcome.ok else self.consecutive_failures + 1
        if self.consecutive_failures >= self.limits.max_consecutive_failures:
            return failure(
                "CONSECUTIVE_FAILURES",
                f"{self.consecutive_failures} commands failed in a row",
                limit="max_consecutive_failures",
            )
        return None


def unjudged_error_status(events: list[WorkflowSession.Event]) -> int | None:
    """The status of the attempt's last command, if it was a request that failed on it
    (HTTP_STATUS_ERROR): a step may complete on it only by naming it as the one it expects."""
    for event in reversed(events):
        if isinstance(event, WorkflowSession.Checked):
            return None
        if isinstance(event, WorkflowSession.CommandFinished):
            error: Mapping[str, Any] = event.error or {}
            if error.get("code") != HTTP_STATUS_ERROR:
                return None
            return int(error.get("details", {}).get("status", 0)) or None
    return None


def _turn_note(decision: Decision, view: View | None = None) -> str:
    """What the turn records: the model's reasoning, what was wrong with the reply or how
    its arguments were read to fit, and why no screenshot was shown, if one was withheld."""
    mistake = decision.mistake
    withheld = f"\n[SCREENSHOT_WITHHELD] {view.withheld}" if view and view.withheld else ""
    if mistake is None:
        coercions = decision.call.coercions if decision.call is not None else ()
        notes = "".join(f"\n[ARGUMENTS_COERCED] {note}" for note in coercions) + withheld
        return f"{decision.reasoning}{notes}".strip() if notes else decision.reasoning
    return f"{decision.reasoning}\n[{mistake.code}] {mistake.reason}{withheld}".strip()
