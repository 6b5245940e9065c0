"""An attacker's view of the limits and the edges: each test tries to get past one control."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tests.api.conftest import Api, ApiFactory
from tests.api.test_sessions import create

T = TypeVar("T")
HOUR_MS = 3_600_000


def eventually(check: Callable[[], T | None], what: str, within_s: float = 20.0) -> T:
    """The first truthy answer of `check`, asked until the deadline."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_a_cancel_during_a_long_back_off_frees_the_lease_and_the_slot_at_once(
    start_api: ApiFactory,
) -> None:
    maximums = {"retry_backoff_ms": HOUR_MS, "max_attempts": 3}
    api: Api = start_api(keys=False, workers=1, limit_maximums=maximums)
    worker = api.services.worker
    assert worker is not None
    failing = {
        "name": "fails, then backs off for an hour",
        "executor": "shell",
        "steps": ["run `true`", "expect exit code 1"],
        "config": {"max_attempts": 3, "retry_backoff_ms": HOUR_MS},
    }
    with api.client(None) as dev:
        session_id = create(dev, failing)
        eventually(
            lambda: [
                s
                for s in dev.get(f"/v1/sessions/{session_id}/steps").json()
                if s["status"] == "failed"
            ],
            "the step failed once (the back-off begins)",
        )
        assert worker.held_sessions()  # backing off, under its lease, in the only slot

        cancelled = dev.post(f"/v1/sessions/{session_id}/cancel", json={"reason": "enough"})
        assert cancelled.json()["status"] == "cancelled"

        eventually(lambda: not worker.held_sessions(), "the worker's slot is free")
        eventually(
            lambda: all(
                str(lease.session_id) != session_id for lease in api.services.runtime.leases.held()
            ),
            "the lease is released",
        )
        quick = create(dev, {"name": "next", "executor": "shell", "steps": ["run `true`"]})
        eventually(
            lambda: dev.get(f"/v1/sessions/{quick}").json()["status"] == "completed",
            "the freed slot runs the next session",
        )
