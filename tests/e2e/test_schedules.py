"""Schedules fired by real processes: every firing once however many processes could fire it,
none once paused, and the firings missed while every process was down caught up as the
schedule says."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx

from domain.schedule import Schedule, firing_session_id
from engine.store.app import Stepline
from tests.e2e.conftest import Cluster
from tests.waiting import eventually

EVERY_S = 2


def schedule_body(name: str, catch_up: str) -> dict[str, Any]:
    workflow = {"name": name, "executor": "shell", "steps": ["run `true`"]}
    return {"name": name, "workflow": workflow, "every": f"{EVERY_S}s", "catch_up": catch_up}


def create(client: httpx.Client, name: str, catch_up: str = "one") -> dict[str, Any]:
    response = client.post("/v1/schedules", json=schedule_body(name, catch_up))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def firings(client: httpx.Client, schedule_id: str) -> list[datetime]:
    """The firing time of each session the schedule created, oldest first (duplicates kept)."""
    query = {"label": f"schedule_id={schedule_id}", "limit": 200}
    items = client.get("/v1/sessions", params=query).json()["items"]
    return sorted(datetime.fromisoformat(s["labels"]["scheduled_for"]) for s in items)


def fired_after(client: httpx.Client, schedule_id: str, moment: datetime) -> list[datetime]:
    return [at for at in firings(client, schedule_id) if at > moment]


def recorded_firings(store: Stepline, schedule_id: str) -> list[datetime]:
    """The firings the schedule's own log records."""
    return [
        datetime.fromisoformat(e.fired_at)
        for e in store.events.get(UUID(schedule_id))
        if isinstance(e, Schedule.Fired)
    ]


def test_two_workers_and_two_api_processes_fire_each_firing_once_and_none_once_paused(
    cluster: Cluster, store: Stepline
) -> None:
    cluster.worker(concurrency=2)
    cluster.worker(concurrency=2)
    first_api, second_api = cluster.api(workers=1), cluster.api(workers=1)
    with (
        httpx.Client(base_url=first_api, timeout=30) as one,
        httpx.Client(base_url=second_api, timeout=30) as other,
    ):
        schedule = create(one, "every two seconds", catch_up="all")
        schedule_id = schedule["schedule_id"]
        start = datetime.fromisoformat(schedule["created_at"])
        end = start + timedelta(seconds=11)
        eventually(lambda: fired_after(other, schedule_id, end), "a firing after 11 s", 60)
        paused = other.patch(f"/v1/schedules/{schedule_id}", json={"paused": True}).json()
        paused_at = datetime.fromisoformat(paused["updated_at"])

        # A schedule left running shows the scheduler went on past the paused one's next firing.
        witness = create(one, "witness")["schedule_id"]
        past_pause = paused_at + timedelta(seconds=2 * EVERY_S)
        eventually(lambda: fired_after(one, witness, past_pause), "the witness fired", 60)

        fired = firings(one, schedule_id)
    within = [at for at in fired if start < at <= end]
    assert len(within) in (5, 6), within
    assert [at for at, n in Counter(fired).items() if n > 1] == []
    assert recorded_firings(store, schedule_id) == fired
    assert [at for at in fired if at > paused_at] == []
    for at in fired:
        store.get_session(firing_session_id(UUID(schedule_id), at))  # the firing's own id


def test_firings_missed_while_every_process_was_down_are_caught_up_as_each_schedule_says(
    cluster: Cluster,
) -> None:
    cluster.worker(concurrency=2)
    with httpx.Client(base_url=cluster.api(workers=0), timeout=30) as client:
        every = create(client, "catch up all", catch_up="all")["schedule_id"]
        once = create(client, "catch up one", catch_up="one")["schedule_id"]
        for schedule_id in (every, once):
            eventually(lambda s=schedule_id: firings(client, s), "a first firing", 60)
    cluster.stop_all()
    down_from = datetime.now().astimezone()
    # What is being tested is time passing while nothing runs: three firings' worth of it.
    eventually(lambda: time.time() > down_from.timestamp() + 3.5 * EVERY_S, "time passed", 30)

    cluster.worker(concurrency=2)
    back_at = datetime.now().astimezone()
    with httpx.Client(base_url=cluster.api(workers=0), timeout=30) as client:
        for schedule_id in (every, once):
            eventually(lambda s=schedule_id: fired_after(client, s, back_at), "a firing", 60)
        all_of_them, one_for_all = firings(client, every), firings(client, once)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(all_of_them)]
    assert set(gaps) == {EVERY_S}, all_of_them
    missed = [at for at in all_of_them if down_from < at < back_at]
    assert len(missed) >= 3
    caught_up = [at for at in one_for_all if down_from < at < back_at]
    assert len(caught_up) <= 1, one_for_all
    assert max((b - a).total_seconds() for a, b in itertools.pairwise(one_for_all)) >= 3 * EVERY_S
