"""A live subscription: what the feed hands over is taken in one piece, and never skipped."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from engine.live.feed import OVERFLOWED, Live, Subscription


def live(version: int) -> Live[bytes]:
    return Live(version, f"frame {version}".encode(), final=False)


def test_a_subscriber_takes_everything_handed_over_since_it_last_looked() -> None:
    async def handed_twice_then_taken() -> list[Live[bytes] | object]:
        subscription = Subscription[bytes](uuid4(), asyncio.get_running_loop(), size=10)
        subscription.put([live(1)])
        subscription.put([live(2), live(3)])
        return await subscription.take()

    taken = asyncio.run(handed_twice_then_taken())

    assert [item.version for item in taken if isinstance(item, Live)] == [1, 2, 3]


def test_a_subscriber_that_falls_behind_is_told_so_and_handed_nothing_more() -> None:
    async def handed_too_much() -> tuple[list[Live[bytes] | object], bool]:
        subscription = Subscription[bytes](uuid4(), asyncio.get_running_loop(), size=2)
        subscription.put([live(1), live(2)])
        subscription.put([live(3)])
        subscription.put([live(4)])
        return await subscription.take(), subscription.overflowed

    taken, overflowed = asyncio.run(handed_too_much())

    assert [item.version for item in taken[:2] if isinstance(item, Live)] == [1, 2]
    assert taken[2:] == [OVERFLOWED]
    assert overflowed
