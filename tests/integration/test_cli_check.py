"""`stepline run` refuses a workflow that could not run through (exit 2, no session, nothing
sent), and `stepline run --check` reports what would stop it without creating a session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import EXAMPLES, PASSWORD
from tests.integration.test_cli import stepline
from tests.redteam.test_egress import Receiver, receiving

UNREADY = """\
name: Not ready
steps:
  - GET /login
  - 'POST /login with {"user": "demo", "password": "{{secrets.NOT_STORED}}"}'
  - GET /todos/{{vars.todo_id}}
  - save json id as todo_id
  - GET /people/{{inputs.who}}
"""


def events_recorded(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM stepline_events").fetchone()
    assert row is not None
    return int(row[0])


def check(database_url: str, workflow: Path, *extra: str, **env: str) -> dict[str, Any]:
    result = stepline(
        "run", "--check", str(workflow), "--json", *extra, STEPLINE_DATABASE_URL=database_url, **env
    )
    report: dict[str, Any] = json.loads(result.stdout)
    report["exit_code"] = result.returncode
    return report


def test_run_with_a_secret_not_stored_exits_2_creating_nothing_and_sending_nothing(
    fresh_database_url: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "unready.yaml"
    workflow.write_text(UNREADY.replace("  - GET /people/{{inputs.who}}\n", ""))
    receiver: Receiver
    with receiving() as receiver:
        url = f"http://127.0.0.1:{receiver.port}"
        result = stepline(
            "run", str(workflow), "--base-url", url, STEPLINE_DATABASE_URL=fresh_database_url
        )

    assert result.returncode == 2, result.stderr
    assert "SECRET_MISSING" in result.stderr
    assert "{{secrets.NOT_STORED}} (step 1)" in result.stderr
    assert "stepline secrets set NAME --tenant T" in result.stderr
    assert receiver.requests == []
    assert events_recorded(fresh_database_url) == 0


def test_run_with_a_definitions_module_that_does_not_load_exits_2_creating_nothing(
    fresh_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "my_steps.py").write_text("raise RuntimeError('half written')\n")
    workflow = tmp_path / "broken.yaml"
    workflow.write_text("name: Broken\ndefinitions: my_steps.py\nsteps:\n  - GET /login\n")

    result = stepline("run", str(workflow), STEPLINE_DATABASE_URL=fresh_database_url)

    assert result.returncode == 2, result.stderr
    assert "VALIDATION_FAILED" in result.stderr
    assert "RuntimeError: half written" in result.stderr
    assert events_recorded(fresh_database_url) == 0


def test_check_reports_each_steps_problems_and_creates_no_session(
    fresh_database_url: str, tmp_path: Path, target: str
) -> None:
    workflow = tmp_path / "unready.yaml"
    workflow.write_text(UNREADY)

    report = check(fresh_database_url, workflow, "--base-url", target)

    assert report["exit_code"] == 2
    assert not report["ok"]
    problems = [step["problems"] for step in report["steps"]]
    assert problems[0] == []
    assert problems[1] == ["{{secrets.NOT_STORED}} is not stored for tenant default"]
    assert problems[2] == ["{{vars.todo_id}} is used before step 3 saves it"]
    assert problems[3] == []
    assert problems[4] == ["{{inputs.who}}: no value to write in (see the workflow's problems)"]
    assert report["problems"][0].startswith("INPUT_INVALID: step 5 uses {{inputs.who}}")
    assert report["steps"][0]["runs_as"] == "http.request GET /login"
    assert report["base_url"]["answered"]
    assert events_recorded(fresh_database_url) == 0


def test_check_says_when_the_base_url_does_not_answer_or_no_ai_decides(
    fresh_database_url: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "nowhere.yaml"
    workflow.write_text(
        "name: Nowhere\nbase_url: http://127.0.0.1:9\nsteps:\n  - Sign in as the demo user\n"
    )

    report = check(fresh_database_url, workflow)

    assert report["exit_code"] == 2
    assert not report["base_url"]["answered"]
    assert report["base_url"]["said"].startswith("HTTP_REQUEST_FAILED")
    assert report["steps"][0]["runs_as"] == "the AI decides (none is set)"
    assert report["steps"][0]["problems"] == [
        "no definition matches and no AI provider is set (STEPLINE_AI_MODEL)"
    ]


def test_check_of_a_workflow_ready_to_run_exits_0(
    fresh_database_url: str, target: str, tmp_path: Path
) -> None:
    report = check(
        fresh_database_url,
        EXAMPLES / "todo.yaml",
        "--base-url",
        target,
        STEPLINE_SECRET_DEMO_PASSWORD=PASSWORD,
    )

    assert report["exit_code"] == 0, report
    assert report["ok"]
    assert report["base_url"] == {"url": target, "answered": True, "said": "answered 404"}
    assert events_recorded(fresh_database_url) == 0


def test_check_of_a_step_yaml_reads_as_a_mapping_names_it_and_how_to_quote_it(
    tmp_path: Path,
) -> None:
    workflow = tmp_path / "saved.yaml"
    workflow.write_text(
        "name: Saved\nexecutor: browser\nsteps:\n  - open /app\n"
        '  - expect page contains "Saved: Ada"\n'
    )

    # No database answers: the file is read first, and refused before one is needed.
    result = stepline(
        "run", "--check", str(workflow), STEPLINE_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x"
    )

    said = " ".join(result.stderr.split())  # as printed, folded to the terminal's width
    assert result.returncode == 2
    assert (
        f'{workflow}:5:5: step 1 holds ": " so YAML reads it as a mapping; quote it: '
        "- 'expect page contains \"Saved: Ada\"'"
    ) in said
    assert "Extra inputs" not in said
