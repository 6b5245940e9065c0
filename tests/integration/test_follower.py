"""The follower listens to a channel it is told to only while that channel is wanted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from engine.live.follower import LOOK_AGAIN_CHANNEL, LogFollower
from tests.waiting import eventually

CHANNEL = "stepline_test_news"


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=3, kwargs={"autocommit": True}
    ) as connections:
        yield connections


def notify(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(CHANNEL)))


def test_a_channel_wanted_only_sometimes_is_heard_only_then(pool: ConnectionPool) -> None:
    wanted = threading.Event()
    woken = threading.Semaphore(0)
    follower = LogFollower(pool, [CHANNEL], idle_check_s=3600)  # no idle wakes: only news
    follower.subscribe(woken.release, channel=CHANNEL)
    follower.listen_while(CHANNEL, wanted.is_set)
    stop = follower.start()
    try:
        assert woken.acquire(timeout=10)  # the first connection's wake, for what came before
        notify(pool)
        assert not woken.acquire(timeout=1)  # not wanted: not listened to

        wanted.set()
        follower.look_again()
        assert woken.acquire(timeout=10)  # listened to again: what came meanwhile
        eventually(lambda: CHANNEL in follower._listening, "the follower listens")
        notify(pool)
        assert woken.acquire(timeout=10)

        wanted.clear()
        notify(pool)  # heard, and the next look stops listening
        assert woken.acquire(timeout=10)
        eventually(lambda: CHANNEL not in follower._listening, "the follower stopped")
        notify(pool)
        assert not woken.acquire(timeout=1)
    finally:
        stop()


def test_looking_again_sends_nothing_while_the_channel_is_listened_to(
    pool: ConnectionPool,
) -> None:
    wanted = threading.Event()
    follower = LogFollower(pool, [CHANNEL], idle_check_s=3600)
    follower.listen_while(CHANNEL, wanted.is_set)
    stop = follower.start()
    try:
        with pool.connection() as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(LOOK_AGAIN_CHANNEL)))
            follower.look_again()  # not listened to yet: the follower is told
            assert len(list(conn.notifies(timeout=10, stop_after=1))) == 1

            wanted.set()
            follower.look_again()
            eventually(lambda: CHANNEL in follower._listening, "the follower listens")
            list(conn.notifies(timeout=0.5))  # the one that told it
            follower.look_again()
            assert list(conn.notifies(timeout=1)) == []
    finally:
        stop()
