"""Server-Sent Events: resume with Last-Event-ID under concurrent writes, many subscribers."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.api.conftest import Api, ApiFactory, shell_workflow
from tests.api.test_sessions import create, stream


def first_events(api: Api, session_id: str, count: int) -> list[dict[str, Any]]:
    """Read `count` events of a stream, then drop the connection."""
    events: list[dict[str, Any]] = []
    with (
        api.client() as alice,
        alice.stream("GET", f"/v1/sessions/{session_id}/stream") as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == count:
                    break
    return events


def test_a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing(api: Api) -> None:
    with api.client() as alice:
        session_id = create(alice, shell_workflow(*["sleep 0.05"] * 15))
        before = first_events(api, session_id, 6)  # the session keeps writing meanwhile
        after = stream(alice, session_id, last_event_id=before[-1]["version"])

    versions = [e["version"] for e in before + after]
    assert versions == list(range(1, len(versions) + 1))
    assert after[-1]["type"] == "Completed"
    assert len(versions) == 1 + 15 * 4 + 1


def test_the_query_parameter_resumes_like_the_header(api: Api) -> None:
    with api.client() as alice:
        session_id = create(alice, shell_workflow("true"))
        full = stream(alice, session_id)
        with alice.stream("GET", f"/v1/sessions/{session_id}/stream?after=3") as response:
            ids = [int(line[4:]) for line in response.iter_lines() if line.startswith("id: ")]
    assert ids == [e["version"] for e in full][3:]


def test_many_subscribers_on_one_and_on_many_sessions_each_see_everything(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(key_max_streams=30, tenant_max_streams=30)
    with api.client() as alice:
        sessions = [create(alice, shell_workflow(*["sleep 0.1"] * 5)) for _ in range(3)]
    subscribers = [sessions[i % 3] for i in range(30)]

    def watch(session_id: str) -> list[int]:
        with api.client() as client:
            return [e["version"] for e in stream(client, session_id)]

    with ThreadPoolExecutor(max_workers=30) as pool:
        seen = list(pool.map(watch, subscribers))

    for session_id, versions in zip(subscribers, seen, strict=True):
        assert versions == list(range(1, 1 + 1 + 5 * 4 + 1)), session_id
    assert api.services.feed.subscriber_count() == 0


def test_an_idle_stream_sends_heartbeats(api: Api) -> None:
    with api.client() as alice:
        session_id = create(alice, shell_workflow("sleep 2"))
        lines: list[str] = []
        done = threading.Event()
        with alice.stream("GET", f"/v1/sessions/{session_id}/stream") as response:
            for line in response.iter_lines():
                lines.append(line)
                if line == ": heartbeat":
                    done.set()
                    break
    assert done.is_set()
