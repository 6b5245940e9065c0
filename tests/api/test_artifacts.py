"""Artifacts over HTTP: a failed browser step's screenshot, served to its own tenant only."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from tests.api.conftest import Api, shell_workflow
from tests.api.test_sessions import create


def frames(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    """Every frame of the session's stream to its end: event name, id (if any), data."""
    found: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    with client.stream("GET", f"/v1/sessions/{session_id}/stream") as response:
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(": ")
                frame[key] = json.loads(value) if key == "data" else value
            elif line == "" and frame:
                found.append(frame)
                frame = {}
    return found


def test_a_failed_browser_step_has_a_screenshot_only_its_tenant_can_fetch(
    api: Api, target: str
) -> None:
    workflow = {
        "name": "expects too much",
        "executor": "browser",
        "base_url": target,
        "steps": ["open /app/login", 'expect page contains "Welcome back"'],
    }
    with api.client("alice") as alice, api.client("eve") as eve:
        session_id = create(alice, workflow)
        stream = frames(alice, session_id)  # to the end: the session fails
        announced = [f["data"] for f in stream if f.get("event") == "artifact"]
        assert stream[-1]["event"] == "Failed"
        assert [a["kind"] for a in announced] == ["failure_screenshot"]
        url = announced[0]["url"]
        assert url == f"/v1/sessions/{session_id}/artifacts/{announced[0]['hash']}"
        recorded = next(
            f for f in stream if f.get("id") == str(announced[0]["version"])
        )  # the announcement comes just before the event that records it: the failed check
        assert recorded["event"] == "Checked"
        assert recorded["data"]["data"]["artifacts"][0]["hash"] == announced[0]["hash"]
        assert (announced[0]["step_index"], announced[0]["command_id"]) == (1, None)

        shot = alice.get(url)
        assert shot.status_code == 200
        assert shot.headers["content-type"] == "image/png"
        assert hashlib.sha256(shot.content).hexdigest() == announced[0]["hash"]
        assert len(shot.content) == announced[0]["size"]

        assert eve.get(url).status_code == 404  # another tenant: no such session
        eves_own = create(eve, shell_workflow("true"))
        borrowed = eve.get(f"/v1/sessions/{eves_own}/artifacts/{announced[0]['hash']}")
        assert borrowed.status_code == 404  # a hash is no key to another session's files
        assert borrowed.json()["code"] == "ARTIFACT_NOT_FOUND"
        unknown = alice.get(f"/v1/sessions/{session_id}/artifacts/{'0' * 64}")
        assert unknown.status_code == 404
        assert alice.get(f"/v1/sessions/{session_id}/artifacts/not-a-hash").status_code == 422
