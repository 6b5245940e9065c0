"""The limits a session runs with: its workflow's config over the settings' defaults (each
limit, its default and its bounds are declared once, in `domain.limits`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from domain.limits import LIMITS
from domain.session import WorkflowSession
from domain.step_policy import StepPolicy
from domain.tenant import Policy
from engine.settings import Settings
from engine.store.app import SessionRequest
from engine.tenancy.policies import admitted_config, admitted_steps, capped_defaults


@dataclass(frozen=True)
class Limits:
    """A session's value of each limit `domain.limits` declares (one field each, same name)."""

    max_turns_per_step: int
    step_timeout_ms: int
    workflow_timeout_ms: int
    max_consecutive_failures: int
    max_repeated_commands: int
    token_budget: int
    max_attempts: int
    retry_backoff_ms: int
    context_char_budget: int

    @staticmethod
    def defaults(settings: Settings) -> dict[str, int]:
        """The operator's default of each limit (`STEPLINE_<NAME>`)."""
        return {name: int(getattr(settings, name)) for name in LIMITS}

    @classmethod
    def of(cls, session: WorkflowSession, settings: Settings) -> Limits:
        """The session's config over the operator's defaults."""
        chosen = {**cls.defaults(settings), **session.config}
        return cls(**{name: int(chosen[name]) for name in LIMITS})

    def for_step(self, policy: StepPolicy) -> Limits:
        """The limits one step runs with: its own policy's values over the session's (its
        fields are numbers: a shallow copy, not `asdict`'s deep one, called for every step)."""
        return Limits(**policy.over(vars(self)))


def admitted(request: SessionRequest, settings: Settings, policy: Policy) -> SessionRequest:
    """`request` as its tenant's policy lets it be created (every limit filled in), or
    PolicyRefused naming the field (a step's own policy's too). Every way of creating a
    session goes through this: a new one, a batch, a replay or a fork (the policy may have
    narrowed since its source)."""
    admitted_steps(policy, request.steps)
    return replace(request, config=session_config(settings, request.config, policy))


def session_config(
    settings: Settings, given: Mapping[str, Any], policy: Policy | None = None
) -> dict[str, Any]:
    """What a new session records: the given config with every limit filled in. Under a
    tenant's `policy` the config is refused (PolicyRefused) where it asks for more than the
    policy allows, and the defaults are lowered to the policy's maximums."""
    defaults = Limits.defaults(settings)
    if policy is None:
        return {**defaults, **given}
    return {**capped_defaults(policy, defaults), **admitted_config(policy, given)}
