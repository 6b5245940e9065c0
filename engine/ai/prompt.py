"""What the model sees for one turn: rules, the workflow, the current step, and what was done.

Built from the session and its recorded events, which hold placeholders rather than secret
values; the finished prompt is redacted once more before it leaves the process.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from domain.actions import actions_of
from domain.payloads import ErrorPayload
from domain.session import StepStatus, WorkflowSession
from engine.secrets import Secrets

RULES = """You carry out one step of an automation workflow at a time, using tools.
Rules:
- Call exactly one tool in every reply.
- Use the executor's tools to act and to observe; base every claim on what a tool returned.
- When the current step is done, call complete_step with a one-sentence summary and evidence.
- If the step cannot be done, call fail_step with the reason. Do not work on other steps.
- Secret values appear only as {{secrets.NAME}} placeholders, one-time codes as {{totp.NAME}};
  pass the placeholders as they are.
"""


def overview(session: WorkflowSession) -> str:
    lines = [f"Workflow: {session.name}"]
    for index, step in enumerate(session.steps):
        marker = "->" if index == session.current_step else "  "
        line = f"{marker} {index}. [{step.status.value}] {step.text}"
        if step.status is StepStatus.COMPLETED and step.summary:
            line += f" — done: {step.summary}"
        lines.append(line)
    return "\n".join(lines)


def current_step(session: WorkflowSession, index: int) -> str:
    step = session.steps[index]
    text = f"Current step {index}: {step.text}"
    if step.expect:
        text += f"\nThe step succeeds only if: {step.expect}"
    return text


def _verdict(ok: bool, error: ErrorPayload | None) -> str:
    return "ok" if ok else f"FAILED ({error['code'] if error else 'error'})"


def divergence_note(event: WorkflowSession.ReplayDiverged) -> str:
    return (
        f"Replaying the recorded run: {event.executor}.{event.name} {json.dumps(event.args)} "
        f"returned {json.dumps(event.got)} where the record had {json.dumps(event.expected)}. "
        "The step goes on live from here."
    )


def learned_miss_note(event: WorkflowSession.LearnedActionUsed) -> str:
    """What the model is told when a learned action missed (see `engine.loop.learned_attempt`)."""
    miss = event.miss or {}
    return (
        f"An earlier run of this step learned how to do it; its {event.commands} first "
        "command(s) were done again and gave the results they gave then. The next, "
        f"{miss.get('executor')}.{miss.get('name')} {json.dumps(miss.get('args'))}, returned "
        f"{json.dumps(miss.get('got'))} where the earlier run got "
        f"{json.dumps(miss.get('expected'))}: the target changed there. Carry on from here to "
        "complete the step."
    )


def wait_note(event: WorkflowSession.WaitEnded) -> str:
    """How a wait of the step ended, as the model is told it."""
    said = f": {event.comment}" if event.comment else ""
    by = "" if event.outcome in ("due", "timed_out") else f" by {event.actor}"
    return f"Waited for {event.kind}: {event.outcome.replace('_', ' ')}{by}{said}"


def describe_actions(events: Sequence[WorkflowSession.Event]) -> list[str]:
    """One entry per turn, command or check of the current attempt, oldest first."""
    entries: list[str] = []
    actions = actions_of(events)
    for event in events:
        match event:
            case WorkflowSession.TurnRecorded(turn=turn, reasoning=reasoning) if reasoning:
                entries.append(f"Turn {turn} reasoning: {reasoning}")
            case WorkflowSession.CommandIssued(command_id=command_id):
                finished = actions[command_id].finished
                if finished is not None:
                    call = f"{event.executor}.{event.name} {json.dumps(event.args)}"
                    verdict = _verdict(finished.ok, finished.error)
                    entries.append(f"Called {call} -> {verdict}: {finished.output}")
            case WorkflowSession.Checked(ok=ok, output=output):
                check = f"{event.executor}.{event.name} {json.dumps(event.args)}"
                entries.append(f"Checked {check} -> {_verdict(ok, event.error)}: {output}")
            case WorkflowSession.ReplayDiverged():
                entries.append(divergence_note(event))
            case WorkflowSession.LearnedActionUsed(hit=False):
                entries.append(learned_miss_note(event))
            case WorkflowSession.WaitEnded():
                entries.append(wait_note(event))
    return entries


def within_budget(entries: list[str], budget: int) -> list[str]:
    """The most recent entries whose total length fits the budget."""
    kept: list[str] = []
    used = 0
    for entry in reversed(entries):
        if used + len(entry) > budget:
            kept.append(f"[{len(entries) - len(kept)} earlier actions omitted]")
            break
        kept.append(entry)
        used += len(entry)
    return list(reversed(kept))


def build_messages(
    session: WorkflowSession,
    index: int,
    *,
    attempt_events: Sequence[WorkflowSession.Event],
    feedback: Sequence[str],
    secrets: Secrets,
    char_budget: int = 24_000,
) -> list[dict[str, Any]]:
    actions = within_budget(describe_actions(attempt_events), char_budget)
    done = "\n".join(actions) if actions else "Nothing yet."
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": RULES},
        {
            "role": "user",
            "content": f"{overview(session)}\n\n{current_step(session, index)}\n\n"
            f"What you have done in this step so far:\n{done}",
        },
    ]
    messages.extend({"role": "user", "content": note} for note in feedback)
    redacted: list[dict[str, Any]] = secrets.redact_all(messages)
    return redacted


VIEW_NOTE = "The page as it looks now (a screenshot of the browser's viewport):"


def with_view(
    messages: list[dict[str, Any]], image: bytes, media_type: str, *, withheld: str | None = None
) -> list[dict[str, Any]]:
    """`messages` and, last, a user message showing `image` (vision) as an OpenAI-compatible
    image part, a data URL. Added after redaction: the image's base64 is no text to redact.
    A screenshot `withheld` is said instead, with why."""
    if withheld is not None:
        return [*messages, {"role": "user", "content": f"No screenshot this turn: {withheld}."}]
    url = f"data:{media_type};base64,{base64.b64encode(image).decode()}"
    parts = [{"type": "text", "text": VIEW_NOTE}, {"type": "image_url", "image_url": {"url": url}}]
    return [*messages, {"role": "user", "content": parts}]


ToolCallOf = Callable[[str, str, dict[str, Any]], tuple[str, dict[str, Any]] | None]
"""(executor, command name, args) -> the (tool name, arguments) the model called it with."""


def build_conversation(
    session: WorkflowSession,
    index: int,
    *,
    attempt_events: Sequence[WorkflowSession.Event],
    feedback: Sequence[str],
    secrets: Secrets,
    tool_call_of: ToolCallOf,
    char_budget: int = 24_000,
) -> list[dict[str, Any]]:
    """The step's turns as the API's own messages: each decision an assistant message with
    its tool call, each result a `tool` message (STEPLINE_AI_CONVERSATION=messages)."""
    exchanges = within_budget_exchanges(_exchanges(attempt_events, tool_call_of), char_budget)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": RULES},
        {"role": "user", "content": f"{overview(session)}\n\n{current_step(session, index)}"},
    ]
    for exchange in exchanges:
        messages.extend(exchange)
    messages.extend({"role": "user", "content": note} for note in feedback)
    redacted: list[dict[str, Any]] = secrets.redact_all(messages)
    return redacted


def _exchanges(
    events: Sequence[WorkflowSession.Event], tool_call_of: ToolCallOf
) -> list[list[dict[str, Any]]]:
    """One list of messages per turn: what the model said, and what its tool call returned."""
    exchanges: list[list[dict[str, Any]]] = []
    actions = actions_of(events)
    for event in events:
        match event:
            case WorkflowSession.TurnRecorded(reasoning=reasoning):
                exchanges.append([{"role": "assistant", "content": reasoning or ""}])
            case WorkflowSession.ReplayDiverged():
                exchanges.append([{"role": "user", "content": divergence_note(event)}])
            case WorkflowSession.LearnedActionUsed(hit=False):
                exchanges.append([{"role": "user", "content": learned_miss_note(event)}])
            case WorkflowSession.WaitEnded():
                exchanges.append([{"role": "user", "content": wait_note(event)}])
            case WorkflowSession.CommandIssued(command_id=call_id) if exchanges:
                called = tool_call_of(event.executor, event.name, event.args)
                if called is not None:
                    name, arguments = called
                    function = {"name": name, "arguments": json.dumps(arguments)}
                    exchanges[-1][0]["tool_calls"] = [
                        {"id": call_id, "type": "function", "function": function}
                    ]
                    exchanges[-1][0]["content"] = exchanges[-1][0]["content"] or None
                finished = actions[call_id].finished
                if finished is not None and exchanges[-1][0].get("tool_calls"):
                    exchanges[-1].append(_tool_message(call_id, finished))
    return exchanges


def _tool_message(call_id: str, finished: WorkflowSession.CommandFinished) -> dict[str, Any]:
    status = _verdict(finished.ok, finished.error)
    return {"role": "tool", "tool_call_id": call_id, "content": f"{status}: {finished.output}"}


def within_budget_exchanges(
    exchanges: list[list[dict[str, Any]]], budget: int
) -> list[list[dict[str, Any]]]:
    """The most recent whole exchanges whose text fits the budget, and a note of the rest."""
    kept: list[list[dict[str, Any]]] = []
    used = 0
    for exchange in reversed(exchanges):
        size = sum(len(json.dumps(message)) for message in exchange)
        if used + size > budget:
            omitted = len(exchanges) - len(kept)
            kept.append([{"role": "user", "content": f"[{omitted} earlier turns omitted]"}])
            break
        kept.append(exchange)
        used += size
    return list(reversed(kept))
