"""`stepline run FILE --input NAME=VALUE`: the values checked against the file's `inputs` (exit
2 naming the input, nothing recorded), written into its steps, and reported by `--check`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.integration.test_cli import stepline
from tests.integration.test_cli_check import events_recorded

WORKFLOW = """\
name: Effect by input
inputs:
  effect: {type: string, description: what to record}
  copies: {type: integer, minimum: 1, default: 2}
steps:
  - 'POST /effects with {"name": "{{inputs.effect}} x{{inputs.copies}}"}'
  - expect status 201
"""


def test_run_writes_the_inputs_given_into_the_steps(
    fresh_database_url: str, tmp_path: Path, target: str
) -> None:
    workflow = tmp_path / "effect.yaml"
    workflow.write_text(WORKFLOW)

    result = stepline(
        "run", str(workflow), "--base-url", target, "--input", "effect=ada", "--input", "copies=3",
        "--json", STEPLINE_DATABASE_URL=fresh_database_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    applied = httpx.get(f"{target}/effects").json()["applied"]
    assert [effect["name"] for effect in applied] == ["ada x3"]


def test_run_refuses_a_missing_or_unfit_input_naming_it_and_records_nothing(
    fresh_database_url: str, tmp_path: Path, target: str
) -> None:
    workflow = tmp_path / "effect.yaml"
    workflow.write_text(WORKFLOW)
    base = ["run", str(workflow), "--base-url", target]

    missing = stepline(*base, STEPLINE_DATABASE_URL=fresh_database_url)
    unfit = stepline(*base, "--input", "effect=ada", "--input", "copies=0",
                     STEPLINE_DATABASE_URL=fresh_database_url)  # fmt: skip
    malformed = stepline(*base, "--input", "effect", STEPLINE_DATABASE_URL=fresh_database_url)

    assert missing.returncode == 2
    assert "INPUT_INVALID: input effect is required (string: what to record)" in missing.stderr
    assert unfit.returncode == 2
    assert "input copies: 0 is less than the minimum of 1" in unfit.stderr
    assert malformed.returncode == 2
    assert "--input 'effect': write NAME=VALUE" in malformed.stderr
    assert events_recorded(fresh_database_url) == 0
    assert httpx.get(f"{target}/effects").json()["applied"] == []


def test_check_reports_an_input_that_does_not_fit_with_the_steps_as_written(
    fresh_database_url: str, tmp_path: Path, target: str
) -> None:
    workflow = tmp_path / "effect.yaml"
    workflow.write_text(WORKFLOW)

    given = stepline("run", "--check", str(workflow), "--base-url", target, "--json",
                     "--input", "effect=ada", STEPLINE_DATABASE_URL=fresh_database_url)  # fmt: skip
    missing = stepline("run", "--check", str(workflow), "--base-url", target, "--json",
                       STEPLINE_DATABASE_URL=fresh_database_url)  # fmt: skip

    assert given.returncode == 0, given.stdout
    assert json.loads(given.stdout)["steps"][0]["text"] == 'POST /effects with {"name": "ada x2"}'
    assert missing.returncode == 2
    report = json.loads(missing.stdout)
    assert report["problems"] == [
        "INPUT_INVALID: input effect is required (string: what to record)"
    ]
    assert events_recorded(fresh_database_url) == 0
