"""The live feed on a real log: with nobody subscribed it skips to the head, and a subscriber
that comes after it skipped still gets every event after the history it read."""

from __future__ import annotations

import asyncio

from domain.session import WorkflowSession
from engine.live import feed as feed_module
from engine.live.feed import EventFeed, Live
from engine.store.app import Stepline
from tests.workloads import create, start_step


def encoded(event: WorkflowSession.Event) -> str:
    return type(event).__name__


def deliver(feed: EventFeed[str]) -> None:
    """One delivery, as a wake of the feed's thread runs it."""
    feed._deliver_new_events()


def test_with_nobody_subscribed_the_feed_moves_to_the_head(app: Stepline, monkeypatch) -> None:
    monkeypatch.setattr(feed_module, "SKIP_EVERY_S", 0.0)
    feed = EventFeed[str](app, encoded)
    session_id = create(app)
    start_step(app, session_id, 0)

    deliver(feed)

    assert feed._position == app.recorder.max_notification_id()


def test_a_subscriber_after_a_skip_gets_every_event_after_its_history(
    app: Stepline, monkeypatch
) -> None:
    monkeypatch.setattr(feed_module, "SKIP_EVERY_S", 0.0)
    feed = EventFeed[str](app, encoded)
    session_id = create(app)
    deliver(feed)  # nobody subscribed: skipped to the head

    async def subscribed_then_taken() -> tuple[int, list[int]]:
        subscription = feed.subscribe(session_id)
        history = app.get_session(session_id).version  # what a stream reads first
        start_step(app, session_id, 0)
        await asyncio.to_thread(deliver, feed)
        taken = await asyncio.wait_for(subscription.take(), timeout=5)
        return history, [item.version for item in taken if isinstance(item, Live)]

    history, versions = asyncio.run(subscribed_then_taken())

    assert versions == [history + 1]


def test_between_skips_a_first_subscriber_is_read_from_the_last_position(
    app: Stepline, monkeypatch
) -> None:
    monkeypatch.setattr(feed_module, "SKIP_EVERY_S", 3600.0)
    feed = EventFeed[str](app, encoded)
    session_id = create(app)
    deliver(feed)  # too soon after the feed started to move: stays where it was

    async def subscribed_then_taken() -> list[str]:
        subscription = feed.subscribe(session_id)
        await asyncio.to_thread(deliver, feed)
        taken = await asyncio.wait_for(subscription.take(), timeout=5)
        return [item.encoded for item in taken if isinstance(item, Live)]

    assert asyncio.run(subscribed_then_taken()) == ["Created"]


def test_with_nobody_subscribed_a_new_event_does_not_wake_the_feed(app: Stepline) -> None:
    feed = EventFeed[str](app, encoded)
    feed.wake()
    assert not feed._wake.is_set()

    async def woken_once_subscribed() -> bool:
        subscription = feed.subscribe(create(app))
        feed.wake()
        feed.unsubscribe(subscription)
        return feed._wake.is_set()

    assert asyncio.run(woken_once_subscribed())
