"""Learned actions in the domain: their key, what a use records, forgetting one."""

from __future__ import annotations

import pytest

from domain.errors import InvalidStateTransition, InvalidWorkflow
from domain.learning import (
    LearnedActions,
    LearnedKey,
    start_base,
    starting_point,
    target_of,
    workflow_identity,
)
from domain.session import StepSpec, WorkflowSession


def test_a_registered_version_is_its_name_and_version_and_an_inline_one_its_steps_hash() -> None:
    registered = {"workflow": {"name": "orders", "version": 3}}
    assert workflow_identity("orders", registered, ["a"]) == "orders@v3"
    assert workflow_identity("x", {}, ["a", "b"]) == workflow_identity("y", {}, ["a", "b"])
    assert workflow_identity("x", {}, ["a", "b"]) != workflow_identity("x", {}, ["a", "c"])


def test_only_the_browser_moves_the_starting_point_and_a_query_string_does_not() -> None:
    assert target_of("http", "request", {"url": "/orders?id=3"}) is None
    assert target_of("browser", "navigate", {"url": "http://h/app/todos?x=1"}) == "/app/todos"
    assert target_of("browser", "click", {"target": "Add"}) is None
    assert starting_point("browser", "http://h", "/app") == "browser http://h /app"


def test_the_same_key_is_the_same_action_and_another_tenant_is_another() -> None:
    key = LearnedKey("acme", "orders@v3", "Sign in", "http", "http http://h /")
    again = LearnedKey("acme", "orders@v3", "Sign in", "http", "http http://h /")
    other = LearnedKey("globex", "orders@v3", "Sign in", "http", "http http://h /")
    assert key.action_id == again.action_id
    assert key.action_id != other.action_id


def running() -> WorkflowSession:
    session = WorkflowSession.create(
        name="w", steps=[StepSpec("Sign in")], tenant="acme", actor="alice", config={},
        labels={},
    )  # fmt: skip
    session.start_step(0)
    return session


def test_a_hit_records_what_it_saved_and_a_miss_records_where_it_missed_and_saves_nothing() -> None:
    session = running()
    session.record_learned_action_used(
        0, action_id="a", action_version=7, hit=False, commands=1, tokens_saved=50,
        miss={"name": "request"},
    )  # fmt: skip
    session.record_learned_action_used(
        0, action_id="a", action_version=7, hit=True, commands=2, tokens_saved=50,
        seconds_saved=1.5, miss={"ignored": True},
    )  # fmt: skip
    miss, hit = [
        e for e in session.collect_events() if isinstance(e, WorkflowSession.LearnedActionUsed)
    ]
    assert (miss.tokens_saved, miss.miss) == (0, {"name": "request"})
    assert (hit.tokens_saved, hit.seconds_saved, hit.miss) == (50, 1.5, None)


def test_a_step_not_running_uses_no_learned_action() -> None:
    session = WorkflowSession.create(
        name="w", steps=[StepSpec("Sign in")], tenant="acme", actor="alice", config={},
        labels={},
    )  # fmt: skip
    with pytest.raises(InvalidStateTransition):
        session.record_learned_action_used(0, action_id="a", action_version=1, hit=True, commands=1)


def test_forgetting_records_the_tenant_and_refuses_what_is_not_an_id() -> None:
    learned = LearnedActions.create("acme")
    learned.forget("6f1c1d5e-5b8a-4f5e-9d0e-4c1a7e2b9f10", "alice")
    forgotten = learned.collect_events()[-1]
    assert isinstance(forgotten, LearnedActions.Forgotten)
    assert (forgotten.tenant, forgotten.actor) == ("acme", "alice")
    with pytest.raises(InvalidWorkflow):
        learned.forget("'; DROP TABLE learned_actions; --", "mallory")


def test_tool_calls_learned_against_one_mcp_server_are_not_done_against_another() -> None:
    one = {"executor": "mcp", "mcp": {"command": ["python", "/srv/a.py"], "env": {"T": "1"}}}
    same = {"executor": "mcp", "mcp": {"command": ["python", "/srv/a.py"], "env": {"T": "2"}}}
    other = {"executor": "mcp", "mcp": {"command": ["python", "/srv/b.py"]}}
    remote = {"executor": "mcp", "mcp": {"url": "https://mcp.example.com/mcp"}}

    def key(config: dict[str, object]) -> LearnedKey:
        start = starting_point("mcp", start_base(config), None)
        return LearnedKey("acme", workflow_identity("w", config, ["a"]), "a", "mcp", start)

    assert key(one).action_id == key(same).action_id  # env values (secrets) are not the key
    assert len({key(c).action_id for c in (one, other, remote)}) == 3
    assert start_base({"base_url": "http://h"}) == "http://h"
