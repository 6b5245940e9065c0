"""The `stepline` command line, run as a person runs it: a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from psycopg_pool import ConnectionPool

from domain.dev_mode import DEV_TENANT
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.policies import Policies
from tests.conftest import EXAMPLES, MASTER_KEY, PASSWORD, TEST_POLICY
from tests.integration.conftest import kept_states
from tests.scripted_model import ScriptedModel

STEPLINE = str(Path(sys.executable).parent / "stepline")


def stepline(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    return subprocess.run(
        [STEPLINE, *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200", **env},
        timeout=120,
        check=False,
    )


def history_of(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)
    return events


def test_demo_runs_the_example_workflow_and_prints_its_history(database_url: str) -> None:
    events = history_of(stepline("demo", "--json", STEPLINE_DATABASE_URL=database_url))

    types = [e["type"] for e in events]
    assert types[0] == "Created"
    assert types[-1] == "Completed"
    assert types.count("StepCompleted") == 11
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["data"]["name"] == "Todo app smoke test"
    assert "correct-horse" not in json.dumps(events)


@pytest.mark.embedded
def test_demo_runs_on_the_embedded_server_with_nothing_configured(tmp_path: Path) -> None:
    result = stepline("demo", STEPLINE_DATABASE_URL="", STEPLINE_DATA_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "event store: embedded PostgreSQL" in result.stderr
    assert "completed: all 11 steps completed" in result.stderr
    assert "progress view: completed, 11/11 steps (100%)" in result.stderr
    assert "StepCompleted" in result.stdout
    assert not (tmp_path / "pg" / "postmaster.pid").exists()


def test_history_prints_a_stored_session(database_url: str) -> None:
    demo = stepline("demo", STEPLINE_DATABASE_URL=database_url)
    session_id = demo.stdout.split("Session ", 1)[1].split()[0]

    events = history_of(
        stepline("history", session_id, "--json", STEPLINE_DATABASE_URL=database_url)
    )

    types = [e["type"] for e in events]
    assert (types[0], types[-1]) == ("Created", "Completed")
    # 11 steps started and completed, 6 requests issued and finished, 6 checks in one event each
    assert (types.count("CommandIssued"), types.count("Checked")) == (6, 6)
    assert len(events) == 1 + 22 + 12 + 6 + 1


def test_run_exits_0_with_the_final_session_as_json(database_url: str, target: str) -> None:
    result = stepline(
        "run",
        str(EXAMPLES / "todo.yaml"),
        "--base-url",
        target,
        "--json",
        STEPLINE_DATABASE_URL=database_url,
        STEPLINE_SECRET_DEMO_PASSWORD=PASSWORD,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "completed"
    assert [s["status"] for s in report["steps"]] == ["completed"] * 11
    assert report["steps"][0]["summary"] == "GET /login: ok"


def test_run_files_its_session_under_the_dev_mode_tenant_or_the_one_given(
    database_url: str, tmp_path: Path, app: Stepline
) -> None:
    workflow, url = tmp_path / "echo.yaml", database_url
    workflow.write_text("name: Echo\nexecutor: shell\nsteps:\n  - run `echo hi`\n")
    Policies(app, Settings(database_url=url)).set("acme", TEST_POLICY, actor="operator")
    tenants = []
    for extra in ([], ["--tenant", "acme"]):
        result = stepline("run", str(workflow), "--json", *extra, STEPLINE_DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        tenants.append(app.get_session(UUID(json.loads(result.stdout)["session_id"])).tenant)
    refused = stepline("run", str(workflow), "--tenant", " ", STEPLINE_DATABASE_URL=database_url)

    assert tenants == [DEV_TENANT, "acme"]  # a dev-mode `stepline serve` shows the first
    assert refused.returncode == 2
    assert "the tenant must not be empty" in refused.stderr


def test_run_exits_1_when_the_session_fails(database_url: str, target: str) -> None:
    result = stepline(
        "run",
        str(EXAMPLES / "todo.yaml"),
        "--base-url",
        target,
        "--json",
        STEPLINE_DATABASE_URL=database_url,
        STEPLINE_SECRET_DEMO_PASSWORD="wrong-password",
    )

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "failed"
    assert report["steps"][3]["error"]["message"] == "expected status 200, got 401"


def test_run_says_a_failure_and_what_to_do_about_it_once(
    database_url: str, target: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "typo.yaml"
    workflow.write_text("name: Typo\nsteps:\n  - GTE /login\n")

    result = stepline(
        "run", str(workflow), "--base-url", target, STEPLINE_DATABASE_URL=database_url
    )

    said = result.stdout + result.stderr
    assert result.returncode == 1
    assert said.count("no step definition matches 'GTE /login'") == 1, said
    assert 'did you mean "GET /login"?' in said
    assert 'Write it as "GET /login"' in said


def test_run_takes_natural_language_steps_to_the_configured_model(
    database_url: str, target: str, model: ScriptedModel, tmp_path: Path
) -> None:
    workflow = tmp_path / "nl.yaml"
    workflow.write_text(
        "name: Natural language\nsteps:\n"
        "  - text: Open the sign-in page\n    expect: the page says Sign in\n"
    )
    model.calls("http_request", method="GET", url="/login")
    model.calls("complete_step", summary="the sign-in page is up", expect_met=True)

    result = stepline(
        "run",
        str(workflow),
        "--base-url",
        target,
        "--json",
        STEPLINE_DATABASE_URL=database_url,
        STEPLINE_AI_MODEL="scripted-model",
        STEPLINE_AI_BASE_URL=model.base_url,
        STEPLINE_AI_API_KEY="test-key",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"][0]["summary"] == "the sign-in page is up"
    assert model.requests[0]["model"] == "scripted-model"


def test_replay_runs_a_recorded_ai_session_offline_and_fork_changes_a_step(
    database_url: str, target: str, model: ScriptedModel, tmp_path: Path
) -> None:
    workflow = tmp_path / "nl.yaml"
    workflow.write_text(
        "name: Natural language\nsteps:\n  - Open the sign-in page\n"
        "  - {text: GET /todos, expect: expect status 401}\n"  # not signed in
    )
    model.calls("http_request", method="GET", url="/login")
    model.calls("complete_step", summary="the sign-in page is up")
    env = {
        "STEPLINE_DATABASE_URL": database_url,
        "STEPLINE_AI_MODEL": "scripted-model",
        "STEPLINE_AI_BASE_URL": model.base_url,
        "STEPLINE_AI_API_KEY": "test-key",
    }
    recorded = stepline("run", str(workflow), "--base-url", target, "--json", **env)
    source = json.loads(recorded.stdout)["session_id"]
    asked = len(model.requests)

    replayed = stepline("replay", source, "--strict", **env)
    as_json = stepline("replay", source, "--json", **env)
    workflow.write_text(
        "name: Natural language\nsteps:\n  - Open the sign-in page\n  - GET /login\n"
    )
    forked = stepline("fork", source, "--from-step", "1", "--workflow", str(workflow), **env)
    too_far = stepline("fork", source, "--from-step", "5", **env)
    elsewhere = stepline("replay", source, "--tenant", "globex", **env)

    assert replayed.returncode == 0, replayed.stderr
    assert "2 steps replayed without the model (2 model turns saved), 0 tokens used" in (
        replayed.stderr
    )
    assert json.loads(as_json.stdout)["status"] == "completed"
    assert len(model.requests) == asked  # neither replay asked the model
    assert forked.returncode == 0, forked.stderr
    assert too_far.returncode == 2
    assert "from_step must be a step of the source, 0 to 1" in too_far.stderr
    assert elsewhere.returncode == 2
    assert "SESSION_NOT_FOUND" in elsewhere.stderr


def test_fork_says_plainly_when_the_sources_cookies_are_gone(
    database_url: str, target: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "signed-in.yaml"
    workflow.write_text(
        "name: Signed in\nsteps:\n"
        """  - 'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}'\n"""
        "  - GET /todos\n  - expect status 200\n"
    )
    env = {
        "STEPLINE_DATABASE_URL": database_url,
        "STEPLINE_DATA_DIR": str(tmp_path),
        "STEPLINE_SECRET_DEMO_PASSWORD": PASSWORD,
        "STEPLINE_FORK_STATE_TTL_S": "0",  # forgotten once it has ended
    }
    ran = stepline("run", str(workflow), "--base-url", target, "--json", **env)
    assert ran.returncode == 0, ran.stderr
    with ConnectionPool(database_url, min_size=1, kwargs={"autocommit": True}) as pool:
        kept_states(pool).forget_ended()  # what the sweep of a running worker does

    forked = stepline("fork", json.loads(ran.stdout)["session_id"], "--from-step", "1", **env)

    assert "the source's http cookies are gone" in forked.stderr
    assert forked.returncode == 1  # signed out, GET /todos answered 401


def test_an_unknown_session_is_a_clear_error(database_url: str) -> None:
    result = stepline(
        "history", "00000000-0000-4000-8000-000000000000", STEPLINE_DATABASE_URL=database_url
    )
    assert result.returncode == 2
    assert "SESSION_NOT_FOUND" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_timeouts_stop_start_up_naming_the_values(database_url: str) -> None:
    result = stepline(
        "demo",
        STEPLINE_DATABASE_URL=database_url,
        STEPLINE_STEP_TIMEOUT_MS="5000",
        STEPLINE_REQUEST_TIMEOUT_MS="30000",
    )
    assert result.returncode == 2
    assert "CONFIGURATION_INVALID" in result.stderr
    assert "STEPLINE_STEP_TIMEOUT_MS=5000" in result.stderr
    assert "STEPLINE_REQUEST_TIMEOUT_MS=30000" in result.stderr


def test_a_bad_workflow_file_is_refused_naming_the_field(database_url: str, tmp_path: Path) -> None:
    workflow = tmp_path / "bad.yaml"
    workflow.write_text("name: Broken\nsteps: []\n")
    result = stepline("demo", "--workflow", str(workflow), STEPLINE_DATABASE_URL=database_url)
    assert result.returncode == 2
    assert "VALIDATION_FAILED" in result.stderr
    assert "steps" in result.stderr
    assert "bad.yaml" in result.stderr


def test_an_unreachable_database_is_a_clear_error() -> None:
    result = stepline("demo", STEPLINE_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "DATABASE_UNAVAILABLE" in result.stderr
    assert "Traceback" not in result.stderr


def test_projections_can_be_rebuilt_and_their_lag_read(database_url: str) -> None:
    stepline("demo", STEPLINE_DATABASE_URL=database_url)

    # The shared database holds sessions sealed by the API tests' processes: only with the
    # master key they were sealed under can a rebuild open them.
    rebuilt = stepline(
        "projections",
        "rebuild",
        "audit_log",
        STEPLINE_DATABASE_URL=database_url,
        STEPLINE_MASTER_KEY=MASTER_KEY,
    )
    status = stepline("projections", "status", STEPLINE_DATABASE_URL=database_url)
    unknown = stepline("projections", "rebuild", "sessions", STEPLINE_DATABASE_URL=database_url)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt audit_log:" in rebuilt.stdout
    assert status.returncode == 0
    rows = [line.split("│") for line in status.stdout.splitlines() if "│" in line]
    lags = {cells[1].strip(): cells[4].strip() for cells in rows if len(cells) > 4}
    assert set(lags) == {
        "session_progress",
        "step_history",
        "session_index",
        "audit_log",
        "batch_index",
        "ai_usage",
        "schedule_index",
        "webhook_outbox",
        "workflow_registry",
        "workflow_analytics",
        "learned_actions",
    }
    assert lags["audit_log"] == "0"
    assert unknown.returncode == 2
    assert "no view named ['sessions']" in unknown.stderr
