"""The step definitions that wait, and what their commands ask for.

    wait for approval[: <what is asked>][ within <duration>]
    wait <duration>                       e.g. wait 10 minutes, wait 3 seconds, wait 1h
    wait until <ISO 8601 time>            e.g. wait until 2026-12-01T09:00Z
    wait for signal "<name>"[ within <duration>]

Each builds one command of the `wait` pseudo-executor: the task loop records the wait in the
log instead of running anything (see `SessionRun.wait`), and the session waits holding no
lease. A signal's body is saved as `{{vars.<name>}}` (its name's dots and dashes written `_`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.errors import DomainError
from domain.json_values import unstorable
from domain.session import WorkflowSession
from domain.waits import WaitKind, WaitOutcome, variable_of
from engine.executors import Command, Outcome, holds_placeholder, truncated
from engine.loop.definitions import DefinitionError, Definitions
from engine.store.held_session import HeldSession

WAIT = "wait"
"""The executor name of a wait's command: nothing runs it, the task loop records it."""
MAX_QUESTION = 500
SIGNAL_NAME = r"[A-Za-z0-9_.:-]{1,100}"
"""What a signal may be called: it is a path segment of /v1/sessions/{id}/signals/{name}."""
DURATION = r"\d+(?:\.\d+)?\s*[a-z]+"
_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_AMOUNT = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)", re.IGNORECASE)


def seconds_in(duration: str) -> float:
    """`10 minutes`, `3 seconds`, `1h`, `2 days` in seconds; DefinitionError if it is none."""
    found = _AMOUNT.fullmatch(duration.strip())
    unit = _UNITS.get(found["unit"].lower()) if found else None
    if found is None or unit is None:
        raise DefinitionError(
            f"{duration!r} is not a duration",
            "Write a number and a unit: 30 seconds, 10 minutes, 2 hours, 1 day (or 30s, 10m, "
            "2h, 1d)",
        )
    return float(found["amount"]) * unit


def moment(text: str) -> datetime:
    """An ISO 8601 time with its time zone (`2026-12-01T09:00Z`)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DefinitionError(
            f"{text!r} is not an ISO 8601 time",
            "Write the time as ISO 8601 with its zone: wait until 2026-12-01T09:00Z",
        ) from None
    if when.tzinfo is None:
        raise DefinitionError(
            f"{text!r} has no time zone",
            "Give the time zone: 2026-12-01T09:00Z, or 2026-12-01T10:00+01:00",
        )
    return when.astimezone(UTC)


@dataclass(frozen=True)
class WaitRequest:
    """What a `wait` command asks for, read from its arguments."""

    kind: WaitKind
    question: str | None = None
    signal: str | None = None
    seconds: float | None = None
    """A timer's length, or an approval's or a signal's timeout (None: none)."""
    until: datetime | None = None
    """A timer's time, when given as one."""

    @classmethod
    def of(cls, command: Command) -> WaitRequest:
        args = command.args
        until = args.get("until")
        return cls(
            WaitKind(command.name),
            question=args.get("question"),
            signal=args.get("signal"),
            seconds=args.get("seconds"),
            until=datetime.fromisoformat(until) if until else None,
        )

    def due_at(self, now: datetime) -> datetime | None:
        """When a worker ends the wait unprompted, if the wait starts `now`."""
        if self.until is not None:
            return self.until
        return None if self.seconds is None else now + timedelta(seconds=self.seconds)

    def describe(self) -> str:
        match self.kind:
            case WaitKind.APPROVAL:
                return f"approval: {self.question}" if self.question else "approval"
            case WaitKind.SIGNAL:
                return f"signal {self.signal}"
            case WaitKind.TIMER:
                return f"until {self.until}" if self.until else f"{self.seconds:g} s"


