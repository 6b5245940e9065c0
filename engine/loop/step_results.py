"""What one attempt at a step comes to: done, failed, or on hold until the session resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.errors import StandardError


@dataclass(frozen=True)
class StepDone:
    summary: str
    evidence: list[str] = field(default_factory=list)


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
