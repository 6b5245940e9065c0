"""The step definitions that wait: what they ask for, and how a mistyped one is explained."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.session import StepSpec
from domain.waits import WaitKind
from engine.executors import Command
from engine.loop.builtin_steps import builtin
from engine.loop.definitions import DefinitionError
from engine.loop.waits import WAIT, WaitRequest
from engine.workflows.plan import plan, unfillable


@pytest.mark.parametrize(
    ("step", "command"),
    [
        ("wait for approval", Command(WAIT, "approval", {"question": None, "seconds": None})),
        (
            "Wait for approval: Send 1200 EUR? within 2h",
            Command(WAIT, "approval", {"question": "Send 1200 EUR?", "seconds": 7200.0}),
        ),
        (
            "wait for approval: Pay within the hour?",  # `within` in the question is the question
            Command(WAIT, "approval", {"question": "Pay within the hour?", "seconds": None}),
        ),
        ("wait 10 minutes", Command(WAIT, "timer", {"seconds": 600.0})),
        ("wait 3 seconds", Command(WAIT, "timer", {"seconds": 3.0})),
        ("wait 1.5h", Command(WAIT, "timer", {"seconds": 5400.0})),
        (
            "wait until 2026-12-01T09:00Z",
            Command(WAIT, "timer", {"until": "2026-12-01T09:00:00+00:00"}),
        ),
        (
            'wait for signal "payment.received" within 1 hour',
            Command(
                WAIT,
                "signal",
                {"signal": "payment.received", "name": "payment_received", "seconds": 3600.0},
            ),
        ),
    ],
)
def test_a_wait_step_asks_for_what_it_says(step: str, command: Command) -> None:
    assert builtin().match(step) == [command]


@pytest.mark.parametrize(
    ("step", "said"),
    [
        ("wait 3 fortnights", "is not a duration"),
        ("wait for approval within 2 moons", "is not a duration"),
        ("wait until 2026-13-01T09:00Z", "is not an ISO 8601 time"),
        ("wait until 2026-12-01T09:00", "has no time zone"),
    ],
)
def test_a_wait_that_cannot_be_read_says_why(step: str, said: str) -> None:
    with pytest.raises(DefinitionError, match=said):
        builtin().match(step)


def test_a_timer_until_a_time_is_due_then_and_a_timer_for_a_while_from_its_start() -> None:
    start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    [until] = builtin().match("wait until 2026-12-01T10:00+01:00") or []
    [lasting] = builtin().match("wait 90 seconds") or []

    assert WaitRequest.of(until).due_at(start) == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert WaitRequest.of(lasting).due_at(start) == datetime(2026, 11, 30, 9, 1, 30, tzinfo=UTC)
    assert WaitRequest.of(lasting).kind is WaitKind.TIMER


def test_a_signal_s_body_counts_as_saved_for_the_steps_after_it() -> None:
    steps = [
        StepSpec("POST /pay with {}"),
        StepSpec('wait for signal "payment.received"'),
        StepSpec('POST /receipts with {"ref": "{{vars.payment_received}}"}'),
    ]

    assert list(unfillable(plan(builtin(), steps))) == []
    assert len(list(unfillable(plan(builtin(), [steps[0], steps[2]])))) == 1


@pytest.mark.parametrize(
    "step", ["Wait until the page has loaded", "wait until ready", "Wait for the spinner"]
)
def test_plain_language_about_waiting_is_left_to_the_model(step: str) -> None:
    assert builtin().match(step) is None