def recorded_wait(started: WorkflowSession.WaitStarted) -> Command:
    """A recorded wait as the command a replay waits with: the same approval or signal, or a
    timer as long as the source's was (it paces the world the replay acts on)."""
    kind = WaitKind(started.kind)
    seconds = None
    if started.due_at is not None:
        seconds = (started.due_at - started.started_at).total_seconds()
    args: dict[str, Any] = {"seconds": seconds}
    if kind is WaitKind.APPROVAL:
        args["question"] = started.question
    if started.signal is not None:
        args |= {"signal": started.signal, "name": variable_of(started.signal)}
    return Command(WAIT, kind.value, args)


@dataclass(frozen=True)
class RecordedDecision:
    """How a source's wait ended, used again by its replay instead of waiting for a person or
    a sender again: its approval, or its signal's body."""

    source_session_id: str
    kind: WaitKind
    signal: str | None
    data: Any
    said: str
    """Who decided in the source, and what they said."""

    @classmethod
    def of(
        cls,
        source_session_id: str,
        started: WorkflowSession.WaitStarted,
        ended: WorkflowSession.WaitEnded,
    ) -> RecordedDecision | None:
        """None for a timer: a replay waits again."""
        kind = WaitKind(started.kind)
        if kind is WaitKind.TIMER:
            return None
        said = f"{ended.outcome} by {ended.actor}" + (f": {ended.comment}" if ended.comment else "")
        return cls(source_session_id, kind, started.signal, ended.data, said)

    def before(self, held: HeldSession) -> None:
        """A signal is in the mailbox before the wait starts, so the wait takes it at once."""
        if self.signal is not None:
            held.decide(lambda s: s.receive_signal(self.signal or "", self.data))

    def after(self, held: HeldSession) -> None:
        if self.kind is WaitKind.APPROVAL:
            comment = f"as in session {self.source_session_id}, {self.said}"
            held.decide(lambda s: s.approve(comment))


def _approval(match: re.Match[str]) -> list[Command]:
    question = (match["question"] or "").strip() or None
    if question is not None and len(question) > MAX_QUESTION:
        raise DefinitionError(
            f"the question is longer than {MAX_QUESTION} characters",
            "Ask the approval in fewer words",
        )
    args: dict[str, Any] = {"question": question, "seconds": _within(match)}
    return [Command(WAIT, WaitKind.APPROVAL.value, args)]


def _timer(match: re.Match[str]) -> list[Command]:
    return [Command(WAIT, WaitKind.TIMER.value, {"seconds": seconds_in(match["duration"])})]


def _timer_until(match: re.Match[str]) -> list[Command]:
    until = moment(match["when"]).isoformat()
    return [Command(WAIT, WaitKind.TIMER.value, {"until": until})]


def _signal(match: re.Match[str]) -> list[Command]:
    name = match["signal"]
    args = {"signal": name, "name": variable_of(name), "seconds": _within(match)}
    return [Command(WAIT, WaitKind.SIGNAL.value, args)]


def _within(match: re.Match[str]) -> float | None:
    return seconds_in(match["within"]) if match["within"] else None


def add_waits(definitions: Definitions) -> None:
    """Register the definitions that wait (see the module's docstring)."""
    within = rf"(?:\s+within\s+(?P<within>{DURATION}))?"
    definitions.add(
        rf"wait for approval(?:\s*:\s*(?P<question>.+?))?{within}",
        _approval,
        "wait for approval: Send the payment? within 2h",
    )
    definitions.add(
        rf'wait for signal "(?P<signal>{SIGNAL_NAME})"{within}',
        _signal,
        'wait for signal "payment.received" within 1h',
    )
    # A time starts with a digit: `wait until the page loads` is plain language, for the model.
    definitions.add(r"wait until (?P<when>\d\S*)", _timer_until, "wait until 2026-12-01T09:00Z")
    definitions.add(rf"wait (?P<duration>{DURATION})", _timer, "wait 10 minutes")


# ---- how a wait ended, as the step sees it ---------------------------------------------


