"""The action cache through the HTTP API: a tenant sees, inspects and forgets its own learned
actions, never another's; a run may turn learning off."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api
from tests.api.test_errors import assert_problem
from tests.api.test_replays import ai_api, run_to_the_end
from tests.api.test_sessions import create
from tests.conftest import PASSWORD
from tests.integration.conftest import script_sign_in
from tests.scripted_model import ScriptedModel

__all__ = ["ai_api"]  # the fixture


def sign_in(target: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "learn over http",
        "base_url": target,
        "steps": ["Sign in as the demo user"],
        "config": config,
    }


def script(model: ScriptedModel) -> None:
    script_sign_in(model)
    model.calls("complete_step", summary="signed in")


def test_a_learned_action_is_listed_shown_and_forgotten_by_its_tenant_only(
    ai_api: Api, target: str, model: ScriptedModel
) -> None:
    script(model)
    with ai_api.client("alice") as alice, ai_api.client("eve") as eve:
        run_to_the_end(alice, create(alice, sign_in(target)))

        listed = alice.get("/v1/learned-actions")
        assert listed.status_code == 200, listed.text
        (learned,) = listed.json()["items"]
        action_id = learned["id"]
        assert learned["step_text"] == "Sign in as the demo user"
        assert learned["commands"][-1]["args"]["body"]["password"] == "{{secrets.DEMO_PASSWORD}}"
        assert PASSWORD not in listed.text
        assert eve.get("/v1/learned-actions").json()["items"] == []
        assert_problem(eve.get(f"/v1/learned-actions/{action_id}"), 404, "LEARNED_ACTION_NOT_FOUND")
        assert_problem(
            eve.delete(f"/v1/learned-actions/{action_id}"), 404, "LEARNED_ACTION_NOT_FOUND"
        )
        shown = alice.get(f"/v1/learned-actions/{action_id}")
        assert [v["version"] for v in shown.json()["versions"]] == [learned["version"]]

        again = create(alice, sign_in(target))
        events = run_to_the_end(alice, again)
        assert "LearnedActionUsed" in [e["type"] for e in events]
        assert len(model.requests) == 3

        assert alice.delete(f"/v1/learned-actions/{action_id}").status_code == 204
        assert alice.get("/v1/learned-actions").json()["items"] == []
        (old,) = alice.get("/v1/learned-actions", params={"all": "true"}).json()["items"]
        assert old["forgotten"] is True
        assert old["hits"] == 1
        assert_problem(
            alice.delete(f"/v1/learned-actions/{action_id}"), 404, "LEARNED_ACTION_NOT_FOUND"
        )
        audit = alice.get("/v1/audit").json()
        assert "LearnedActions.Forgotten" in str(audit)


def test_a_run_with_learning_off_asks_the_model_and_teaches_nothing(
    ai_api: Api, target: str, model: ScriptedModel
) -> None:
    script(model)
    script(model)
    with ai_api.client("alice") as alice:
        run_to_the_end(alice, create(alice, sign_in(target)))
        events = run_to_the_end(alice, create(alice, sign_in(target, learn=False)))
        assert "LearnedActionUsed" not in [e["type"] for e in events]
        assert len(model.requests) == 6
        assert_problem(
            alice.post("/v1/sessions", json=sign_in(target, learn="no")), 422, "VALIDATION_FAILED"
        )
