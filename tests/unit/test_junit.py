"""The JUnit report of a session, from events recorded in memory: the paths a CLI run rarely
takes (a retry, a wait, an expiry between steps, text XML cannot hold), read back with
junitparser as a CI system would."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

from api.cli.junit import write_junit
from domain.errors import StandardError
from domain.session import StepSpec, WorkflowSession
from domain.waits import WaitKind

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def new_session(*texts: str) -> WorkflowSession:
    return WorkflowSession.create(
        name="Checkout",
        steps=[StepSpec(text) for text in texts],
        tenant="acme",
        actor="alice",
        config={"max_attempts": 2},
        labels={},
    )


def reported(session: WorkflowSession, tmp_path: Path) -> TestSuite:
    report = tmp_path / "report.xml"
    write_junit(report, session.collect_events())
    xml = JUnitXml.fromfile(str(report))
    assert isinstance(xml, JUnitXml)
    (suite,) = list(xml)
    return suite


def error(code: str, message: str) -> StandardError:
    return StandardError.of(code, message)


def retimed(events: list[WorkflowSession.Event], *seconds: float) -> list[WorkflowSession.Event]:
    """The events as if recorded `seconds` after a fixed moment, each its own."""
    return [
        replace(e, timestamp=T0 + timedelta(seconds=s))
        for e, s in zip(events, seconds, strict=True)
    ]


def test_a_retried_step_is_one_case_timed_from_its_first_attempt_to_its_end(
    tmp_path: Path,
) -> None:
    session = new_session("GET /flaky")
    session.start_step(0)
    session.fail_step(0, error=error("HTTP_REQUEST_FAILED", "refused").to_dict(), retryable=True)
    session.start_step(0)
    session.complete_step(0, summary="ok")
    session.complete()
    # created, started, failed, started again after a back-off, completed, session completed
    events = retimed(session.collect_events(), 0, 1, 2, 5, 6.5, 6.5)

    report = tmp_path / "report.xml"
    write_junit(report, events)
    (suite,) = list(JUnitXml.fromfile(str(report)))

    (case,) = list(suite)
    assert case.is_passed
    assert case.time == 5.5
    assert suite.time == 5.5
    assert suite.timestamp == "2026-03-02T09:00:00"


def test_a_step_waiting_when_the_run_stopped_is_an_error_saying_what_it_waits_for(
    tmp_path: Path,
) -> None:
    session = new_session("wait for approval", "GET /paid")
    session.start_step(0)
    session.begin_wait(0, kind=WaitKind.APPROVAL, key="k0", question="Ship it?")

    suite = reported(session, tmp_path)

    waiting, not_reached = list(suite)
    assert isinstance(waiting.result[0], Error)
    assert (waiting.result[0].type, waiting.result[0].message) == (
        "WAITING",
        "waiting for approval: Ship it?",
    )
    assert isinstance(not_reached.result[0], Skipped)
    assert (suite.failures, suite.errors, suite.skipped) == (0, 1, 1)


def test_a_session_expired_between_steps_fails_the_first_step_not_done(tmp_path: Path) -> None:
    session = new_session("GET /a", "GET /b", "GET /c")
    session.start_step(0)
    session.complete_step(0, summary="ok")
    session.expire(error("SESSION_EXPIRED", "session TTL reached").to_dict())

    suite = reported(session, tmp_path)

    done, stopped, not_reached = list(suite)
    assert done.is_passed
    assert isinstance(stopped.result[0], Failure)
    assert (stopped.result[0].type, stopped.result[0].message) == (
        "SESSION_EXPIRED",
        "session TTL reached",
    )
    assert isinstance(not_reached.result[0], Skipped)
    assert {p.name: p.value for p in suite.properties()}["status"] == "expired"


def test_text_xml_cannot_hold_is_replaced_and_the_report_still_parses(tmp_path: Path) -> None:
    session = new_session("run `printf '\\a'`")
    session.start_step(0)
    message = "output was \x07\x1b[31mred\x00"
    session.fail_step(0, error=error("SHELL_FAILED", message).to_dict(), retryable=False)

    suite = reported(session, tmp_path)

    (case,) = list(suite)
    assert case.result[0].message == "output was \ufffd\ufffd[31mred\ufffd"
