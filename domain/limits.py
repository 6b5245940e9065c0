"""The task loop's limits, declared once.

Each limit here is a `STEPLINE_<NAME>` setting (the operator's default), a field of a
workflow's `config:` (a session's own value, checked against the same bound) and an entry of
the limit maximums (the most a workflow may ask for: `STEPLINE_LIMIT_MAXIMUMS`, or the tenant's
policy). `engine.settings.Settings`, `engine.workflows.file.WorkflowConfig` and
`engine.loop.limits.Limits` name each limit and take everything else from this table; to add a
limit, add a row here and a field of the same name to each of those three.

A step may set four of them for itself (`STEP_LIMITS`: `retries`, `retry_backoff_ms`,
`timeout_ms`, `max_turns`), bounded as the limit each stands for; see `domain.step_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str
    default: int
    """The operator's default (`STEPLINE_<NAME>` unset) for a session whose config is silent."""
    ge: int
    """The least value a setting or a workflow's config may give it."""
    maximum: int
    """The most a workflow's config may ask for, unless the operator or the policy lowers it."""
    description: str
    """One line, as the README's configuration table says it."""

    @property
    def env(self) -> str:
        return f"STEPLINE_{self.name.upper()}"


LIMITS: Mapping[str, Limit] = {
    limit.name: limit
    for limit in (
        Limit(
            "max_turns_per_step",
            default=10,
            ge=1,
            maximum=50,
            description="AI turns per step",
        ),
        Limit(
            "step_timeout_ms",
            default=120_000,
            ge=1,
            maximum=3_600_000,
            description="how long one step may run; must be ≥ the connection and request timeouts",
        ),
        Limit(
            "workflow_timeout_ms",
            default=1_800_000,
            ge=1,
            maximum=86_400_000,
            description="how long a session may run; must be ≥ the step timeout; time spent "
            "waiting (approvals, timers, signals) does not count",
        ),
        Limit(
            "max_consecutive_failures",
            default=3,
            ge=1,
            maximum=20,
            description="failed commands in a row before the step fails",
        ),
        Limit(
            "max_repeated_commands",
            default=3,
            ge=2,
            maximum=20,
            description="the same command this many times in a row is a loop",
        ),
        Limit(
            "token_budget",
            default=200_000,
            ge=1,
            maximum=2_000_000,
            description="model tokens per session",
        ),
        Limit(
            "max_attempts",
            default=1,
            ge=1,
            maximum=10,
            description="tries per step",
        ),
        Limit(
            "retry_backoff_ms",
            default=1_000,
            ge=0,
            maximum=600_000,
            description="wait before a retry, doubled each attempt",
        ),
        Limit(
            "context_char_budget",
            default=24_000,
            ge=1_000,
            maximum=200_000,
            description="characters of this step's history in a prompt",
        ),
    )
}
"""By name, in the order a workflow's config lists them."""


@dataclass(frozen=True)
class StepLimit:
    """A step's own value of one of `LIMITS`, over its workflow's config for that step only:
    bounded as that limit is (its least value, the tenant's maximum), less `offset`."""

    name: str
    limit: str
    """The name in `LIMITS` it stands for."""
    description: str
    offset: int = 0
    """The limit's value is this one's plus `offset`: `retries` 2 is `max_attempts` 3."""

    def as_limit(self, value: int) -> int:
        return value + self.offset

    @property
    def ge(self) -> int:
        return LIMITS[self.limit].ge - self.offset

    def most(self, limit_maximum: int) -> int:
        """The most a step may ask for, when a workflow may set its limit to `limit_maximum`."""
        return limit_maximum - self.offset


STEP_LIMITS: Mapping[str, StepLimit] = {
    step_limit.name: step_limit
    for step_limit in (
        StepLimit(
            "retries",
            "max_attempts",
            "tries of this step after its first, when it fails retryably",
            offset=1,
        ),
        StepLimit(
            "retry_backoff_ms",
            "retry_backoff_ms",
            "wait before this step's next try, doubled after each",
        ),
        StepLimit("timeout_ms", "step_timeout_ms", "how long this step may run"),
        StepLimit("max_turns", "max_turns_per_step", "AI turns this step may take"),
    )
}
"""A step's policy fields that override a limit, by name, as a workflow file writes them."""
