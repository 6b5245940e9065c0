"""The session lifecycle through real HTTP."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import psycopg

from api.http.schemas import SessionCreated, SessionView
from engine.store import locks
from tests.api.conftest import Api, ApiFactory, shell_workflow

PROBLEM = "application/problem+json"


def stream(
    client: httpx.Client, session_id: str, last_event_id: int | None = None
) -> list[dict[str, Any]]:
    """Read the session's SSE stream to its end; the events, in order."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/sessions/{session_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(": ")
                frame[key.rstrip(":")] = value
            elif line == "" and frame:
                event = json.loads(frame["data"])
                assert int(frame["id"]) == event["version"]
                assert frame["event"] == event["type"]
                events.append(event)
                frame = {}
    return events


def create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def test_a_session_created_over_http_runs_streams_and_is_audited(api: Api) -> None:
    with api.client("alice") as alice:
        response = alice.post("/v1/sessions", json=shell_workflow("echo hello", "true"))
        assert response.status_code == 201
        created = response.json()
        session_id = created["session_id"]
        assert response.headers["location"] == f"/v1/sessions/{session_id}"
        assert created["stream_url"] == f"/v1/sessions/{session_id}/stream"
        assert (created["status"], created["version"]) == ("pending", 1)

        events = stream(alice, session_id)
        assert [e["type"] for e in events][-1] == "Completed"
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["actor"] == "alice"

        session = alice.get(f"/v1/sessions/{session_id}").json()
        assert (session["status"], session["completed_steps"], session["percent"]) == (
            "completed",
            2,
            100.0,
        )
        steps = alice.get(f"/v1/sessions/{session_id}/steps").json()
        assert [(s["status"], s["commands"]) for s in steps] == [("completed", 1)] * 2
        progress = alice.get(f"/v1/sessions/{session_id}/progress").json()
        assert progress["estimated_remaining_ms"] == 0
        history = alice.get(f"/v1/sessions/{session_id}/events", params={"limit": 3}).json()
        assert [e["version"] for e in history["items"]] == [1, 2, 3]
        assert history["next_after"] == 3
        audit = alice.get("/v1/audit", params={"session_id": session_id}).json()["items"]
        assert [a["event_type"] for a in audit] == [e["type"] for e in events]
        assert audit[0]["description"] == 'created "api test" with 2 steps'


def test_pause_resume_and_cancel_carry_the_key_name_as_actor(api: Api) -> None:
    with api.client("alice") as alice, api.client("bob") as bob:
        session_id = create(alice, shell_workflow("sleep 0.3", "sleep 0.3", "sleep 0.3"))
        paused = bob.post(f"/v1/sessions/{session_id}/pause", json={"reason": "look"})
        assert paused.status_code == 200
        assert paused.json()["status"] == "paused"

        again = bob.post(f"/v1/sessions/{session_id}/pause")
        assert again.status_code == 409
        assert again.headers["content-type"] == PROBLEM
        assert again.json()["code"] == "INVALID_STATE_TRANSITION"

        resumed = alice.post(f"/v1/sessions/{session_id}/resume").json()["status"]
        assert resumed in ("pending", "running")  # back to where the pause found it
        events = stream(alice, session_id)
        assert events[-1]["type"] == "Completed"
        actors = {e["type"]: e["actor"] for e in events}
        assert (actors["Paused"], actors["Resumed"]) == ("bob", "alice")
        assert next(e for e in events if e["type"] == "Paused")["data"]["reason"] == "look"

        doomed = create(alice, shell_workflow("sleep 5"))
        cancelled = alice.post(f"/v1/sessions/{doomed}/cancel", json={"reason": "stop"})
        assert cancelled.json()["status"] == "cancelled"
        assert stream(alice, doomed)[-1]["type"] == "Cancelled"
        assert alice.post(f"/v1/sessions/{doomed}/resume").status_code == 409


def test_a_session_as_of_a_version_is_rebuilt_from_the_log(api: Api) -> None:
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("true", "true"))
        stream(alice, session_id)

        at_1 = alice.get(f"/v1/sessions/{session_id}", params={"version": 1}).json()
        assert (at_1["status"], at_1["version"], at_1["completed_steps"]) == ("pending", 1, 0)
        at_5 = alice.get(f"/v1/sessions/{session_id}", params={"version": 5}).json()
        assert (at_5["status"], at_5["completed_steps"]) == ("running", 1)
        beyond = alice.get(f"/v1/sessions/{session_id}", params={"version": 99})
        assert beyond.status_code == 404
        assert "the latest is" in beyond.json()["message"]


