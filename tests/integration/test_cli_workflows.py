"""`stepline workflows` on the database, and `stepline run NAME[@N]`, run as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests.conftest import allow_local_targets
from tests.integration.test_cli_schedules import stepline

V1 = """\
name: record effect
inputs:
  effect: {type: string, description: what to record}
steps:
  - 'POST /effects with {"name": "v1 {{inputs.effect}}"}'
  - expect status 201
"""
V2 = V1.replace('"v1 ', '"v2 ')


@pytest.fixture
def database(fresh_database_url: str) -> str:
    app = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
    allow_local_targets(app)  # acme may reach the target on loopback
    app.close()
    return fresh_database_url


def test_pushes_make_versions_shown_diffed_and_rolled_back(database: str, tmp_path: Path) -> None:
    workflow = tmp_path / "effect.yaml"
    workflow.write_text(V1)
    acme = ("--tenant", "acme")

    first = stepline(database, "workflows", "push", str(workflow), *acme)
    again = stepline(database, "workflows", "push", str(workflow), *acme)
    workflow.write_text(V2)
    second = stepline(database, "workflows", "push", str(workflow), *acme, "--json")
    listed = stepline(database, "workflows", "list", *acme, "--json")
    shown = stepline(database, "workflows", "show", "record effect", *acme)
    one = stepline(database, "workflows", "show", "record effect@1", *acme)
    diff = stepline(database, "workflows", "diff", "record effect", "1", "2", *acme)
    rolled = stepline(database, "workflows", "rollback", "record effect", "--to", "1", *acme,
                      "--json")  # fmt: skip
    missing = stepline(database, "workflows", "show", "record effect@3", *acme)
    elsewhere = stepline(database, "workflows", "list", "--tenant", "globex", "--json")

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("pushed record effect@1 (sha256 ")
    assert again.stdout.startswith("unchanged: the current version is record effect@1")
    assert json.loads(second.stdout)["version"] == 2, second.stderr
    [summary] = json.loads(listed.stdout)
    assert (summary["current_version"], summary["version_count"]) == (2, 2)
    assert "version 2 is current" in shown.stdout
    assert one.stdout.startswith("# record effect@1 (sha256 ")
    assert one.stdout.splitlines()[1:] == [
        "name: record effect",
        "inputs:",
        "  effect:",
        "    type: string",
        "    description: what to record",
        "steps:",
        """- 'POST /effects with {"name": "v1 {{inputs.effect}}"}'""",
        "- expect status 201",
    ]
    assert diff.stdout.splitlines()[:2] == ["--- record effect@1", "+++ record effect@2"]
    assert """-- 'POST /effects with {"name": "v1 {{inputs.effect}}"}'""" in diff.stdout
    assert """+- 'POST /effects with {"name": "v2 {{inputs.effect}}"}'""" in diff.stdout
    assert json.loads(rolled.stdout)["current_version"] == 1, rolled.stderr
    assert missing.returncode == 2
    assert "WORKFLOW_NOT_FOUND" in missing.stderr
    assert "has no version 3 (it has 1 to 2)" in missing.stderr
    assert elsewhere.stdout == "[]\n"


def test_a_file_with_a_definitions_module_is_refused_at_push_naming_its_line(
    database: str, tmp_path: Path
) -> None:
    workflow = tmp_path / "steps.yaml"
    workflow.write_text("name: own steps\ndefinitions: my_steps.py\nsteps:\n  - sign in\n")

    refused = stepline(database, "workflows", "push", str(workflow))

    assert refused.returncode == 2
    assert f"{workflow}:2:" in refused.stderr
    assert "runs with the built-in step definitions" in refused.stderr


def test_run_runs_a_registered_version_with_its_inputs(
    database: str, tmp_path: Path, target: str
) -> None:
    workflow = tmp_path / "effect.yaml"
    base = ("--tenant", "acme")
    for text in (V1, V2):
        workflow.write_text(f"base_url: {target}\n{text}")
        assert stepline(database, "workflows", "push", str(workflow), *base).returncode == 0

    ran = stepline(database, "run", "record effect@1", "--input", "effect=ada", *base, "--json")
    unfit = stepline(database, "run", "record effect@1", *base)
    unknown = stepline(database, "run", "record effect@7", *base)
    no_file = stepline(database, "run", "effect.yaml", *base)

    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["status"] == "completed"
    history = stepline(database, "history", report["session_id"], *base, "--json")
    assert json.loads(history.stdout)[0]["data"]["config"]["workflow"]["version"] == 1
    applied = httpx.get(f"{target}/effects").json()["applied"]
    assert [effect["name"] for effect in applied] == ["v1 ada"]
    assert unfit.returncode == 2
    assert "INPUT_INVALID: input effect is required" in unfit.stderr
    assert unknown.returncode == 2
    assert "WORKFLOW_NOT_FOUND" in unknown.stderr
    assert "there is no file record effect@7, and workflow 'record effect' has no" in (
        unknown.stderr.replace("\n", " ")
    )
    assert no_file.returncode == 2
    assert "effect.yaml" in no_file.stderr
    assert "WORKFLOW_NOT_FOUND" not in no_file.stderr
