"""Templates through real HTTP: `use:` of the tenant's registered workflows, expanded when a
session is created (inline, or of a registered workflow) with the version used in each step's
origin; a later push never changes a session made before it; unknown templates (another
tenant's among them), cycles and values that do not fit refused, and nothing created."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api, ApiFactory
from tests.api.test_admission import sessions_created
from tests.api.test_errors import assert_problem
from tests.api.test_workflows import created_event, ended, pushed
from tests.conftest import effects
from tests.waiting import eventually


def login(effect: str = "login") -> dict[str, Any]:
    """A template: one effect named after its user, checked."""
    return {
        "name": "login",
        "inputs": {
            "user": {"type": "string", "minLength": 1},
            "times": {"type": "integer", "minimum": 1, "default": 1},
        },
        "steps": [
            f'POST /effects with {{"name": "{effect} {{{{inputs.user}}}} x{{{{inputs.times}}}}"}}',
            "expect status 201",
        ],
    }


def using(target: str, *steps: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "checkout", "base_url": target, "steps": list(steps), **extra}


def test_an_inline_session_expands_a_registered_template_with_the_version_used(
    api: Api, target: str
) -> None:
    body = using(
        target,
        {"use": "login", "with": {"user": "{{inputs.who}}", "times": "{{inputs.n}}"}},
        'POST /effects with {"name": "paid"}',
        inputs={"who": {"type": "string"}, "n": {"type": "integer"}},
        **{"with": {"who": "ada", "n": 2}},
    )
    with api.client("alice") as alice:
        pushed(alice, login("old"))
        pushed(alice, login())
        made = alice.post("/v1/sessions", json=body)
        assert made.status_code == 201, made.text
        session_id = made.json()["session_id"]
        status = eventually(lambda: ended(alice, session_id), "the session ends", within_s=60)
        recorded = created_event(alice, session_id)
        history = alice.get(f"/v1/sessions/{session_id}/steps").json()

    assert status == "completed"
    assert [(s["text"], s.get("origin")) for s in recorded["steps"]] == [
        ('POST /effects with {"name": "login ada x2"}', {"template": "login@2"}),
        ("expect status 201", {"template": "login@2"}),
        ('POST /effects with {"name": "paid"}', None),
    ]
    assert [(row["status"], row["origin"]) for row in history] == [
        ("completed", {"template": "login@2"}),
        ("completed", {"template": "login@2"}),
        ("completed", None),
    ]
    assert effects(target) == ["login ada x2", "paid"]


def test_a_running_session_keeps_the_template_version_it_was_made_with(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice:
        pushed(alice, login("v1"))
        pushed(
            alice, using(target, 'wait for signal "go"', {"use": "login@1", "with": {"user": "bo"}})
        )
        made = alice.post("/v1/sessions", json={"workflow": "checkout"})
        assert made.status_code == 201, made.text
        session_id = made.json()["session_id"]
        eventually(
            lambda: alice.get(f"/v1/sessions/{session_id}").json()["status"] == "waiting",
            "the session waits for its signal",
        )
        pushed(alice, login("v2"))
        alice.post(f"/v1/sessions/{session_id}/signals/go", json={})
        status = eventually(lambda: ended(alice, session_id), "the session ends", within_s=60)
        recorded = created_event(alice, session_id)
        document = alice.get("/v1/workflows/checkout/versions/1").json()["document"]

    assert status == "completed"
    assert recorded["steps"][1]["origin"] == {"template": "login@1"}
    assert effects(target) == ["v1 bo x1"]
    assert document["steps"][1] == {"use": "login@1", "with": {"user": "bo"}}  # kept as written


def test_a_registered_workflow_resolves_its_templates_when_a_session_is_made(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=0)  # nothing runs: only the steps made are looked at
    with api.client("alice") as alice:
        pushed(alice, login("v1"))
        pushed(alice, using(target, {"use": "login", "with": {"user": "cy"}}))
        first = alice.post("/v1/sessions", json={"workflow": "checkout"}).json()
        pushed(alice, login("v2"))
        second = alice.post("/v1/sessions", json={"workflow": "checkout"}).json()
        fork = alice.post(
            f"/v1/sessions/{first['session_id']}/fork",
            json={"from_step": 0, "steps": [{"use": "login@1", "with": {"user": "di"}}]},
        ).json()
        steps = [created_event(alice, s["session_id"])["steps"] for s in (first, second, fork)]

    assert [(made[0]["text"], made[0]["origin"]) for made in steps] == [
        ('POST /effects with {"name": "v1 cy x1"}', {"template": "login@1"}),
        ('POST /effects with {"name": "v2 cy x1"}', {"template": "login@2"}),
        ('POST /effects with {"name": "v1 di x1"}', {"template": "login@1"}),
    ]


def test_unknown_templates_and_another_tenants_are_refused_and_nothing_is_created(
    api: Api, fresh_database_url: str, target: str
) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        pushed(alice, login())
        by_eve = eve.post(
            "/v1/sessions", json=using(target, {"use": "login", "with": {"user": "e"}})
        )
        pushed_by_eve = eve.post("/v1/workflows", json=using(target, {"use": "login"}))
        unknown = alice.post("/v1/sessions", json=using(target, {"use": "logout"}))
        no_version = alice.post("/v1/sessions", json=using(target, {"use": "login@7"}))
        pushed_unknown = alice.post("/v1/workflows", json=using(target, {"use": "logout"}))
        a_file = alice.post("/v1/sessions", json=using(target, {"use": "login.yaml"}))

    for refused in (by_eve, pushed_by_eve, unknown, pushed_unknown):
        problem = assert_problem(refused, 422, "TEMPLATE_NOT_FOUND")
        assert "is registered" in problem["message"]
    assert "use: login: no workflow named 'login' is registered" in by_eve.json()["message"]
    assert "has no version 7" in assert_problem(no_version, 422, "TEMPLATE_NOT_FOUND")["message"]
    assert_problem(a_file, 422, "TEMPLATE_NOT_FOUND")  # the API never reads a file
    assert sessions_created(fresh_database_url) == 0


def test_a_push_that_would_make_a_cycle_is_refused_naming_it(api: Api, target: str) -> None:
    with api.client("alice") as alice:
        pushed(alice, login())
        pushed(alice, using(target, {"use": "login", "with": {"user": "x"}}))
        cycle = {**login(), "steps": [{"use": "checkout"}]}
        refused = alice.post("/v1/workflows", json=cycle)
        itself = alice.post("/v1/workflows", json={**login(), "steps": [{"use": "login"}]})
        versions = alice.get("/v1/workflows/login").json()["versions"]

    problem = assert_problem(refused, 422, "TEMPLATE_CYCLE")
    assert "templates use each other: login -> checkout -> login" in problem["message"]
    assert problem["details"]["cycle"] == ["login", "checkout", "login"]
    assert_problem(itself, 422, "TEMPLATE_CYCLE")
    assert len(versions) == 1


def test_a_templates_values_are_checked_against_its_inputs_naming_the_input(
    api: Api, fresh_database_url: str, target: str
) -> None:
    with api.client("alice") as alice:
        pushed(alice, login())
        unfit = alice.post(
            "/v1/sessions", json=using(target, {"use": "login", "with": {"user": "a", "times": 0}})
        )
        missing = alice.post("/v1/sessions", json=using(target, {"use": "login"}))
        passed_on = alice.post(
            "/v1/sessions",
            json=using(
                target,
                {"use": "login", "with": {"user": "a", "times": "{{inputs.n}}"}},
                inputs={"n": {"type": "string"}},
                **{"with": {"n": "three"}},
            ),
        )
        pushed_unfit = alice.post(
            "/v1/workflows", json=using(target, {"use": "login", "with": {"user": ""}})
        )
        with_condition = alice.post(
            "/v1/sessions", json=using(target, {"use": "login", "if": "1 == 1"})
        )

    problem = assert_problem(unfit, 422, "INPUT_INVALID")
    assert problem["details"] == {"input": "times", "template": "login@1"}
    assert problem["message"].startswith("template login@1: input times: 0 is less than")
    assert assert_problem(missing, 422, "INPUT_INVALID")["details"]["input"] == "user"
    typed = assert_problem(passed_on, 422, "INPUT_INVALID")  # the value keeps its type
    assert "input times: 'three' is not of type 'integer'" in typed["message"]
    assert assert_problem(pushed_unfit, 422, "INPUT_INVALID")["details"]["input"] == "user"
    assert (
        "takes only with, not if"
        in assert_problem(with_condition, 422, "VALIDATION_FAILED")["message"]
    )
    assert sessions_created(fresh_database_url) == 0


def test_a_schedules_workflow_using_a_template_is_refused_clearly(api: Api, target: str) -> None:
    with api.client("alice") as alice:
        pushed(alice, login())
        workflow = using(target, {"use": "login", "with": {"user": "a"}})
        answer = alice.post(
            "/v1/schedules", json={"name": "s", "workflow": workflow, "every": "1h", "paused": True}
        )

    problem = assert_problem(answer, 422, "VALIDATION_FAILED")
    assert "a schedule's workflow cannot use templates yet" in problem["message"]
