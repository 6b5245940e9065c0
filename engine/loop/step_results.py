"""What one attempt at a step comes to: done, failed, or on hold until the session resumes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from domain.errors import StandardError


@dataclass(frozen=True)
class StepDone:
    summary: str
    evidence: list[str] = field(default_factory=list)
    data: Any = None
    """What a step that declares `extract` completes with (see `domain.extraction`)."""


@dataclass(frozen=True)
class StepFailure:
    error: StandardError


@dataclass(frozen=True)
class StepOnHold:
    """The step cannot go on for now (its AI provider is out): the session pauses, and the
    step carries on where it was once the session is resumed."""

    error: StandardError


StepResult = StepDone | StepFailure | StepOnHold


class Interrupted(Exception):
    """The session stopped being ours to run: paused, cancelled, ended, lease lost, stopping."""


def failure(code: str, message: str, **details: Any) -> StepFailure:
    return StepFailure(StandardError.of(code, message, details))


@dataclass(frozen=True)
class Deadline:
    """When a step's attempt must be done by, and the setting that says how long it may run:
    the config's `step_timeout_ms`, or the step's own `timeout_ms`."""

    at: float
    """On the `time.monotonic()` clock."""
    timeout_ms: int
    setting: str

    @classmethod
    def after(cls, timeout_ms: int, setting: str) -> Deadline:
        return cls(time.monotonic() + timeout_ms / 1000, timeout_ms, setting)

    def passed(self) -> StepFailure | None:
        """The step's timeout, once the deadline has passed; None before."""
        if time.monotonic() <= self.at:
            return None
        return failure(
            "TASK_LOOP_TIMEOUT",
            f"the step ran longer than its {self.setting}, {self.timeout_ms} ms",
            limit=self.setting,
        )