def outcome_of(started: WorkflowSession.WaitStarted, ended: WorkflowSession.WaitEnded) -> Outcome:
    """The wait as a command's outcome: the step goes on (approved, due, signalled) or fails
    (rejected: APPROVAL_REJECTED with the comment; timed out)."""
    outcome = WaitOutcome(ended.outcome)
    by = f" by {ended.actor}" + (f": {ended.comment}" if ended.comment else "")
    match outcome:
        case WaitOutcome.APPROVED:
            return Outcome(True, f"approved{by}")
        case WaitOutcome.DUE:
            return Outcome(True, f"waited {ended.waited_ms} ms, until {started.due_at}")
        case WaitOutcome.SIGNALLED:
            body = truncated(json.dumps(ended.data, ensure_ascii=False), 300)
            return Outcome(True, f"signal {started.signal} received: {body}")
        case WaitOutcome.REJECTED:
            return Outcome.failed(
                "APPROVAL_REJECTED",
                f"the approval was rejected{by}",
                comment=ended.comment,
                rejected_by=ended.actor,
                question=started.question,
            )
        case WaitOutcome.TIMED_OUT:
            return _timed_out(started)


def _timed_out(started: WorkflowSession.WaitStarted) -> Outcome:
    if started.kind == WaitKind.SIGNAL.value:
        return Outcome.failed(
            "SIGNAL_TIMED_OUT",
            f"no signal {started.signal} came by {started.due_at}",
            signal=started.signal,
            due_at=str(started.due_at),
        )
    return Outcome.failed(
        "APPROVAL_TIMED_OUT",
        f"nobody approved by {started.due_at}",
        question=started.question,
        due_at=str(started.due_at),
    )


def variable_value(body: Any) -> Any:
    """A signal's body as `{{vars.NAME}}` fills it in: a string, number or boolean as it is,
    anything else (an object, a list, null) as its JSON text."""
    if isinstance(body, str | int | float | bool):
        return body
    return json.dumps(body, ensure_ascii=False)


# ---- what a signal may carry -------------------------------------------------------------


class SignalRefused(DomainError):
    """A signal the session may not be sent (its name, its body)."""

    code = "VALIDATION_FAILED"


class SignalTooLarge(DomainError):
    code = "PAYLOAD_TOO_LARGE"


def signal_too_large(body: Any, limit: int) -> SignalTooLarge | None:
    """Why the body is too large (STEPLINE_SIGNAL_MAX_BYTES, its JSON text), if it is."""
    size = len(json.dumps(body, ensure_ascii=False).encode())
    if size <= limit:
        return None
    return SignalTooLarge(
        f"the signal's body is {size} bytes as JSON; the limit is {limit}",
        suggested_action="Send a smaller body: the data the steps need, or where to fetch the rest",
        limit=limit,
    )


def check_signal(name: str, body: Any, max_bytes: int | None = None) -> None:
    """A signal's name must be one a step can wait for, its body within `max_bytes` as JSON
    (STEPLINE_SIGNAL_MAX_BYTES) if given, and data, never code: a placeholder in it
    (`{{secrets.TOKEN}}`) would be filled in when a later step uses the variable, so a body
    holding one is refused."""
    too_large = None if max_bytes is None else signal_too_large(body, max_bytes)
    if too_large is not None:
        raise too_large
    if re.fullmatch(SIGNAL_NAME, name) is None:
        raise SignalRefused(
            f"{name!r} is not a signal name: 1 to 100 letters, digits and . _ : -",
            suggested_action='Send the name the step waits for: wait for signal "<name>"',
            field="name",
        )
    if (problem := unstorable(body)) is not None:
        raise SignalRefused(
            f"the signal's body cannot be kept: {problem}",
            suggested_action="Send the body without what the message names",
            field="body",
        )
    if holds_placeholder(body):
        raise SignalRefused(
            "the signal's body holds a {{namespace.name}} placeholder; a body is data and is "
            "never filled in",
            suggested_action="Send the values themselves, without {{...}} placeholders",
            field="body",
        )
