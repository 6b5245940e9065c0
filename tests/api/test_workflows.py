"""The workflow registry through real HTTP: pushes that make versions (and those that do not),
reads, rollbacks, tenants kept apart, and sessions of a registered version that keep it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import KEYS, Api, ApiFactory
from tests.api.test_admission import sessions_created
from tests.api.test_errors import assert_problem
from tests.api.test_schedules import stepline
from tests.waiting import eventually


def effect_workflow(target: str, effect: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "name": "record effect",
        "base_url": target,
        "inputs": {"copies": {"type": "integer", "minimum": 1, "default": 1}},
        "steps": [
            f'POST /effects with {{"name": "{effect} x{{{{inputs.copies}}}}"}}',
            "expect status 201",
        ],
        **extra,
    }


def pushed(client: httpx.Client, document: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post("/v1/workflows", json=document)
    assert response.status_code == status, response.text
    version: dict[str, Any] = response.json()
    return version


def sha256_of(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def ended(client: httpx.Client, session_id: str) -> str | None:
    status: str = client.get(f"/v1/sessions/{session_id}").json()["status"]
    return status if status in ("completed", "failed", "cancelled", "expired") else None


def created_event(client: httpx.Client, session_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/v1/sessions/{session_id}/events").json()["items"][0][
        "data"
    ]
    return data


def test_a_changed_push_makes_the_next_version_and_an_identical_one_makes_none(
    api: Api, target: str
) -> None:
    first = effect_workflow(target)
    same = {**first, "executor": "http", "steps": [{"text": s} for s in first["steps"]]}
    with api.client("alice") as alice:
        one = pushed(alice, first)
        again = pushed(alice, dict(reversed(same.items())), status=200)
        two = pushed(alice, effect_workflow(target, "v2"))
        listed = alice.get("/v1/workflows").json()
        shown = alice.get("/v1/workflows/record effect").json()
        version_one = alice.get("/v1/workflows/record effect/versions/1").json()

    assert (one["name"], one["version"], one["current"]) == ("record effect", 1, True)
    assert again == one
    assert (two["version"], two["current"]) == (2, True)
    assert two["sha256"] != one["sha256"]
    assert [(w["name"], w["current_version"], w["version_count"]) for w in listed["items"]] == [
        ("record effect", 2, 2)
    ]
    assert [(v["version"], v["current"]) for v in shown["versions"]] == [(1, False), (2, True)]
    assert [v["sha256"] for v in shown["versions"]] == [one["sha256"], two["sha256"]]
    assert version_one["document"] == first
    assert version_one["sha256"] == sha256_of(version_one["document"]) == one["sha256"]
    assert not version_one["current"]


def test_a_document_pushed_as_yaml_is_read_as_a_workflow_file_is(api: Api) -> None:
    yaml_body = "name: yaml pushed\nexecutor: shell\nsteps:\n  - run `true`\n"
    trap = 'name: trapped\nsteps:\n  - GET /\n  - expect body contains "Saved: Ada"\n'
    yaml = {"content-type": "application/yaml"}
    with api.client("alice") as alice:
        made = alice.post("/v1/workflows", content=yaml_body, headers=yaml)
        misread = alice.post("/v1/workflows", content=trap, headers=yaml)
        not_yaml = alice.post("/v1/workflows", content="name: [", headers=yaml)
        as_text = alice.post(
            "/v1/workflows", content=yaml_body, headers={"content-type": "text/plain"}
        )
        with_module = alice.post(
            "/v1/workflows", json={"name": "m", "definitions": "my_steps.py", "steps": ["x"]}
        )
        bad_name = alice.post("/v1/workflows", json={"name": "a@3", "steps": ["GET /"]})
        undeclared = alice.post("/v1/workflows", json={"name": "u", "steps": ["GET /{{inputs.x}}"]})

    assert made.status_code == 201, made.text
    assert made.json()["document"] == {"name": "yaml pushed", "executor": "shell",
                                       "steps": ["run `true`"]}  # fmt: skip
    assert made.headers["location"] == "/v1/workflows/yaml%20pushed/versions/1"
    trapped = assert_problem(misread, 422, "VALIDATION_FAILED")
    assert trapped["message"].startswith("body:4:5: step 1 holds")
    assert "body:1:" in assert_problem(not_yaml, 422, "VALIDATION_FAILED")["message"]
    assert_problem(as_text, 415, "UNSUPPORTED_MEDIA_TYPE")
    refused = assert_problem(with_module, 422, "VALIDATION_FAILED")
    assert "runs with the built-in step definitions" in refused["message"]
    assert_problem(bad_name, 422, "VALIDATION_FAILED")
    assert assert_problem(undeclared, 422, "INPUT_INVALID")["details"]["input"] == "x"


def test_a_rollback_makes_an_earlier_version_current_again_as_an_event(
    api: Api, target: str
) -> None:
    with api.client("alice") as alice:
        one = pushed(alice, effect_workflow(target, "v1"))
        pushed(alice, effect_workflow(target, "v2"))
        rolled = alice.post("/v1/workflows/record effect/rollback", json={"to_version": 1})
        session = alice.post("/v1/sessions", json={"workflow": "record effect"}).json()
        too_far = alice.post("/v1/workflows/record effect/rollback", json={"to_version": 3})
        unknown = alice.post("/v1/workflows/nothing/rollback", json={"to_version": 1})
        audit = alice.get("/v1/audit", params={"event_type": "Workflow.RolledBack"}).json()
        recorded = created_event(alice, session["session_id"])

    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["current_version"] == 1
    assert [(v["version"], v["current"]) for v in rolled.json()["versions"]] == [
        (1, True),
        (2, False),
    ]
    assert recorded["config"]["workflow"] == {
        "name": "record effect",
        "version": 1,
        "sha256": one["sha256"],
    }
    problem = assert_problem(too_far, 422, "VALIDATION_FAILED")
    assert problem["details"]["field"] == "to_version"
    assert "has no version 3" in problem["message"]
    assert_problem(unknown, 404, "WORKFLOW_NOT_FOUND")
    [entry] = audit["items"]
    assert (entry["actor"], entry["description"]) == ("alice", "rolled back to version 1 (from 2)")


def test_another_tenants_workflow_is_not_found_and_its_name_is_free(
    api: Api, fresh_database_url: str, target: str
) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        alices = pushed(alice, effect_workflow(target, "alice's"))
        answers = [
            eve.get("/v1/workflows/record effect"),
            eve.get("/v1/workflows/record effect/versions/1"),
            eve.post("/v1/workflows/record effect/rollback", json={"to_version": 1}),
            eve.post("/v1/sessions", json={"workflow": "record effect"}),
        ]
        eves_list = eve.get("/v1/workflows").json()["items"]
        eves = pushed(eve, effect_workflow(target, "eve's"))
        alices_now = alice.get("/v1/workflows/record effect/versions/1").json()

    for answer in answers:
        assert_problem(answer, 404, "WORKFLOW_NOT_FOUND")
    assert eves_list == []
    assert eves["version"] == 1
    assert eves["sha256"] != alices["sha256"]
    assert alices_now == alices
    assert sessions_created(fresh_database_url) == 0


def test_a_session_of_a_registered_version_checks_and_writes_in_its_inputs(
    api: Api, fresh_database_url: str, target: str
) -> None:
    with api.client("alice") as alice:
        one = pushed(alice, effect_workflow(target, "v1"))
        pushed(alice, effect_workflow(target, "v2"))
        body = {"workflow": "record effect@1", "with": {"copies": 3}, "labels": {"team": "qa"}}
        made = alice.post("/v1/sessions", json=body)
        refused = alice.post("/v1/sessions", json={**body, "with": {"copies": 0}})
        unknown = alice.post("/v1/sessions", json={"workflow": "no such workflow"})
        no_version = alice.post("/v1/sessions", json={"workflow": "record effect@9"})
        both = alice.post("/v1/sessions", json={**body, "steps": ["GET /"]})
        neither = alice.post("/v1/sessions", json={"with": {"copies": 3}})
        assert made.status_code == 201, made.text
        recorded = created_event(alice, made.json()["session_id"])

    assert recorded["name"] == "record effect"
    assert recorded["steps"][0]["text"] == 'POST /effects with {"name": "v1 x3"}'
    assert recorded["config"]["inputs"] == {"copies": 3}
    assert recorded["config"]["workflow"] == {
        "name": "record effect",
        "version": 1,
        "sha256": one["sha256"],
    }
    assert recorded["labels"] == {"team": "qa"}
    problem = assert_problem(refused, 422, "INPUT_INVALID")
    assert problem["details"]["input"] == "copies"
    assert "input copies: 0 is less than the minimum of 1" in problem["message"]
    assert_problem(unknown, 404, "WORKFLOW_NOT_FOUND")
    missing = assert_problem(no_version, 404, "WORKFLOW_NOT_FOUND")
    assert "has no version 9 (it has 1 to 2, 2 current)" in missing["message"]
    assert (
        "steps cannot be given with it" in assert_problem(both, 422, "VALIDATION_FAILED")["message"]
    )
    fields = assert_problem(neither, 422, "VALIDATION_FAILED")["details"]["errors"]
    assert [f["field"] for f in fields] == ["body.name", "body.steps"]
    assert sessions_created(fresh_database_url) == 1


def test_a_running_session_keeps_its_version_while_another_is_pushed(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    v1 = effect_workflow(target, "v1")
    v1["steps"] = ['wait for signal "go"', *v1["steps"]]
    with api.client("alice") as alice:
        one = pushed(alice, v1)
        session_id = alice.post("/v1/sessions", json={"workflow": "record effect"}).json()[
            "session_id"
        ]
        eventually(
            lambda: alice.get(f"/v1/sessions/{session_id}").json()["status"] == "waiting",
            "the session waits for its signal",
        )
        two = pushed(alice, effect_workflow(target, "v2"))
        alice.post(f"/v1/sessions/{session_id}/signals/go", json={})
        status = eventually(lambda: ended(alice, session_id), "the session ends", within_s=60)
        recorded = created_event(alice, session_id)
        replayed = alice.post(f"/v1/sessions/{session_id}/replay").json()["session_id"]
        replay_recorded = created_event(alice, replayed)

    assert status == "completed"
    assert two["version"] == 2
    assert [step["text"] for step in recorded["steps"]] == [
        'wait for signal "go"',
        'POST /effects with {"name": "v1 x1"}',
        "expect status 201",
    ]
    assert recorded["config"]["workflow"]["version"] == 1
    assert httpx.get(f"{target}/effects").json()["applied"][0]["name"] == "v1 x1"
    assert replay_recorded["config"]["workflow"] == {
        "name": "record effect",
        "version": 1,
        "sha256": one["sha256"],
    }


@pytest.mark.parametrize("body", [{"workflow": "record effect"}, {"name": "x", "steps": ["y"]}])
def test_a_schedule_takes_its_workflow_inline_only(
    api: Api, target: str, body: dict[str, Any]
) -> None:
    with api.client("alice") as alice:
        pushed(alice, effect_workflow(target))
        answer = alice.post(
            "/v1/schedules", json={"name": "s", "workflow": body, "every": "1h", "paused": True}
        )

    if "workflow" in body:
        problem = assert_problem(answer, 422, "VALIDATION_FAILED")
        assert "a schedule runs a workflow given inline" in problem["message"]
    else:
        assert answer.status_code == 201, answer.text


def test_stepline_workflows_works_through_a_server_with_a_key(api: Api, tmp_path: Path) -> None:
    workflow = tmp_path / "heartbeat.yaml"
    workflow.write_text("name: heartbeat\nexecutor: shell\nsteps:\n  - run `true`\n")
    server = ["--api", api.base_url, "--key", KEYS["alice"][1]]

    first = stepline("workflows", "push", str(workflow), *server)
    again = stepline("workflows", "push", str(workflow), *server)
    workflow.write_text("name: heartbeat\nexecutor: shell\nsteps:\n  - run `echo alive`\n")
    second = stepline("workflows", "push", str(workflow), *server)
    diff = stepline("workflows", "diff", "heartbeat", "1", "2", *server)
    rolled = stepline("workflows", "rollback", "heartbeat", "--to", "1", "--json", *server)
    as_eve = stepline("workflows", "show", "heartbeat", "--api", api.base_url, "--key",
                      KEYS["eve"][1])  # fmt: skip

    assert first.stdout.startswith("pushed heartbeat@1"), first.stderr
    assert again.stdout.startswith("unchanged: the current version is heartbeat@1")
    assert second.stdout.startswith("pushed heartbeat@2"), second.stderr
    assert "-- run `true`\n+- run `echo alive`\n" in diff.stdout
    assert json.loads(rolled.stdout)["current_version"] == 1, rolled.stderr
    assert as_eve.returncode == 2
    assert "WORKFLOW_NOT_FOUND" in as_eve.stderr


def test_a_fork_keeps_the_version_it_runs_and_drops_it_with_steps_of_its_own(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=0)  # nothing runs: a fork from step 0 needs no step done
    with api.client("alice") as alice:
        pushed(alice, effect_workflow(target, "v1"))
        source = alice.post("/v1/sessions", json={"workflow": "record effect"}).json()
        path = f"/v1/sessions/{source['session_id']}/fork"
        same = alice.post(path, json={"from_step": 0}).json()
        own = alice.post(path, json={"from_step": 0, "steps": ["GET /elsewhere"]}).json()
        kept = created_event(alice, same["session_id"])["config"]
        dropped = created_event(alice, own["session_id"])["config"]

    assert kept["workflow"]["name"] == "record effect"
    assert "workflow" not in dropped
    assert dropped["inputs"] == {"copies": 1}


# ---- POST /v1/workflows/check: what the editor asks as a person types ----------------------


def labelled(target: str, *steps: Any) -> dict[str, Any]:
    return {"name": "labelled", "base_url": target, "steps": list(steps)}


def test_a_checked_document_says_how_each_step_runs_and_nothing_is_recorded(
    api: Api, target: str
) -> None:
    steps = [
        "GET /login",
        {"text": "POST /effects with {}", "expect": "expect status 201", "retries": 2},
        "tick the box that says you are not a robot",
        {"for_each": "item in vars.items", "steps": ["GET /slow?ms=1", {"use": "login"}]},
        {"use": "login"},
    ]
    with api.client("alice") as alice:
        pushed(alice, {"name": "login", "base_url": target, "steps": ["GET /login"]})
        before = alice.get("/v1/workflows").json()["items"]
        answer = alice.post("/v1/workflows/check", json=labelled(target, *steps))
        after = alice.get("/v1/workflows").json()["items"]

    assert answer.status_code == 200, answer.text
    assert [(s["index"], s["kind"]) for s in answer.json()["steps"]] == [
        (0, "definition"),
        (1, "definition"),
        (2, "ai"),
        (3, "loop"),
        (4, "template"),
    ]
    said = [s["runs_as"] for s in answer.json()["steps"]]
    assert said[0] == "http.request GET /login"
    assert said[1].endswith("http.expect_status 201")
    assert said[2].startswith("the AI decides")
    assert said[3] == "a loop: for each item in vars.items"
    assert after == before  # labelled was checked, not pushed


def without_instance(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("id", "timestamp", "instance")}


@pytest.mark.parametrize(
    "step",
    [
        {"text": "GET /login", "if": "__import__('os').system('true')"},
        {"text": "GET /login", "retries": "two"},
        {"text": "GET /{{inputs.missing}}"},
    ],
    ids=["condition", "field", "undeclared input"],
)
def test_a_check_refuses_what_a_push_refuses_with_the_same_problem(
    api: Api, target: str, step: dict[str, Any]
) -> None:
    document = labelled(target, "GET /login", step)
    with api.client("alice") as alice:
        checked = alice.post("/v1/workflows/check", json=document)
        refused = alice.post("/v1/workflows", json=document)
        listed = alice.get("/v1/workflows").json()["items"]

    problem = assert_problem(checked, 422, refused.json()["code"])
    assert without_instance(problem) == without_instance(refused.json())
    assert listed == []


def test_a_check_uses_only_the_callers_tenants_templates(api: Api, target: str) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        pushed(alice, {"name": "login", "base_url": target, "steps": ["GET /login"]})
        alices = alice.post("/v1/workflows/check", json=labelled(target, {"use": "login"}))
        eves = eve.post("/v1/workflows/check", json=labelled(target, {"use": "login"}))

    assert alices.status_code == 200, alices.text
    problem = assert_problem(eves, 422, "TEMPLATE_NOT_FOUND")
    assert "no workflow named 'login'" in problem["message"]
