"""Tenant policies: the operator's defaults, each tenant's recorded changes, and the check of a
workflow's config against them at creation.

A tenant with no policy of its own gets the secure default: the `http` and `browser` executors,
the public internet only, no shell. The dev-mode tenant (`default`, when no API keys are
configured, so only a loopback server serves it) keeps the local convenience: every executor,
the operator's shell programs, and every address, loopback included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from psycopg_pool import ConnectionPool

from domain.dev_mode import DEV_TENANT
from domain.errors import InvalidPolicy, PolicyRefused
from domain.limits import LIMITS, STEP_LIMITS
from domain.session import StepSpec, check_tenant
from domain.tenant import ANY_HOST, Policy, TenantPolicy
from engine.executors.kinds import EXECUTOR_NAMES
from engine.executors.mcp_config import program_refusal
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.egress import EgressPolicy, InvalidEgressEntry


def is_dev_tenant(settings: Settings, tenant: str) -> bool:
    return settings.dev_mode and tenant == DEV_TENANT


def base_policy(settings: Settings, tenant: str) -> Policy:
    """What a tenant gets before the operator changes anything."""
    policy = Policy(
        max_running=settings.tenant_max_running,
        max_streams=settings.tenant_max_streams,
        requests_per_minute=settings.requests_per_minute,
        maximums=dict(settings.limit_maximums),
    )
    if is_dev_tenant(settings, tenant):
        return replace(
            policy,
            executors=EXECUTOR_NAMES,
            shell_allow=tuple(settings.shell_allow),
            egress_allow=(ANY_HOST,),
        )
    return policy


class Policies:
    """Each tenant's policy, read from its `TenantPolicy` aggregate (kept a few seconds)."""

    def __init__(self, app: Stepline, settings: Settings, ttl_s: float = 2.0) -> None:
        self.app = app
        self.settings = settings
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Policy]] = {}
        self._lock = threading.Lock()

    def of(self, tenant: str) -> Policy:
        check_tenant(tenant)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        recorded = self._recorded(tenant)
        base = base_policy(self.settings, tenant)
        policy = base if recorded is None else recorded.applied_to(base)
        with self._lock:
            self._cache[tenant] = (now + self.ttl_s, policy)
        return policy

    def cached(self, tenant: str) -> Policy | None:
        """The tenant's policy as `of` read it less than `ttl_s` ago, else None: never a query,
        for callers that must not wait for one (the event loop)."""
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1]

    def set(self, tenant: str, changes: Mapping[str, Any], actor: str) -> Policy:
        """Record the operator's changes to a tenant's policy; the policy as it now is."""
        unknown = sorted(set(changes.get("executors") or ()) - set(EXECUTOR_NAMES))
        if unknown:
            raise InvalidPolicy(
                f"no such executor: {', '.join(unknown)}; executors are "
                f"{', '.join(EXECUTOR_NAMES)}",
                field="executors",
            )
        try:
            EgressPolicy.of(changes.get("egress_allow") or ())
        except InvalidEgressEntry as error:
            raise InvalidPolicy(str(error), field="egress_allow") from None
        recorded = self._recorded(tenant) or TenantPolicy.create(tenant)
        recorded.set(changes, actor)
        self.app.save(recorded)
        with self._lock:
            self._cache.pop(tenant, None)
        return recorded.applied_to(base_policy(self.settings, tenant))

    def _recorded(self, tenant: str) -> TenantPolicy | None:
        try:
            policy: TenantPolicy = self.app.repository.get(TenantPolicy.create_id(tenant))
        except AggregateNotFoundError:
            return None
        return policy


def tenants_with_policies(pool: ConnectionPool, settings: Settings) -> list[str]:
    """Tenants the operator has set a policy for (from the audit view), and those of the
    configured API keys."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT tenant FROM audit_log WHERE event_type = 'TenantPolicy.Created'"
        ).fetchall()
    recorded = {tenant for (tenant,) in rows}
    return sorted(recorded | {key.tenant for key in settings.api_keys.values()})


def admitted_config(policy: Policy, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config a new session may record under `policy`, or PolicyRefused naming the field.
    A workflow may narrow the policy (fewer shell programs, lower limits), never widen it."""
    executor = config.get("executor")
    if executor is not None and executor not in policy.executors:
        raise PolicyRefused(
            f"executor {executor!r} is not allowed for this tenant; allowed: "
            f"{', '.join(policy.executors) or 'none'}",
            field="executor",
        )
    narrowed = config.get("shell_allow")
    if narrowed is not None:
        wider = sorted(set(narrowed) - set(policy.shell_allow))
        if wider:
            raise PolicyRefused(
                f"config.shell_allow may only narrow the tenant's shell programs; not allowed: "
                f"{', '.join(wider)}",
                field="config.shell_allow",
            )
    server = config.get("mcp") or {}
    if server.get("command"):
        allowed = [p for p in policy.shell_allow if narrowed is None or p in narrowed]
        refusal = program_refusal(server["command"], allowed)
        if refusal is not None:
            raise PolicyRefused(refusal, field="config.mcp.command")
    for name in LIMITS:
        value, most = config.get(name), policy.maximums.get(name)
        if value is not None and most is not None and value > most:
            raise PolicyRefused(
                f"config.{name} is {value}; this tenant's maximum is {most}",
                field=f"config.{name}",
                maximum=most,
            )
    return dict(config)


def admitted_steps(policy: Policy, steps: Sequence[StepSpec]) -> None:
    """PolicyRefused naming the step and the field where a step's own policy asks for more
    than the tenant's maximum of the limit it stands for (`retries` for `max_attempts`)."""
    for index, step in enumerate(steps):
        for name, value in step.policy.limits_set().items():
            step_limit = STEP_LIMITS[name]
            limit_most = policy.maximums.get(step_limit.limit)
            if limit_most is None or value <= step_limit.most(limit_most):
                continue
            most = step_limit.most(limit_most)
            raise PolicyRefused(
                f"step {index}: {name} is {value}; this tenant's maximum is {most}"
                + (f" ({step_limit.limit} {limit_most})" if step_limit.offset else ""),
                field=f"steps[{index}].{name}",
                step_index=index,
                maximum=most,
            )


def capped_defaults(policy: Policy, defaults: Mapping[str, int]) -> dict[str, int]:
    """The operator's default limits, each lowered to the tenant's maximum where it is lower."""
    return {name: min(value, policy.maximums.get(name, value)) for name, value in defaults.items()}
