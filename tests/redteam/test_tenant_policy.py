"""A tenant cannot widen its own policy from a workflow body: the shell's programs, the
executors and the limits are the operator's, and a workflow may only narrow them."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.api.conftest import Api, ApiFactory, shell_workflow
from tests.api.test_errors import assert_problem, log_head
from tests.api.test_sessions import create, stream
from tests.integration.test_cli import STEPLINE


def refused(api: Api, who: str, body: dict[str, Any], field: str) -> dict[str, Any]:
    """The body is refused with 422 POLICY_REFUSED naming `field`, and nothing is written."""
    before = log_head(api)
    with api.client(who) as client:
        problem = assert_problem(client.post("/v1/sessions", json=body), 422, "POLICY_REFUSED")
    assert problem["details"]["field"] == field
    assert log_head(api) == before
    return problem


def test_a_workflow_cannot_widen_the_shell_allow_list(api: Api) -> None:
    body = shell_workflow("sh -c id")
    body["config"]["shell_allow"] = ["echo", "sh"]

    problem = refused(api, "alice", body, "config.shell_allow")

    assert "sh" in problem["message"]


def test_a_tenant_without_the_shell_cannot_name_the_shell_executor(api: Api) -> None:
    body = shell_workflow("true")
    del body["config"]

    refused(api, "mallory", body, "executor")  # initech: the secure default, no shell


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        ("token_budget", 10**15),
        ("retry_backoff_ms", 10**12),
        ("max_attempts", 1_000),
        ("workflow_timeout_ms", 10**12),
    ],
)
def test_limits_above_the_tenants_maximum_are_refused(api: Api, limit: str, value: int) -> None:
    body = {"name": "greedy", "steps": ["GET /"], "config": {limit: value}}

    problem = refused(api, "mallory", body, f"config.{limit}")

    assert problem["details"]["maximum"] < value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retries", 1_000),
        ("retry_backoff_ms", 10**12),
        ("timeout_ms", 10**12),
        ("max_turns", 1_000),
    ],
)
def test_a_steps_own_limits_above_the_tenants_maximum_are_refused_naming_the_step(
    api: Api, field: str, value: int
) -> None:
    body = {"name": "greedy", "steps": ["GET /", {"text": "GET /again", field: value}]}

    problem = refused(api, "mallory", body, f"steps[1].{field}")

    assert problem["message"].startswith(f"step 1: {field} is {value}; this tenant's maximum")
    assert problem["details"]["maximum"] < value


def test_a_steps_retries_are_held_to_the_maximum_the_operator_set_for_attempts(api: Api) -> None:
    runtime = api.services.runtime
    runtime.policies.set("acme", {"maximums": {"max_attempts": 3}}, actor="operator")
    one_try_too_many = {"name": "flaky", "steps": [{"text": "GET /", "retries": 3}]}

    problem = refused(api, "alice", one_try_too_many, "steps[0].retries")
    with api.client("alice") as alice:
        session_id = create(alice, {"name": "flaky", "steps": [{"text": "GET /", "retries": 2}]})

    assert problem["message"] == (
        "step 0: retries is 3; this tenant's maximum is 2 (max_attempts 3)"
    )
    assert runtime.app.get_session(session_id).steps[0].policy.retries == 2


def test_a_steps_own_limit_below_its_least_value_is_refused_naming_the_step(api: Api) -> None:
    before = log_head(api)
    body = {"name": "x", "steps": ["GET /", {"text": "GET /again", "timeout_ms": 0}]}
    with api.client("alice") as alice:
        problem = assert_problem(alice.post("/v1/sessions", json=body), 422, "VALIDATION_FAILED")

    said = {e["field"]: e["message"] for e in problem["details"]["errors"]}
    assert said["body.steps.1.step.timeout_ms"] == "Input should be greater than or equal to 1"
    assert log_head(api) == before


def test_a_batch_and_a_replay_are_held_to_the_policy_too(api: Api) -> None:
    greedy = {"name": "greedy", "steps": ["GET /"], "config": {"token_budget": 10**15}}
    with api.client("mallory") as mallory:
        response = mallory.post("/v1/batches", json={"sessions": [greedy]})
    assert_problem(response, 422, "POLICY_REFUSED")

    runtime = api.services.runtime
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("echo hi"))
        stream(alice, session_id)
        runtime.policies.set("acme", {"shell_allow": ["true"]}, actor="operator")
        replayed = alice.post(f"/v1/sessions/{session_id}/replay")
    assert_problem(replayed, 422, "POLICY_REFUSED")


def test_a_workflow_may_narrow_its_policy(api: Api) -> None:
    body = shell_workflow("echo narrowed", "sleep 0")
    body["config"] = {"shell_allow": ["echo"], "token_budget": 1_000}
    with api.client("alice") as alice:
        session_id = create(alice, body)
        events = stream(alice, session_id)

    failed = [e for e in events if e["type"] == "StepFailed"]
    assert failed[0]["data"]["step_index"] == 1  # sleep was left out by the workflow itself
    assert "not an allowed program" in failed[0]["data"]["error"]["message"]


def test_defaults_above_a_tenants_maximum_are_lowered_to_it(api: Api) -> None:
    runtime = api.services.runtime
    runtime.policies.set("acme", {"maximums": {"token_budget": 500}}, actor="operator")
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("true"))

    assert runtime.app.get_session(session_id).config["token_budget"] == 500  # type: ignore[arg-type]


def test_the_operator_sets_a_policy_from_the_cli_and_it_is_audited(
    start_api: ApiFactory, fresh_database_url: str
) -> None:
    env = {**os.environ, "STEPLINE_DATABASE_URL": fresh_database_url}
    command = [STEPLINE, "tenants", "set", "initech"]
    options = ["--executors", "http", "--egress-allow", "api.example.com", "--max-running", "3"]

    done = subprocess.run(
        [*command, *options, "--json"], env=env, capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["executors"], shown["egress_allow"], shown["max_running"]) == (
        ["http"],
        ["api.example.com"],
        3,
    )
    api = start_api()
    with api.client("mallory") as mallory:
        trail = mallory.get("/v1/audit", params={"event_type": "TenantPolicy.PolicySet"}).json()
    [entry] = trail["items"]
    assert entry["actor"].startswith("cli")
    assert "max_running=3" in entry["description"]


def test_an_unknown_executor_in_a_policy_is_refused(fresh_database_url: str) -> None:
    env = {**os.environ, "STEPLINE_DATABASE_URL": fresh_database_url}
    done = subprocess.run(
        [STEPLINE, "tenants", "set", "initech", "--executors", "sh"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 2
    assert "POLICY_INVALID" in done.stderr


def test_a_step_cannot_reach_an_executor_its_tenant_lacks(api: Api) -> None:
    body = {"name": "sneaky", "executor": "http", "steps": ["run `echo pwned`"]}
    with api.client("mallory") as mallory:  # initech: http and browser only
        session_id = create(mallory, body)
        events = stream(mallory, session_id)

    assert [e for e in events if e["type"] == "CommandIssued"] == []
    [failed] = [e for e in events if e["type"] == "StepFailed"]
    assert failed["data"]["error"]["code"] == "POLICY_REFUSED"
    assert events[-1]["type"] == "Failed"
