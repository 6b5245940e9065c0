"""The Schedule aggregate: its timing, and the firings it says are due (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidStateTransition, InvalidWorkflow
from domain.schedule import Schedule, Timing, firing_session_id

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
"""A Monday, on every grid the tests use."""
GRACE = timedelta(seconds=5)


def schedule(catch_up: str = "one", every: str | None = "10s", cron: str | None = None) -> Schedule:
    return Schedule.create(
        tenant="acme",
        name="smoke",
        workflow={"name": "smoke", "steps": ["run `true`"]},
        timing=Timing.of(cron, every, "UTC"),
        catch_up=catch_up,
        now=T0,
        actor="alice",
    )


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def test_every_fires_on_a_grid_from_the_epoch() -> None:
    timing = Timing.of(None, "30s", None)
    assert timing.next_after(seconds(1)) == seconds(30)
    assert timing.next_after(seconds(30)) == seconds(60)
    assert timing.latest_at_or_before(seconds(59)) == seconds(30)


def test_a_cron_expression_is_read_in_its_time_zone() -> None:
    nine_in_paris = Timing.of("0 9 * * 1-5", None, "Europe/Paris")
    # 09:00 UTC on a Monday in March is 10:00 in Paris: the next 09:00 there is Tuesday's.
    assert nine_in_paris.next_after(T0) == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "every", "zone", "field"),
    [
        (None, None, "UTC", "cron"),
        ("* * * * *", "5s", "UTC", "cron"),
        ("61 * * * *", None, "UTC", "cron"),
        ("@reboot", None, "UTC", "cron"),
        (None, "0s", "UTC", "every"),
        (None, "5 fortnights", "UTC", "every"),
        (None, "5s", "Mars/Olympus", "timezone"),
        (None, "5s", "../../etc/passwd", "timezone"),
    ],
)
def test_a_timing_that_cannot_fire_is_refused_naming_its_field(
    cron: str | None, every: str | None, zone: str, field: str
) -> None:
    with pytest.raises(InvalidWorkflow) as refused:
        Timing.of(cron, every, zone)
    assert refused.value.details["field"] == field


def test_nothing_is_due_before_the_first_firing() -> None:
    assert schedule().firings_due(seconds(9.9), GRACE, 10).fire == []


def test_the_firing_due_is_the_one_just_passed() -> None:
    assert schedule().firings_due(seconds(10.2), GRACE, 10).fire == [seconds(10)]


def test_a_firing_once_fired_is_not_due_again() -> None:
    smoke = schedule()
    smoke.fire(seconds(10), uuid.uuid4(), "scheduler")
    assert smoke.firings_due(seconds(19), GRACE, 10).fire == []
    with pytest.raises(InvalidStateTransition):
        smoke.fire(seconds(10), uuid.uuid4(), "scheduler")


def test_catch_up_all_fires_every_missed_firing_in_order() -> None:
    due = schedule("all").firings_due(seconds(65), GRACE, 10)
    assert due.fire == [seconds(n) for n in (10, 20, 30, 40, 50, 60)]


def test_catch_up_all_fires_at_most_the_limit_at_once() -> None:
    assert schedule("all").firings_due(seconds(65), GRACE, 2).fire == [seconds(10), seconds(20)]


def test_catch_up_one_fires_once_for_every_missed_firing() -> None:
    assert schedule("one").firings_due(seconds(65), GRACE, 10).fire == [seconds(60)]


def test_catch_up_none_lets_the_missed_firings_go() -> None:
    due = schedule("none").firings_due(seconds(68), GRACE, 10)
    assert (due.fire, due.let_go_through) == ([], seconds(60))


def test_catch_up_none_still_fires_a_firing_within_the_grace() -> None:
    assert schedule("none").firings_due(seconds(63), GRACE, 10).fire == [seconds(60)]


def test_a_paused_schedule_has_nothing_due_and_resumes_from_the_resumption() -> None:
    smoke = schedule("all")
    smoke.pause("alice")
    assert smoke.firings_due(seconds(100), GRACE, 10).fire == []
    smoke.resume(seconds(100), "alice")
    assert smoke.firings_due(seconds(125), GRACE, 10).fire == [seconds(110), seconds(120)]


def test_a_new_timing_counts_from_when_it_was_changed() -> None:
    smoke = schedule("all")
    smoke.change({"timing": Timing.of(None, "1m", "UTC").to_dict()}, seconds(100), "alice")
    assert smoke.firings_due(seconds(185), GRACE, 10).fire == [seconds(120), seconds(180)]


def test_a_deleted_schedule_takes_no_more_commands() -> None:
    smoke = schedule()
    smoke.delete("alice")
    assert smoke.next_firing is None
    with pytest.raises(InvalidStateTransition):
        smoke.pause("alice")


def test_a_firings_session_id_is_the_same_whoever_derives_it() -> None:
    schedule_id = uuid.uuid4()
    assert firing_session_id(schedule_id, seconds(10)) == firing_session_id(
        schedule_id, seconds(10).astimezone(datetime.now().astimezone().tzinfo)
    )
    assert firing_session_id(schedule_id, seconds(10)) != firing_session_id(
        schedule_id, seconds(20)
    )


def test_catch_up_must_be_none_one_or_all() -> None:
    with pytest.raises(InvalidWorkflow):
        schedule("some")
