"""What one attempt at a step comes to: done, or failed with a StandardError."""

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


StepResult = StepDone | StepFailure


class Interrupted(Exception):
    """The session stopped being ours to run: paused, cancelled, ended, lease lost, stopping."""


def failure(code: str, message: str, **details: Any) -> StepFailure:
    return StepFailure(StandardError.of(code, message, details))
