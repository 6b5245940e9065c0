"""The TenantPolicy aggregate: the operator's changes, checked when they are made."""

from __future__ import annotations

import pytest

from domain.errors import InvalidPolicy
from domain.tenant import Policy, TenantPolicy


def test_a_change_to_a_field_a_policy_does_not_have_is_refused_and_not_recorded() -> None:
    policy = TenantPolicy.create("acme")

    with pytest.raises(InvalidPolicy, match="bogus"):
        policy.set({"bogus": 1}, actor="operator")

    assert len(policy.collect_events()) == 1  # only its creation


def test_unsetting_the_maximums_takes_them_back_to_the_defaults() -> None:
    policy = TenantPolicy.create("acme")
    policy.set({"maximums": {"token_budget": 5}, "max_running": 2}, actor="operator")

    policy.set({"maximums": None}, actor="operator")

    base = Policy(maximums={"token_budget": 100})
    assert policy.applied_to(base).maximums == {"token_budget": 100}
    assert policy.applied_to(base).max_running == 2


def test_one_maximum_unset_leaves_the_others() -> None:
    policy = TenantPolicy.create("acme")
    policy.set({"maximums": {"token_budget": 5, "max_attempts": 2}}, actor="operator")

    policy.set({"maximums": {"token_budget": None}}, actor="operator")

    applied = policy.applied_to(Policy(maximums={"token_budget": 100, "max_attempts": 9}))
    assert applied.maximums == {"token_budget": 100, "max_attempts": 2}
