"""`stepline tenants`: the operator sets, shows and lists tenant policies, against the database.

Every change is a `PolicySet` event recorded with the operator (`cli:<login>`) as its actor, so
the audit trail shows who widened or narrowed what, and when.
"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from api.cli.support import cli_actor, console, errors, runtime_or_exit
from domain.limits import LIMITS
from domain.tenant import Policy
from engine.live.projector import READ_YOUR_WRITES_S
from engine.tenancy.policies import tenants_with_policies


def _listed(text: str | None) -> list[str] | None:
    """`a,b` -> ["a", "b"]; an empty string clears the list; None leaves it as it is."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def _maximums(pairs: list[str]) -> dict[str, int | None]:
    """`token_budget=100000` sets a maximum, `token_budget=` takes it back to the default."""
    maximums: dict[str, int | None] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or name not in LIMITS or not (value == "" or value.isdigit()):
            raise ValueError(
                f"--max {pair!r}: expected NAME=NUMBER (or NAME= to unset); names: "
                f"{', '.join(LIMITS)}"
            )
        maximums[name] = int(value) if value else None
    return maximums


def changes_from_options(options: dict[str, Any], maximums: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in ("executors", "shell_allow", "egress_allow"):
        listed = _listed(options.get(name))
        if listed is not None:
            changes[name] = listed
    for name in ("max_running", "max_streams", "requests_per_minute"):
        if options.get(name) is not None:
            changes[name] = options[name]
    for name in options.get("unset") or []:
        changes[name] = None
    if maximums:
        changes["maximums"] = _maximums(maximums)
    return changes


def set_policy(tenant: str, changes: dict[str, Any], as_json: bool) -> None:
    if not changes:
        errors.print("Nothing to change: name at least one option (see --help)")
        return
    with runtime_or_exit(quiet=True) as runtime:
        policy = runtime.policies.set(tenant, changes, actor=cli_actor())
    show_policy_of(tenant, policy, as_json)


def show_policy(tenant: str, as_json: bool) -> None:
    with runtime_or_exit(quiet=True) as runtime:
        policy = runtime.policies.of(tenant)
    show_policy_of(tenant, policy, as_json)


def list_policies(as_json: bool) -> None:
    with runtime_or_exit(quiet=True) as runtime:
        runtime.projector.wait_until(runtime.projector.head(), timeout=READ_YOUR_WRITES_S)
        tenants = tenants_with_policies(runtime.projector.pool, runtime.settings)
        policies = {tenant: runtime.policies.of(tenant) for tenant in tenants}
    if as_json:
        console.print_json(json.dumps({t: p.to_dict() for t, p in policies.items()}))
        return
    table = Table("tenant", "executors", "shell", "egress", "running", "streams", "req/min")
    for tenant, policy in policies.items():
        table.add_row(tenant, *_cells(policy)[:6])
    console.print(table)


def show_policy_of(tenant: str, policy: Policy, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps({"tenant": tenant, **policy.to_dict()}))
        return
    names = ("executors", "shell programs", "egress allowed", "running sessions", "streams")
    rows = [*zip((*names, "requests a minute"), _cells(policy), strict=False)]
    rows.append(("limit maximums", _cells(policy)[6]))
    table = Table(title=f"tenant {tenant}", show_header=False)
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def _cells(policy: Policy) -> list[str]:
    def cap(value: int | None) -> str:
        return "no limit" if value is None else str(value)

    return [
        ", ".join(policy.executors) or "none",
        ", ".join(policy.shell_allow) or "none (shell off)",
        ", ".join(policy.egress_allow) or "public internet only",
        cap(policy.max_running),
        cap(policy.max_streams),
        cap(policy.requests_per_minute),
        ", ".join(f"{k}={v}" for k, v in sorted(policy.maximums.items())) or "none",
    ]
