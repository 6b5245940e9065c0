"""One status vocabulary: the step history's statuses are spelled as the domain's own."""

from __future__ import annotations

from domain.session import ENDED, SessionStatus, StepStatus, StepViewStatus


def test_a_step_shows_each_of_its_own_statuses_as_the_aggregate_spells_it() -> None:
    shown = {status.value for status in StepViewStatus}
    assert {status.value for status in StepStatus} <= shown


def test_a_step_under_way_shows_its_sessions_pause_wait_or_ending_spelled_as_the_session() -> None:
    borrowed = {
        StepViewStatus(status.value)
        for status in {SessionStatus.PAUSED, SessionStatus.WAITING, *ENDED}
    }
    own = {StepViewStatus(status.value) for status in StepStatus}
    assert borrowed | own == set(StepViewStatus)
