"""A tenant's policy: what its workflows may use and reach, set by the operator — never by a
workflow, which may only narrow it.

`Policy` is the value the runtime enforces; `TenantPolicy` is the aggregate that records each
change the operator makes (one `PolicySet` event each, with the operator as actor), so every
change is in the log and audited like any other.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidPolicy
from domain.limits import LIMITS
from domain.session import check_tenant

ANY_HOST = "*"
"""An egress allow-list entry that lets every host and address through (the dev tenant's)."""

_NAMESPACE = uuid.UUID("5b0b7a8e-6f0e-4c55-9f5e-5a1f0e2d7c11")


@dataclass(frozen=True)
class Policy:
    """What one tenant may do. A field left as None has no cap of the tenant's own."""

    executors: tuple[str, ...] = ("http", "browser")
    shell_allow: tuple[str, ...] = ()
    egress_allow: tuple[str, ...] = ()
    """Hosts (`api.example.com`, `*.example.org`, `host:443`), addresses and networks
    (`10.1.2.3`, `10.0.0.0/8`) beyond the public internet; `*` lets everything through."""
    max_running: int | None = None
    max_streams: int | None = None
    requests_per_minute: int | None = None
    maximums: Mapping[str, int] = field(default_factory=dict)
    """The most a workflow may set each of `LIMITS` to."""

    def with_changes(self, changes: Mapping[str, Any]) -> Policy:
        """This policy with the operator's recorded changes applied (`check_changes` let only
        known fields in; one a later version no longer has is passed over)."""
        known = {f.name for f in fields(self)}
        updates: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                continue
            if name == "maximums":
                updates[name] = {**self.maximums, **value}
            elif name in ("executors", "shell_allow", "egress_allow"):
                updates[name] = tuple(value)
            else:
                updates[name] = value
        return replace(self, **updates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "executors": list(self.executors),
            "shell_allow": list(self.shell_allow),
            "egress_allow": list(self.egress_allow),
            "max_running": self.max_running,
            "max_streams": self.max_streams,
            "requests_per_minute": self.requests_per_minute,
            "maximums": dict(self.maximums),
        }


def check_changes(changes: Mapping[str, Any]) -> None:
    """Refuse a change that could never be enforced: unknown fields or limits, caps below one.
    A change to None takes a field back to the operator's default."""
    known = {f.name for f in fields(Policy)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise InvalidPolicy(
            f"a tenant policy has no {', '.join(unknown)}; its fields are "
            f"{', '.join(sorted(known))}",
            field=unknown[0],
        )
    maximums = changes.get("maximums") or {}
    for name in maximums:
        if name not in LIMITS:
            raise InvalidPolicy(
                f"{name} is not a limit; limits are {', '.join(LIMITS)}", field="maximums"
            )
    for name in ("max_running", "max_streams", "requests_per_minute"):
        value = changes.get(name)
        if value is not None and value < 1:
            raise InvalidPolicy(f"{name} must be at least 1, got {value}", field=name)
    for value in maximums.values():
        if value is not None and value < 0:
            raise InvalidPolicy(f"a maximum must not be negative, got {value}", field="maximums")


class TenantPolicy(Aggregate):
    """The operator's changes to one tenant's policy, in order."""

    class Event(Aggregate.Event):
        class_version = 1

    class Created(Event, Aggregate.Created):
        tenant: str

    class PolicySet(Event):
        changes: dict[str, Any]
        actor: str

    tenant: str
    changes: dict[str, Any]

    @staticmethod
    def create_id(tenant: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, tenant)

    @classmethod
    def create(cls, tenant: str) -> TenantPolicy:
        check_tenant(tenant)
        return cls(tenant=tenant)

    @event(Created)
    def __init__(self, *, tenant: str) -> None:
        self.tenant = tenant
        self.changes = {}

    def set(self, changes: Mapping[str, Any], actor: str) -> None:
        check_changes(changes)
        self._set(changes=dict(changes), actor=actor)

    @event(PolicySet)
    def _set(self, *, changes: dict[str, Any], actor: str) -> None:
        """A change to None takes the field (or one maximum) back to the operator's default."""
        merged = {**self.changes, **changes}
        if changes.get("maximums") is not None:
            maximums = {**self.changes.get("maximums", {}), **changes["maximums"]}
            merged["maximums"] = {k: v for k, v in maximums.items() if v is not None}
        self.changes = {k: v for k, v in merged.items() if v is not None}

    def applied_to(self, base: Policy) -> Policy:
        return base.with_changes(self.changes)
