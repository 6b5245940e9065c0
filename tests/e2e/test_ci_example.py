"""examples/ci/github-actions.yml runs as written: its `run:` steps, in order, as the runner
runs them (`bash -eo pipefail`), in a fresh clone, with the job's environment, and the test's
PostgreSQL where the job has its service container. Its install step is left out (the venv's
`stepline` stands for what it installs); the actions it `uses:` are GitHub's to run, but the
report the publishing action is pointed at must be there, and read as JUnit."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import JUnitXml

from tests.e2e.test_readme import ROOT, VENV_BIN, assert_free, fresh_clone

EXAMPLE = ROOT / "examples" / "ci" / "github-actions.yml"
TARGET_PORT = 8765  # the port examples/todo.yaml's base_url names
STEP_TIMEOUT_S = 300


def the_job() -> dict[str, Any]:
    workflow = yaml.safe_load(EXAMPLE.read_text())
    (job,) = workflow["jobs"].values()
    assert isinstance(job, dict)
    return job


def installs(step: dict[str, Any]) -> bool:
    return "pip install" in step.get("run", "")


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """The process groups the steps ran in: what a step left running (the app under test)
    is ended with them, as the runner ends a job's processes."""
    started: list[int] = []
    yield started
    for group in started:
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)


def test_the_job_has_a_postgres_service_its_stepline_uses() -> None:
    job = the_job()

    postgres = job["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "5432:5432" in postgres["ports"]
    assert "--health-cmd" in postgres["options"]
    assert job["env"]["STEPLINE_DATABASE_URL"].startswith("postgresql://postgres:postgres@")
    assert [s for s in job["steps"] if installs(s)], "the job must install Stepline"


def test_the_jobs_steps_run_and_leave_the_report_it_publishes(
    fresh_database_url: str, tmp_path: Path, groups: list[int]
) -> None:
    job = the_job()
    fresh_clone(tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "DEMO_"))}
    env = {
        **clean,
        **job["env"],
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "STEPLINE_DATABASE_URL": fresh_database_url,  # where the service container would be
        "STEPLINE_DATA_DIR": str(tmp_path / ".stepline"),
    }
    assert_free(TARGET_PORT)

    for step in (s for s in job["steps"] if "run" in s and not installs(s)):
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        groups.append(process.pid)
        output, _ = process.communicate(timeout=STEP_TIMEOUT_S)
        name = step["name"]
        assert process.returncode == 0, f"{name!r} exited {process.returncode}:\n{output}"

    (publish,) = [s for s in job["steps"] if "junit-report" in s.get("uses", "")]
    reports = glob.glob(publish["with"]["report_paths"], root_dir=tmp_path)
    assert reports == ["reports/todo.xml"]
    (suite,) = list(JUnitXml.fromfile(str(tmp_path / reports[0])))
    assert (suite.name, suite.tests, suite.failures, suite.errors) == (
        "Todo app smoke test",
        11,
        0,
        0,
    )
