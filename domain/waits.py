"""What a waiting session waits for, and how a wait can end.

A step may wait for a person's approval, for a time (a durable timer) or for a signal sent to
the session. The wait is recorded when it starts (`WorkflowSession.WaitStarted`, with when a
worker ends it unprompted: a timer's wake-up time, or an approval's or a signal's timeout) and
when it ends (`WaitEnded`, with how). Nothing sleeps meanwhile: the session holds no lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


class WaitKind(Enum):
    APPROVAL = "approval"
    TIMER = "timer"
    SIGNAL = "signal"


class WaitOutcome(Enum):
    APPROVED = "approved"
    REJECTED = "rejected"
    DUE = "due"
    """A timer's time came."""
    SIGNALLED = "signalled"
    TIMED_OUT = "timed_out"
    """No approval or signal came before the wait's `within`."""

    @property
    def lets_the_step_go_on(self) -> bool:
        return self in (WaitOutcome.APPROVED, WaitOutcome.DUE, WaitOutcome.SIGNALLED)


@dataclass(frozen=True)
class Wait:
    """A wait in progress: the step waiting, which of its waits (`key`), for what, since when
    and until when a worker ends it unprompted (`due_at`; None: until it is answered)."""

    step_index: int
    kind: WaitKind
    key: str
    started_at: datetime
    due_at: datetime | None = None
    question: str | None = None
    """What an approval asks."""
    signal: str | None = None
    """The name of the signal awaited."""

    def describe(self) -> str:
        """What the session waits for, in a few words (the views, the dashboard, the CLI)."""
        match self.kind:
            case WaitKind.APPROVAL:
                return f"approval: {self.question}" if self.question else "approval"
            case WaitKind.SIGNAL:
                return f"signal {self.signal}"
            case WaitKind.TIMER:
                return "timer"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_index": self.step_index,
            "kind": self.kind.value,
            "key": self.key,
            "started_at": self.started_at,
            "due_at": self.due_at,
            "question": self.question,
            "signal": self.signal,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Wait:
        return cls(**{**data, "kind": WaitKind(data["kind"])})


def variable_of(signal: str) -> str:
    """The variable a signal's body is saved as: its name, each character a placeholder's name
    may not hold (`payment.received`) written as `_` (`{{vars.payment_received}}`)."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in signal)


def described(kind: str, question: str | None, signal: str | None) -> str:
    """`Wait.describe` from a WaitStarted event's fields."""
    return Wait(0, WaitKind(kind), "", datetime.min, None, question, signal).describe()