def test_a_read_shows_what_was_just_written_while_the_views_lag(
    start_api: ApiFactory, fresh_database_url: str
) -> None:
    with psycopg.connect(fresh_database_url, autocommit=True) as idle_leader:
        idle_leader.execute("SELECT pg_advisory_lock(%s)", (locks.PROJECTOR,))  # projects nothing
        api = start_api(workers=0)
        with api.client("alice") as alice, api.client("eve") as eve:
            session_id = create(alice, shell_workflow("true"))
            assert eve.get(f"/v1/sessions/{session_id}").status_code == 404
            created = alice.get(f"/v1/sessions/{session_id}").json()
            paused = alice.post(f"/v1/sessions/{session_id}/pause").json()
            shown = alice.get(f"/v1/sessions/{session_id}").json()

    assert (created["status"], created["version"]) == ("pending", 1)
    assert (shown["status"], shown["version"]) == ("paused", paused["version"])


def test_sessions_are_listed_filtered_and_paged(api: Api) -> None:
    with api.client("alice") as alice:
        made = [
            create(alice, shell_workflow("true", labels={"suite": "smoke", "n": str(i)}))
            for i in range(5)
        ]
        first = alice.get("/v1/sessions", params={"limit": 2}).json()
        second = alice.get(
            "/v1/sessions", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
        third = alice.get(
            "/v1/sessions", params={"limit": 2, "cursor": second["next_cursor"]}
        ).json()
        listed = [s["session_id"] for page in (first, second, third) for s in page["items"]]
        assert listed == made[::-1]
        assert third["next_cursor"] is None

        labelled = alice.get("/v1/sessions", params={"label": ["suite=smoke", "n=3"]}).json()
        assert [s["session_id"] for s in labelled["items"]] == [made[3]]
        bad = alice.get("/v1/sessions", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == PROBLEM


def test_sessions_are_found_by_the_start_of_their_id_only_within_the_tenant(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        session_id = create(alice, shell_workflow("true"))
        prefix = {"id_prefix": session_id[:8]}

        found = alice.get("/v1/sessions", params=prefix).json()["items"]
        assert [s["session_id"] for s in found] == [session_id]
        assert eve.get("/v1/sessions", params=prefix).json()["items"] == []
        for bad in ("abc", "not-an-id"):
            refused = alice.get("/v1/sessions", params={"id_prefix": bad})
            assert refused.status_code == 422
            assert refused.json()["code"] == "VALIDATION_FAILED"
            assert bad in refused.json()["message"]


def test_the_audit_reads_newest_first_and_can_leave_out_the_events_of_steps(api: Api) -> None:
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("true"))
        stream(alice, session_id)
        trail = {"session_id": session_id}
        oldest_first = alice.get("/v1/audit", params=trail).json()["items"]

        newest = alice.get("/v1/audit", params={**trail, "order": "newest", "limit": 2}).json()
        older = alice.get(
            "/v1/audit", params={**trail, "order": "newest", "before": newest["next_before"]}
        ).json()
        session_level = alice.get("/v1/audit", params={**trail, "per_step": "false"}).json()

    assert newest["items"] + older["items"] == oldest_first[::-1]
    assert (newest["next_after"], older["next_before"]) == (None, None)
    assert [a["event_type"] for a in session_level["items"]] == ["Created", "Completed"]


def test_a_tenant_never_runs_more_sessions_at_once_than_its_limit(
    start_api: ApiFactory,
) -> None:
    api = start_api(tenant_max_running=1)
    with api.client("alice") as alice, api.client("eve") as eve:
        ours = [create(alice, shell_workflow("sleep 0.5", "true")) for _ in range(3)]
        theirs = create(eve, shell_workflow("sleep 0.5"))
        histories = {session_id: stream(alice, session_id) for session_id in ours}
        other = stream(eve, theirs)

    spans = sorted(
        (events[1]["timestamp"], events[-1]["timestamp"]) for events in histories.values()
    )
    assert all(e[-1]["type"] == "Completed" for e in [*histories.values(), other])
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert ended <= started  # acme's sessions ran one after another
    assert other[1]["timestamp"] < spans[-1][0]  # globex did not wait behind acme


def test_a_created_and_a_read_session_answer_every_field_of_their_model_in_its_order(
    api: Api,
) -> None:
    """The hot routes render their answers themselves: as FastAPI would, every field (nulls
    too) by alias, in the model's order, as application/json."""
    with api.client("alice") as alice:
        response = alice.post("/v1/sessions", json=shell_workflow("true"))
        read = alice.get(f"/v1/sessions/{response.json()['session_id']}")
    for answer, model in ((response, SessionCreated), (read, SessionView)):
        assert answer.headers["content-type"] == "application/json"
        fields = [field.alias or name for name, field in model.model_fields.items()]
        assert list(answer.json()) == fields
        assert (
            answer.content
            == model.model_validate_json(answer.content).model_dump_json(by_alias=True).encode()
        )


def test_a_chunked_body_within_the_limit_creates_a_session(api: Api) -> None:
    body = json.dumps(shell_workflow("true")).encode()
    with api.client("alice") as alice:
        response = alice.post(
            "/v1/sessions",
            content=(body[i : i + 16] for i in range(0, len(body), 16)),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 201, response.text
