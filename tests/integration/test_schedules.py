"""Schedules fired against a real PostgreSQL: each firing one session, exactly once, paused
schedules silent, missed firings caught up as the schedule says. The scheduler is told the
time (`once(now=...)`), so no test waits for a clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import RecordConflictError

from domain.schedule import Schedule, Timing, firing_session_id
from engine.bootstrap import Runtime, open_runtime
from engine.scheduler import (
    FIRED_AT_LABEL,
    SCHEDULE_LABEL,
    NewSchedule,
    create_schedule,
    firing_request,
)
from engine.settings import ApiKey, Settings
from tests.conftest import MASTER_KEY, allow_local_targets

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
WORKFLOW: dict[str, Any] = {
    "name": "nightly check",
    "executor": "shell",
    "steps": ["run `true`"],
    "config": {"shell_allow": ["true"]},
    "labels": {"team": "ops"},
}


@pytest.fixture
def runtime(fresh_database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A process's runtime, without its background threads: the test fires by hand."""
    settings = Settings(
        database_url=fresh_database_url,
        data_dir=tmp_path,
        master_key=MASTER_KEY,
        api_keys={"alice": ApiKey(tenant="acme", sha256="0" * 64)},
        schedule_grace_s=5,
        log_level="WARNING",
    )
    with open_runtime(settings) as opened:
        allow_local_targets(opened.app)
        yield opened


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def scheduled(runtime: Runtime, catch_up: str = "one", workflow: dict[str, Any] = WORKFLOW) -> UUID:
    asked = NewSchedule("nightly", workflow, Timing.of(None, "10s", "UTC"), catch_up)
    return create_schedule(runtime.loop, asked, tenant="acme", actor="alice", now=T0).id


def fire(runtime: Runtime, seconds: float) -> None:
    assert runtime.scheduler().once(now=at(seconds)) is not False


def fired_at(runtime: Runtime, schedule_id: UUID) -> list[datetime]:
    """The firing times of the sessions the schedule created, from its events."""
    return [
        datetime.fromisoformat(event.fired_at)
        for event in runtime.app.events.get(schedule_id)
        if isinstance(event, Schedule.Fired)
    ]


def test_a_due_firing_creates_one_session_labelled_with_its_schedule_and_time(
    runtime: Runtime,
) -> None:
    schedule_id = scheduled(runtime)
    fire(runtime, 10.5)
    fire(runtime, 10.6)
    session = runtime.app.get_session(firing_session_id(schedule_id, at(10)))
    assert session.labels == {
        "team": "ops",
        SCHEDULE_LABEL: str(schedule_id),
        FIRED_AT_LABEL: "2026-03-02T09:00:10.000000+00:00",
    }
    assert (session.tenant, session.created_by) == ("acme", f"schedule:{schedule_id}")
    assert fired_at(runtime, schedule_id) == [at(10)]


def test_two_processes_firing_the_same_firing_create_one_session(runtime: Runtime) -> None:
    schedule_id = scheduled(runtime)
    first, second = (runtime.app.get_schedule(schedule_id) for _ in range(2))
    sessions = []
    for schedule in (first, second):
        session = firing_request(schedule, at(10)).build("acme", "scheduler")
        schedule.fire(at(10), session.id, "scheduler")
        sessions.append(session)
    runtime.app.save(first, sessions[0])
    with pytest.raises(RecordConflictError):
        runtime.app.save(second, sessions[1])
    again = firing_request(second, at(10)).build("acme", "scheduler")
    with pytest.raises(RecordConflictError):  # alone, too: the session's id is the firing's
        runtime.app.save(again)
    assert fired_at(runtime, schedule_id) == [at(10)]


def test_a_paused_schedule_does_not_fire_and_fires_again_from_its_resumption(
    runtime: Runtime,
) -> None:
    schedule_id = scheduled(runtime, catch_up="all")
    runtime.app.change_schedule(schedule_id, lambda s: s.pause("alice"))
    fire(runtime, 3_600)
    assert fired_at(runtime, schedule_id) == []
    runtime.app.change_schedule(schedule_id, lambda s: s.resume(at(3_600), "alice"))
    fire(runtime, 3_625)
    assert fired_at(runtime, schedule_id) == [at(3_610), at(3_620)]


def test_catch_up_all_fires_each_firing_missed_while_nothing_ran(runtime: Runtime) -> None:
    schedule_id = scheduled(runtime, catch_up="all")
    fire(runtime, 65)
    assert fired_at(runtime, schedule_id) == [at(n) for n in (10, 20, 30, 40, 50, 60)]


def test_catch_up_one_fires_once_for_the_firings_missed(runtime: Runtime) -> None:
    schedule_id = scheduled(runtime, catch_up="one")
    fire(runtime, 65)
    fire(runtime, 71)
    assert fired_at(runtime, schedule_id) == [at(60), at(70)]


def test_catch_up_none_lets_the_missed_firings_go_and_fires_the_next(runtime: Runtime) -> None:
    schedule_id = scheduled(runtime, catch_up="none")
    fire(runtime, 68)  # the firing at 60 is 8 s late, past the 5 s of grace
    fire(runtime, 70.5)
    assert fired_at(runtime, schedule_id) == [at(70)]
    let_go = [
        e for e in runtime.app.events.get(schedule_id) if isinstance(e, Schedule.FiringsLetGo)
    ]
    assert [e.through for e in let_go] == ["2026-03-02T09:01:00.000000+00:00"]


def test_a_firing_its_tenant_may_no_longer_run_is_recorded_as_refused(runtime: Runtime) -> None:
    runtime.secret_store.put("acme", "TOKEN", "token-of-acme", origins=["shell"])
    workflow = {**WORKFLOW, "steps": ["run `true {{secrets.TOKEN}}`"]}
    schedule_id = scheduled(runtime, workflow=workflow)
    runtime.secret_store.delete("acme", "TOKEN")
    fire(runtime, 10.5)
    refused = [
        e for e in runtime.app.events.get(schedule_id) if isinstance(e, Schedule.FiringRefused)
    ]
    assert [(e.fired_at, e.error["code"]) for e in refused] == [
        ("2026-03-02T09:00:10.000000+00:00", "SECRET_MISSING")
    ]
    assert fired_at(runtime, schedule_id) == []
