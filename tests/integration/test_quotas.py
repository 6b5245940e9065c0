"""The per-key request bucket shared by API processes: batches taken into a process never let
the processes together spend more than the bucket granted. The tenant's creation bucket is
spent only while the server has room for the sessions."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from engine.store.app import Stepline
from engine.tenancy.quotas import Capacity, CreationQuota, RequestQuota


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
