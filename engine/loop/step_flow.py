"""Where a session goes when its next step has an `if:` or is a loop: decided as the step
comes up, on the values the session has then (its saved variables, its inputs, the last
step's result, the loop variables of the iteration it is in).

A false condition skips the step (`StepSkipped`, the expression in the reason). A loop
starts as a step and becomes its iterations (`LoopExpanded`), its items recorded as every
result is: a secret's value in one is its placeholder, so the loop refuses that item. An expression
that cannot be evaluated, or a loop that cannot take its list, fails the step with a code
that says which (EXPRESSION_FAILED, LOOP_LIMIT_EXCEEDED, LOOP_ITEM_INVALID).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from domain.errors import StandardError
from domain.expressions import Expression, ExpressionError
from domain.loops import Loop, LoopRefused
from domain.session import StepState, StepStatus, WorkflowSession
from engine.logs import LOGGER_NAME, on_step
from engine.secrets import Secrets
from engine.store.held_session import HeldSession

log = logging.getLogger(LOGGER_NAME)


def values_for(
    session: WorkflowSession, index: int, variables: Mapping[str, Any]
) -> dict[str, Any]:
    """What an expression of step `index` reads: `vars`, `inputs`, `result` (the last step
    that ran: its status, summary and error code; null before any) and its loop variables."""
    return {
        "vars": dict(variables),
        "inputs": dict(session.config.get("inputs") or {}),
        "result": _last_result(session.steps[:index]),
        **session.steps[index].bound,
    }


def _last_result(before: list[StepState]) -> dict[str, Any] | None:
    ran = (StepStatus.COMPLETED, StepStatus.FAILED)
    for step in reversed(before):
        if step.status in ran and step.loop is None:
            error: Mapping[str, Any] = step.error or {}
            return {
                "status": step.status.value,
                "summary": step.summary,
                "error_code": error.get("code"),
            }
    return None


class StepFlow:
    """Decides, on the session `held`, what a conditional or a loop step comes to."""

    def __init__(self, held: HeldSession, session_id: UUID, secrets: Secrets) -> None:
        self.held = held
        self.session_id = session_id
        self.secrets = secrets

    def passed_over(self, index: int, step: StepState, variables: Mapping[str, Any]) -> bool:
        """Whether step `index`, about to start, was decided here: skipped (its `if:` is
        false), failed (its `if:` could not be evaluated), or a loop made its iterations.
        False: it runs as any step does.

        Expressions read the variables as the log records them: a secret's value an answer
        held is its placeholder, so a condition cannot test it (nor a loop go over it), and a
        run that took the session over (its variables restored from the log) decides alike."""
        if step.status is StepStatus.FAILED:
            return False  # its failure is decided on as any step's is
        try:
            values = values_for(self.held.session, index, self.secrets.redact_all(variables))
        except RecursionError:  # a value nested too deep to read: the step cannot go on
            self._fail(index, "EXPRESSION_FAILED", "a saved variable is nested too deep to read")
            return True
        if step.status is StepStatus.PENDING and step.condition is not None:
            held = self._condition_holds(index, step.condition, values)
            if held is not True:
                return True
        if step.loop is None:
            return False
        if step.status is not StepStatus.RUNNING:  # running: taken over before it expanded
            self.held.decide(lambda s: s.start_step(index))
        self._expand(index, Loop.from_dict(step.loop), values)
        return True

    def _condition_holds(
        self, index: int, condition: str, values: Mapping[str, Any]
    ) -> bool | None:
        """True: the step runs. False: it was skipped. None: it failed."""
        try:
            holds = Expression.parse(condition, values.keys()).condition(values)
        except ExpressionError as error:
            self._fail(index, "EXPRESSION_FAILED", f"if: {error.described()}")
            return None
        if not holds:
            reason = f"skipped: if {condition} was false"
            self.held.decide(lambda s: s.skip_step(index, reason))
            log.info("Step skipped: %s", reason, extra=on_step(self.session_id, index))
        return holds

    def _expand(self, index: int, loop: Loop, values: Mapping[str, Any]) -> None:
        try:
            items = loop.items_of(values)
            self.held.decide(lambda s: s.expand_loop(index, items))
        except LoopRefused as refused:
            self._fail(index, refused.code, str(refused))
            return
        log.info(
            "Loop over %d items: %s", len(items), loop.header, extra=on_step(self.session_id, index)
        )

    def _fail(self, index: int, code: str, message: str) -> None:
        """The step fails with `code` (none of which is retryable): started first if it was
        not, so its failure is an attempt's, as every step failure is. Its message redacted,
        as every recorded error is."""
        if self.held.session.steps[index].status is not StepStatus.RUNNING:
            self.held.decide(lambda s: s.start_step(index))
        message = self.secrets.redact(message)
        error = StandardError.of(code, message).to_dict()
        self.held.decide(lambda s: s.fail_step(index, error=error, retryable=False))
        log.error("Step failed: %s (%s)", message, code, extra=on_step(self.session_id, index))
