"""`stepline run --junit`: the JUnit XML report a CI system reads, read back with a maintained
JUnit library (junitparser) and checked against the session's own events. Real processes, the
example app, a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

from domain.session import WorkflowSession as W
from engine.store.app import Stepline
from tests.conftest import EXAMPLES, PASSWORD
from tests.integration.test_cli import stepline


def run_with_report(
    database_url: str, target: str, report: Path, password: str
) -> tuple[int, UUID]:
    result = stepline(
        "run",
        str(EXAMPLES / "todo.yaml"),
        "--base-url",
        target,
        "--json",
        "--junit",
        str(report),
        STEPLINE_DATABASE_URL=database_url,
        STEPLINE_SECRET_DEMO_PASSWORD=password,
    )
    return result.returncode, UUID(json.loads(result.stdout)["session_id"])


def suite_of(report: Path) -> TestSuite:
    """The report's one suite, under the <testsuites> root CI systems expect."""
    xml = JUnitXml.fromfile(str(report))
    assert isinstance(xml, JUnitXml), "the root must be <testsuites>"
    (suite,) = list(xml)
    assert (xml.tests, xml.failures, xml.errors, xml.time) == (
        suite.tests,
        suite.failures,
        suite.errors,
        suite.time,
    )
    return suite


def cases_of(suite: TestSuite) -> list[TestCase]:
    return list(suite)


def step_times_s(events: list[W.Event]) -> list[float]:
    """Each step's time from its events: its first start to its end (0 if it never started)."""
    created = events[0]
    assert isinstance(created, W.Created)
    started: dict[int, float] = {}
    ended: dict[int, float] = {}
    for event in events:
        at = event.timestamp.timestamp()
        if isinstance(event, W.StepStarted):
            started.setdefault(event.step_index, at)
        elif isinstance(event, W.StepCompleted | W.StepFailed):
            ended[event.step_index] = at
    return [
        round((ended[i] - started[i]) * 1000) / 1000 if i in ended else 0.0
        for i in range(len(created.steps))
    ]


def assert_consistent(suite: TestSuite) -> None:
    """The suite's counts and time are those of its cases, as a JUnit reader recounts them."""
    stated = (suite.tests, suite.failures, suite.errors, suite.skipped, suite.time)
    suite.update_statistics()
    recounted = (suite.tests, suite.failures, suite.errors, suite.skipped, suite.time)
    assert stated[:4] == recounted[:4]
    assert stated[4] == pytest.approx(recounted[4], abs=0.0015)


def test_a_passing_run_reports_each_step_as_a_passed_case_timed_from_its_events(
    database_url: str, target: str, app: Stepline, tmp_path: Path
) -> None:
    report = tmp_path / "report.xml"

    exit_code, session_id = run_with_report(database_url, target, report, PASSWORD)

    assert exit_code == 0
    events = app.history(session_id)
    created = events[0]
    assert isinstance(created, W.Created)
    suite = suite_of(report)
    cases = cases_of(suite)
    assert suite.name == created.name == "Todo app smoke test"
    assert {p.name: p.value for p in suite.properties()} == {
        "session_id": str(session_id),
        "status": "completed",
    }
    assert [case.name for case in cases] == [step["text"] for step in created.steps]
    assert {case.classname for case in cases} == {created.name}
    assert all(case.is_passed for case in cases)
    assert [case.time for case in cases] == pytest.approx(step_times_s(events), abs=0.0015)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (11, 0, 0, 0)
    assert_consistent(suite)


def test_a_failing_run_reports_the_failed_step_with_its_error_and_the_rest_as_not_reached(
    database_url: str, target: str, app: Stepline, tmp_path: Path
) -> None:
    report = tmp_path / "report.xml"

    exit_code, session_id = run_with_report(database_url, target, report, "wrong-password")

    assert exit_code == 1
    events = app.history(session_id)
    (failed,) = [e for e in events if isinstance(e, W.StepFailed)]
    suite = suite_of(report)
    cases = cases_of(suite)
    assert {p.name: p.value for p in suite.properties()}["status"] == "failed"
    (failure,) = cases[failed.step_index].result
    assert isinstance(failure, Failure)
    assert (failure.type, failure.message) == (failed.error["code"], failed.error["message"])
    assert failure.message == "expected status 200, got 401"
    assert all(case.is_passed for case in cases[: failed.step_index])
    not_reached = cases[failed.step_index + 1 :]
    assert [type(r) for case in not_reached for r in case.result] == [Skipped] * len(not_reached)
    assert {r.message for case in not_reached for r in case.result} == {"not reached"}
    assert [case.time for case in cases] == pytest.approx(step_times_s(events), abs=0.0015)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
        len(cases),
        1,
        0,
        len(not_reached),
    )
    assert_consistent(suite)


LOOPING = """\
name: Greet each name
inputs:
  names: {type: array, default: [ada, bob]}
steps:
  - text: GET /login
    if: len(inputs.names) == 0
  - for each name in inputs.names:
      - text: 'POST /effects with {"name": "junit {{name}}"}'
        if: name != "bob"
  - GET /login
"""


def test_a_skipped_step_is_skipped_saying_why_and_a_loop_reports_its_iterations(
    database_url: str, target: str, app: Stepline, tmp_path: Path
) -> None:
    workflow, report = tmp_path / "greet.yaml", tmp_path / "report.xml"
    workflow.write_text(LOOPING)
    result = stepline(
        "run", str(workflow), "--base-url", target, "--json", "--junit", str(report),
        STEPLINE_DATABASE_URL=database_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    session = app.get_session(UUID(json.loads(result.stdout)["session_id"]))
    suite = suite_of(report)
    cases = cases_of(suite)
    assert (
        [case.name for case in cases]
        == [step.text for step in session.steps]
        == [
            "GET /login",
            "for each name in inputs.names",
            'POST /effects with {"name": "junit ada"}',
            'POST /effects with {"name": "junit bob"}',
            "GET /login",
        ]
    )
    skipped = [(i, r.message) for i, case in enumerate(cases) for r in case.result]
    assert skipped == [
        (0, "skipped: if len(inputs.names) == 0 was false"),
        (3, 'skipped: if name != "bob" was false'),
    ]
    assert [type(r) for case in cases for r in case.result] == [Skipped, Skipped]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 0, 0, 2)
    assert_consistent(suite)
