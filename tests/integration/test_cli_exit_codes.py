"""The exit codes `stepline run` documents, those `test_cli.py` and `test_cli_check.py` do not
already pin: 1 for a session cancelled meanwhile, 2 for a file refused before anything runs,
3 for a run interrupted by Ctrl-C or SIGTERM, which hands its session back unfinished. Each
with the JUnit report the run writes. Real processes, real signals, a database of each test's
own (an interrupted session stays runnable: no other test's worker should meet it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from junitparser import Error, Failure, JUnitXml, TestSuite

from domain.session import SessionStatus
from domain.session import WorkflowSession as W
from engine.store.app import Stepline
from tests.integration.conftest import wait_for
from tests.integration.test_cli import stepline
from tests.integration.test_cli_check import events_recorded

STEPLINE = str(Path(sys.executable).parent / "stepline")
SLOW = "name: Slow\nexecutor: shell\nsteps:\n" + "  - run `sleep 1`\n" * 60
"""A minute of one-second steps: each step's end is a safe point to stop at."""
DEADLINE_S = 60.0
"""A bound on waits that normally end in a second or two, never a measurement."""


@pytest.fixture
def slow_run(fresh_database_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`stepline run` of the slow workflow with a JUnit report, its output in a file."""
    workflow = tmp_path / "slow.yaml"
    workflow.write_text(SLOW)
    with (tmp_path / "run.log").open("w") as output:
        process = subprocess.Popen(
            [STEPLINE, "run", str(workflow), "--junit", str(tmp_path / "report.xml")],
            env=clean_env(STEPLINE_DATABASE_URL=fresh_database_url),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    yield process
    process.kill()
    process.wait(timeout=DEADLINE_S)


def clean_env(**env: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    return {**kept, "COLUMNS": "200", **env}


def session_of(process: subprocess.Popen[str], tmp_path: Path) -> UUID:
    """The session the run announces, once it has."""
    found: list[str] = []

    def announced() -> bool:
        assert process.poll() is None, (tmp_path / "run.log").read_text()
        found[:] = re.findall(r"session ([0-9a-f-]{36})", (tmp_path / "run.log").read_text())
        return bool(found)

    wait_for(announced, DEADLINE_S, "the run to announce its session")
    return UUID(found[0])


def wait_until_a_step_completed(app: Stepline, session_id: UUID) -> None:
    def completed_one() -> bool:
        return any(isinstance(e, W.StepCompleted) for e in app.history(session_id))

    wait_for(completed_one, DEADLINE_S, "the run's first step to complete")


def suite_of(report: Path) -> TestSuite:
    xml = JUnitXml.fromfile(str(report))
    assert isinstance(xml, JUnitXml)
    (suite,) = list(xml)
    return suite


def lease_of(database_url: str, session_id: UUID) -> tuple[str | None, int | None]:
    """(owner, settled version) of the session's lease: (None, None) once handed back to be
    driven on."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT owner, settled_version FROM session_leases WHERE session_id = %s",
            (session_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_run_whose_session_is_cancelled_meanwhile_exits_1_failing_the_step_it_stopped_at(
    slow_run: subprocess.Popen[str], fresh_app: Stepline, tmp_path: Path
) -> None:
    session_id = session_of(slow_run, tmp_path)
    wait_until_a_step_completed(fresh_app, session_id)

    fresh_app.cancel(session_id, "enough", actor="test")

    assert slow_run.wait(timeout=DEADLINE_S) == 1
    session = fresh_app.get_session(session_id)
    assert session.status is SessionStatus.CANCELLED
    suite = suite_of(tmp_path / "report.xml")
    failed = [case for case in suite if any(isinstance(r, Failure) for r in case.result)]
    assert len(failed) == 1
    assert (failed[0].result[0].type, failed[0].result[0].message) == (
        "CANCELLED",
        "cancelled by test: enough",
    )
    done = sum(1 for step in session.steps if step.status.value == "completed")
    assert (suite.failures, suite.errors, suite.skipped) == (1, 0, len(session.steps) - done - 1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_exits_3_handing_its_session_back_unfinished(
    slow_run: subprocess.Popen[str],
    fresh_app: Stepline,
    fresh_database_url: str,
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    session_id = session_of(slow_run, tmp_path)
    wait_until_a_step_completed(fresh_app, session_id)

    slow_run.send_signal(signum)

    assert slow_run.wait(timeout=DEADLINE_S) == 3, (tmp_path / "run.log").read_text()
    assert fresh_app.get_session(session_id).status is SessionStatus.RUNNING
    assert lease_of(fresh_database_url, session_id) == (None, None)  # for a worker to go on
    assert "interrupted: the session was handed back running" in (tmp_path / "run.log").read_text()
    suite = suite_of(tmp_path / "report.xml")
    unfinished = [case for case in suite if any(isinstance(r, Error) for r in case.result)]
    assert [case.result[0].type for case in unfinished] == ["INTERRUPTED"]
    assert (suite.failures, suite.errors) == (0, 1)


def test_run_of_an_invalid_file_exits_2_before_it_needs_a_database(tmp_path: Path) -> None:
    workflow = tmp_path / "smoke.yaml"
    workflow.write_text('name: Smoke\nsteps:\n  - GET /\n  - expect body contains "a: b"\n')

    result = stepline(
        "run", str(workflow), STEPLINE_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"
    )

    assert result.returncode == 2
    assert f'VALIDATION_FAILED: {workflow}:4:5: step 1 holds ": "' in result.stderr
    assert "DATABASE_UNAVAILABLE" not in result.stderr


def test_run_with_a_report_it_could_not_write_exits_2_running_nothing(
    fresh_database_url: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "echo.yaml"
    workflow.write_text("name: Echo\nexecutor: shell\nsteps:\n  - run `echo hi`\n")
    report = tmp_path / "no-such-folder" / "report.xml"

    result = stepline(
        "run", str(workflow), "--junit", str(report), STEPLINE_DATABASE_URL=fresh_database_url
    )

    assert result.returncode == 2
    assert f"cannot write the JUnit report to {report}" in result.stderr
    assert events_recorded(fresh_database_url) == 0
    assert not report.parent.exists()
