"""/v1/schedules through real HTTP; the server's own worker fires them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import KEYS, Api, ApiFactory, shell_workflow
from tests.conftest import MASTER_KEY
from tests.waiting import eventually
from tests.webhook_receiver import Receiver


def schedule_body(**extra: Any) -> dict[str, Any]:
    return {"name": "heartbeat", "workflow": shell_workflow("true"), "every": "1s", **extra}


def created(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/schedules/{response.json()['schedule_id']}"
    schedule: dict[str, Any] = response.json()
    return schedule


def sessions_of(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    query = {"label": f"schedule_id={schedule_id}", "limit": 200}
    items: list[dict[str, Any]] = client.get("/v1/sessions", params=query).json()["items"]
    return items


def test_a_schedule_fires_sessions_each_labelled_with_its_firing_until_paused(api: Api) -> None:
    with api.client("alice") as alice:
        schedule = created(alice, schedule_body(catch_up="all"))
        schedule_id = schedule["schedule_id"]
        assert schedule["next_firing_at"] is not None
        fired = eventually(lambda: len(sessions_of(alice, schedule_id)) >= 2 or None, "2 firings")
        assert fired
        paused = alice.patch(f"/v1/schedules/{schedule_id}", json={"paused": True}).json()
        assert (paused["paused"], paused["next_firing_at"]) == (True, None)
        firings = sessions_of(alice, schedule_id)
        times = [s["labels"]["scheduled_for"] for s in firings]
        assert len(set(times)) == len(times)
        assert paused["firings"] == len(firings)
        assert paused["last_session_id"] in {s["session_id"] for s in firings}


def test_a_tenant_lists_reads_changes_and_deletes_its_schedules_and_no_one_elses(
    api: Api,
) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        schedule = created(alice, schedule_body(every="1h", paused=True))
        path = f"/v1/schedules/{schedule['schedule_id']}"
        assert [s["schedule_id"] for s in alice.get("/v1/schedules").json()["items"]] == [
            schedule["schedule_id"]
        ]
        assert eve.get("/v1/schedules").json()["items"] == []
        for method in ("GET", "PATCH", "DELETE"):
            answer = eve.request(method, path, json={} if method == "PATCH" else None)
            assert (answer.status_code, answer.json()["code"]) == (404, "SCHEDULE_NOT_FOUND")

        changed = alice.patch(
            path, json={"cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "name": "weekdays"}
        ).json()
        assert (changed["cron"], changed["every"], changed["timezone"]) == (
            "0 9 * * 1-5",
            None,
            "Europe/Paris",
        )
        assert (changed["name"], changed["paused"]) == ("weekdays", True)
        assert alice.get(path).json() == changed

        assert alice.delete(path).status_code == 204
        assert alice.get(path).status_code == 404
        assert alice.get("/v1/schedules").json()["items"] == []


def test_a_schedule_that_could_not_fire_is_refused_naming_why(api: Api) -> None:
    with api.client("alice") as alice:
        bad_cron = alice.post("/v1/schedules", json=schedule_body(every=None, cron="61 * * * *"))
        both = alice.post("/v1/schedules", json=schedule_body(cron="* * * * *"))
        zone = alice.post("/v1/schedules", json=schedule_body(timezone="Mars/Olympus"))
        secret = alice.post(
            "/v1/schedules",
            json=schedule_body(workflow=shell_workflow("echo {{secrets.NOT_STORED}}")),
        )
    assert (bad_cron.status_code, bad_cron.json()["details"]["field"]) == (422, "cron")
    assert (both.status_code, both.json()["details"]["field"]) == (422, "cron")
    assert (zone.status_code, zone.json()["details"]["field"]) == (422, "timezone")
    assert (secret.status_code, secret.json()["code"]) == (422, "SECRET_MISSING")


def test_a_schedules_webhook_tells_of_each_session_it_fired(start_api: ApiFactory) -> None:
    api = start_api(master_key=MASTER_KEY)
    receiver = Receiver()
    with receiver.serving() as hook_url, api.client("alice") as alice:
        receiver.secret = alice.post("/v1/webhook-secret").json()["secret"]
        schedule = created(alice, schedule_body(webhook={"url": hook_url}))
        [told, *_] = eventually(receiver.got, "a firing's session was told of")
        alice.patch(f"/v1/schedules/{schedule['schedule_id']}", json={"paused": True})
    assert told.verified
    assert told.payload["data"]["labels"]["schedule_id"] == schedule["schedule_id"]


def test_stepline_schedules_works_through_a_server_with_a_key(api: Api, tmp_path: Path) -> None:
    workflow = tmp_path / "heartbeat.yaml"
    workflow.write_text("name: heartbeat\nexecutor: shell\nsteps:\n  - run `true`\n")
    server = ["--api", api.base_url, "--key", KEYS["alice"][1]]
    made = stepline("schedules", "create", str(workflow), "--every", "1h", "--json", *server)
    assert made.returncode == 0, made.stderr
    [schedule] = json.loads(made.stdout)
    paused = stepline("schedules", "pause", schedule["schedule_id"][:8], "--json", *server)
    assert json.loads(paused.stdout)[0]["paused"] is True, paused.stderr
    as_eve = ["--api", api.base_url, "--key", KEYS["eve"][1]]
    assert stepline("schedules", "list", "--json", *as_eve).stdout == "[]\n"
    deleted = stepline("schedules", "delete", schedule["schedule_id"], *server)
    assert deleted.returncode == 0, deleted.stderr
    with api.client("alice") as alice:
        assert alice.get("/v1/schedules").json()["items"] == []


def stepline(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "stepline"), *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )


def test_a_schedules_workflow_keeps_its_conditions_and_loops(api: Api) -> None:
    workflow = shell_workflow("true")
    workflow["steps"] = [
        {"text": "run `true`", "if": "1 == 2"},
        {"for_each": "word in inputs.words", "steps": ["run `echo {{word}}`"]},
    ]
    workflow["inputs"] = {"words": {"type": "array", "default": ["a", "b"]}}
    with api.client("alice") as alice:
        schedule_id = created(alice, schedule_body(workflow=workflow))["schedule_id"]
        first = eventually(lambda: (sessions_of(alice, schedule_id) or [None])[-1], "a firing")
        session_id = first["session_id"]
        eventually(
            lambda: alice.get(f"/v1/sessions/{session_id}").json()["status"] == "completed" or None,
            "the fired session completes",
        )
        steps = alice.get(f"/v1/sessions/{session_id}/steps").json()
        alice.patch(f"/v1/schedules/{schedule_id}", json={"paused": True})

    assert [(s["text"], s["status"]) for s in steps] == [
        ("run `true`", "skipped"),
        ("for each word in inputs.words", "completed"),
        ("run `echo a`", "completed"),
        ("run `echo b`", "completed"),
    ]
