"""A step's own policy: its retries, back-off, timeout and AI turns over its workflow's config
for that one step, and what its failure does to the session (`on_failure`).

Recorded with the step in the session's `Created` event, so a replay or a fork of the session
runs each step under the policy it was written with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from domain.errors import InvalidWorkflow
from domain.limits import STEP_LIMITS


class OnFailure(StrEnum):
    FAIL = "fail"
    """The step's failure fails the session (the default)."""
    CONTINUE = "continue"
    """The failure is recorded and the session goes on to the next step."""


@dataclass(frozen=True)
class StepPolicy:
    """What one step sets for itself; None: its workflow's config (or the operator's default)."""

    retries: int | None = None
    retry_backoff_ms: int | None = None
    timeout_ms: int | None = None
    max_turns: int | None = None
    on_failure: OnFailure = OnFailure.FAIL

    @classmethod
    def from_dict(cls, given: Mapping[str, Any] | None) -> StepPolicy:
        """The policy a step's recorded (or written) fields give; others are passed over."""
        given = given or {}
        limits = {name: given[name] for name in STEP_LIMITS if given.get(name) is not None}
        on_failure = OnFailure(given.get("on_failure") or OnFailure.FAIL)
        return cls(**limits, on_failure=on_failure)

    def to_dict(self) -> dict[str, Any]:
        """Only what the step sets: a step with no policy records `{}`."""
        recorded: dict[str, Any] = self.limits_set()
        if self.on_failure is not OnFailure.FAIL:
            recorded["on_failure"] = self.on_failure.value
        return recorded

    def limits_set(self) -> dict[str, int]:
        """The step's own value of each of `STEP_LIMITS` it sets, by its step name."""
        return {name: value for name in STEP_LIMITS if (value := getattr(self, name)) is not None}

    def over(self, limits: Mapping[str, int]) -> dict[str, int]:
        """`limits` (a session's value of each limit) with this step's own values over them."""
        own = {
            STEP_LIMITS[name].limit: STEP_LIMITS[name].as_limit(value)
            for name, value in self.limits_set().items()
        }
        return {**limits, **own}

    def setting_of(self, limit: str) -> str:
        """Where the step's value of `limit` comes from, as a person would raise it: the
        step's own field (`timeout_ms`) if it sets one, else the config's (`step_timeout_ms`)."""
        for name, step_limit in STEP_LIMITS.items():
            if step_limit.limit == limit and getattr(self, name) is not None:
                return name
        return limit

    @property
    def continues(self) -> bool:
        return self.on_failure is OnFailure.CONTINUE

    def described(self) -> str:
        """One line, as a workflow file writes it: `retries 3, timeout_ms 500, on_failure
        continue`; empty for a step with no policy."""
        return ", ".join(f"{name} {value}" for name, value in self.to_dict().items())

    def validated(self, index: int) -> StepPolicy:
        """The policy, or InvalidWorkflow naming the step and the field: a value must be an
        integer no less than the least value of the limit it stands for."""
        for name, step_limit in STEP_LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < step_limit.ge:
                raise InvalidWorkflow(
                    f"step {index}: {name} must be an integer of at least {step_limit.ge}, "
                    f"got {value!r}",
                    suggested_action=f"Set {name} of step {index} to {step_limit.ge} or more, "
                    "or leave it out to use the workflow's config",
                    field=f"steps[{index}].{name}",
                )
        return self


POLICY_FIELDS = tuple(f.name for f in fields(StepPolicy))
"""A step's policy fields, as a workflow file and the API write them beside `text`."""
