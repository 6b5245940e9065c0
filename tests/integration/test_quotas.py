"""The per-key request bucket shared by API processes: batches taken into a process never let
the processes together spend more than the bucket granted. The tenant's creation bucket is
spent only while the server has room for the sessions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from domain.session import StepSpec, WorkflowSession
from engine.store.app import SessionRequest, Stepline
from engine.store.event_store import CREATED_CHANNEL
from engine.tenancy.quotas import Admission, Capacity, CreationQuota, Refused, RequestQuota


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as p:
        yield p


def test_two_processes_together_spend_no_more_than_the_key_s_bucket(pool: ConnectionPool) -> None:
    per_minute = 200  # taken 10 at a time into each process
    first, second = RequestQuota(pool), RequestQuota(pool)
    started = time.monotonic()
    granted = 0
    for _ in range(400):
        for process in (first, second):
            if process.take("alice", per_minute) is None:
                granted += 1
    refilled = (time.monotonic() - started) * per_minute / 60
    assert per_minute - 2 * 10 <= granted <= per_minute + refilled + 1
    assert first.take("bob", per_minute) is None  # another key has a bucket of its own


def test_a_refused_take_says_how_long_until_a_token(pool: ConnectionPool) -> None:
    quota = RequestQuota(pool)
    while quota.take("eve", 3) is None:
        pass
    wait_s = quota.take("eve", 3)
    assert wait_s is not None
    assert 0 < wait_s <= 20  # a token every 20 s at 3 a minute


def test_a_creation_refused_for_want_of_room_costs_the_tenant_no_token(
    pool: ConnectionPool, fresh_app: Stepline
) -> None:
    no_room = CreationQuota(pool, 1, Capacity.of(0, fresh_app.events_table))
    room = CreationQuota(pool, 1, Capacity.of(10, fresh_app.events_table))

    refused = no_room.take("acme")

    assert (refused.full, refused.active) == (True, 0)
    assert room.take("acme").wait_s is None  # the minute's one token was still there
    assert room.take("acme").wait_s is not None


def test_a_creation_refused_in_the_statement_that_would_save_it_saves_and_spends_nothing(
    pool: ConnectionPool, fresh_app: Stepline, fresh_database_url: str
) -> None:
    no_room = CreationQuota(pool, 1, Capacity.of(0, fresh_app.events_table))
    room = CreationQuota(pool, 1, Capacity.of(10, fresh_app.events_table))
    request = SessionRequest("t", [StepSpec("run `true`")], config={"executor": "shell"})

    def save(admission: Admission) -> WorkflowSession:
        return fresh_app.create(
            request, tenant="acme", actor="alice", announced=True, admission=admission
        )

    with psycopg.connect(fresh_database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CREATED_CHANNEL}")
        with pytest.raises(Refused) as full:
            no_room.admitted("acme", 1, save)  # the tenant's first creation: no bucket yet
        assert (full.value.creations.full, full.value.creations.active) == (True, 0)
        assert fresh_app.recorder.max_notification_id() in (None, 0)  # nothing appended
        assert not list(listener.notifies(timeout=0.3))  # nor announced

        saved = room.admitted("acme", 1, save)  # the minute's one token was still there
        assert [e.originator_id for e in fresh_app.history(saved.id)] == [saved.id]
        announced = [n.payload for n in listener.notifies(timeout=30, stop_after=1)]
        assert announced == [f'["{saved.id}", "acme"]']

        with pytest.raises(Refused) as rate:
            room.admitted("acme", 1, save)
        assert not rate.value.creations.full
        assert (rate.value.creations.wait_s or 0) > 0  # as long as a token takes to come
        assert fresh_app.recorder.max_notification_id() == 1  # only the one admitted
        assert not list(listener.notifies(timeout=0.3))


def test_creations_racing_in_one_statement_each_spend_no_more_than_the_tenant_s_bucket(
    pool: ConnectionPool, fresh_app: Stepline
) -> None:
    quota = CreationQuota(pool, 5, Capacity.of(100, fresh_app.events_table))
    request = SessionRequest("t", [StepSpec("run `true`")], config={"executor": "shell"})

    def create(_: int) -> bool:
        try:
            quota.admitted(
                "acme",
                1,
                lambda admission: fresh_app.create(
                    request, tenant="acme", actor="alice", admission=admission
                ),
            )
        except Refused:
            return False
        return True

    with ThreadPoolExecutor(8) as threads:
        admitted = sum(threads.map(create, range(24)))

    assert admitted == 5  # the bucket full at the first take; one more token only in 12 s
    assert fresh_app.recorder.max_notification_id() == 5  # and only theirs appended
