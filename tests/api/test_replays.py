"""Replay, fork, lineage and usage through the HTTP API, with the scripted model on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, ApiFactory
from tests.api.test_errors import assert_problem
from tests.api.test_sessions import create, stream
from tests.conftest import MASTER_KEY, PASSWORD
from tests.integration.conftest import script_sign_in
from tests.scripted_model import ScriptedModel

PRICES = {"scripted-model": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}}


@pytest.fixture
def ai_api(start_api: ApiFactory, model: ScriptedModel) -> Api:
    started: Api = start_api(
        ai_model="scripted-model",
        ai_base_url=model.base_url,
        ai_api_key="test-key",
        ai_prices=PRICES,
        master_key=MASTER_KEY,
    )
    with started.client("alice") as alice:  # acme's, for the base_url of its workflows
        stored = alice.put("/v1/secrets/DEMO_PASSWORD", json={"value": PASSWORD})
        assert stored.status_code == 200, stored.text
    return started


def workflow(target: str) -> dict[str, Any]:
    return {
        "name": "sign in and add",
        "base_url": target,
        "steps": [
            "Sign in as the demo user",
            'POST /todos with {"title": "over http"}',
            "expect status 201",
        ],
    }


def run_to_the_end(client: Any, session_id: str) -> list[dict[str, Any]]:
    events = stream(client, session_id)
    assert events[-1]["type"] == "Completed", events[-1]
    return events


def test_replay_fork_and_lineage_over_http(ai_api: Api, target: str, model: ScriptedModel) -> None:
    script_sign_in(model)
    model.calls("complete_step", summary="signed in")
    with ai_api.client("alice") as alice, ai_api.client("eve") as eve:
        source = create(alice, workflow(target))
        run_to_the_end(alice, source)
        asked = len(model.requests)

        replayed = alice.post(f"/v1/sessions/{source}/replay", json={"strict": True})
        assert replayed.status_code == 201, replayed.text
        replay_id = replayed.json()["session_id"]
        events = run_to_the_end(alice, replay_id)
        assert len(model.requests) == asked
        assert [e["type"] for e in events].count("StepReplayed") == 3
        assert events[0]["data"]["replay_of"] == {"session_id": source, "strict": True}
        assert "a replay of" in events[0]["description"]

        forked = alice.post(
            f"/v1/sessions/{replay_id}/fork",
            json={"from_step": 1, "steps": ['POST /todos with {"title": "forked"}']},
        )
        assert forked.status_code == 201, forked.text
        assert forked.json()["notice"] is None  # the source's cookies are kept
        fork_id = forked.json()["session_id"]
        fork_events = run_to_the_end(alice, fork_id)
        assert [e["type"] for e in fork_events][:2] == ["Created", "StepsCarriedOver"]
        steps = alice.get(f"/v1/sessions/{fork_id}/steps").json()
        assert [(s["status"], s["attempts"]) for s in steps] == [("completed", 0), ("completed", 1)]

        lineage = alice.get(f"/v1/sessions/{fork_id}/lineage")
        assert lineage.status_code == 200, lineage.text
        root = lineage.json()["root"]
        assert (root["session_id"], root["origin"]) == (source, "new")
        (child,) = root["children"]
        assert (child["session_id"], child["origin"], child["source_id"]) == (
            replay_id,
            "replay",
            source,
        )
        assert [(g["session_id"], g["origin"]) for g in child["children"]] == [(fork_id, "fork")]
        replays = alice.get("/v1/sessions", params={"origin": "replay"}).json()["items"]
        assert [(s["session_id"], s["source_id"]) for s in replays] == [(replay_id, source)]
        forks_of = alice.get("/v1/sessions", params={"source_id": replay_id}).json()["items"]
        assert [s["session_id"] for s in forks_of] == [fork_id]

        for path in ("replay", "fork", "lineage", "usage"):
            method = eve.get if path in ("lineage", "usage") else eve.post
            body = {"json": {"from_step": 1}} if path == "fork" else {}
            assert_problem(
                method(f"/v1/sessions/{source}/{path}", **body), 404, "SESSION_NOT_FOUND"
            )
        assert_problem(
            alice.post(f"/v1/sessions/{source}/fork", json={"from_step": 3}),
            422,
            "VALIDATION_FAILED",
        )


def test_usage_per_session_and_tenant_with_prices(
    ai_api: Api, target: str, model: ScriptedModel
) -> None:
    script_sign_in(model)
    model.calls("complete_step", summary="signed in")
    with ai_api.client("alice") as alice, ai_api.client("eve") as eve:
        source = create(alice, workflow(target))
        run_to_the_end(alice, source)

        usage = alice.get(f"/v1/sessions/{source}/usage")
        assert usage.status_code == 200, usage.text
        body = usage.json()
        assert (body["prompt_tokens"], body["completion_tokens"]) == (60, 15)
        assert body["cost"] == pytest.approx((60 * 1.0 + 15 * 2.0) / 1000)
        assert [(s["step_index"], s["turns"]) for s in body["steps"]] == [(0, 3)]
        progress = alice.get(f"/v1/sessions/{source}/progress").json()
        assert progress["tokens_used"] == 75

        tenant = alice.get("/v1/usage").json()
        assert (tenant["tenant"], tenant["prompt_tokens"], tenant["cost"]) == (
            "acme",
            60,
            body["cost"],
        )
        day = tenant["days"][0]["day"]
        assert alice.get("/v1/usage", params={"since": day, "until": day}).json()["days"]
        assert alice.get("/v1/usage", params={"until": "2000-01-01"}).json()["days"] == []
        edges = {"since": "0001-01-01T00:30:00+01:00", "until": "9999-12-31T23:30:00-01:00"}
        assert len(alice.get("/v1/usage", params=edges).json()["days"]) == 1  # no overflow
        assert eve.get("/v1/usage").json()["days"] == []


def test_a_fork_says_plainly_when_its_sources_cookies_are_gone(
    start_api: ApiFactory, target: str
) -> None:
    api = start_api(master_key=MASTER_KEY, fork_state_ttl_s=0)  # forgotten once it has ended
    login = 'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}'
    signed_in_read = {"name": "read", "base_url": target, "steps": [login, "GET /todos"]}
    with api.client("alice") as alice:
        assert alice.put("/v1/secrets/DEMO_PASSWORD", json={"value": PASSWORD}).is_success
        source = create(alice, signed_in_read)
        run_to_the_end(alice, source)
        assert alice.get(f"/v1/sessions/{source}").json()["status"] == "completed"
        assert api.services.runtime.sweep().once() == []  # the sweep has been by

        after_sign_in = alice.post(f"/v1/sessions/{source}/fork", json={"from_step": 1})
        from_the_start = alice.post(f"/v1/sessions/{source}/fork", json={"from_step": 0})

    assert after_sign_in.status_code == 201, after_sign_in.text
    assert "the source's http cookies are gone" in after_sign_in.json()["notice"]
    assert from_the_start.json()["notice"] is None  # it signs in itself
