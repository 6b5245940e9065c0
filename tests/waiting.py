"""Waiting in tests: on a condition, until a deadline, never for a fixed time.

A fixed sleep used as synchronisation either wastes time or, on a loaded machine, is too short
and the test lies; a loop without a deadline hangs CI. `eventually` asks until the condition
holds and fails the test, naming what never happened, when the deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, within_s: float = 30.0) -> T:
    """The first truthy answer of `check`, asked every 50 ms until the deadline."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"never within {within_s:g} s: {what}")
