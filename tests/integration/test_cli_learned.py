"""`stepline learned list|show|forget` and `stepline run --no-learn`, on the database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import stepline
from tests.scripted_model import ScriptedModel

WORKFLOW = "name: Learning\nsteps:\n  - Open the sign-in page\n"


def script(model: ScriptedModel) -> None:
    model.calls("http_request", method="GET", url="/login")
    model.calls("complete_step", summary="the sign-in page is up")


def test_a_second_run_uses_what_the_first_learned_until_it_is_forgotten(
    fresh_database_url: str, target: str, model: ScriptedModel, tmp_path: Path
) -> None:
    workflow = tmp_path / "learning.yaml"
    workflow.write_text(WORKFLOW)
    env = {
        "STEPLINE_DATABASE_URL": fresh_database_url,
        "STEPLINE_AI_MODEL": "scripted-model",
        "STEPLINE_AI_BASE_URL": model.base_url,
        "STEPLINE_AI_API_KEY": "test-key",
    }
    script(model)
    script(model)

    def run(*options: str) -> None:
        ran = stepline("run", str(workflow), "--base-url", target, *options, **env)
        assert ran.returncode == 0, ran.stdout + ran.stderr

    run()
    run()
    assert len(model.requests) == 2  # the second run asked nothing
    run("--no-learn")
    assert len(model.requests) == 4

    listed = stepline("learned", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    (learned,) = json.loads(listed.stdout)["items"]
    assert (learned["hits"], learned["step_text"]) == (1, "Open the sign-in page")
    prefix = learned["id"][:8]
    shown = stepline("learned", "show", prefix, **env)
    assert shown.returncode == 0, shown.stderr
    assert "http.request" in shown.stdout
    assert "/login" in shown.stdout

    forgotten = stepline("learned", "forget", prefix, **env)
    assert forgotten.returncode == 0, forgotten.stderr
    assert json.loads(stepline("learned", "list", "--json", **env).stdout)["items"] == []
    unknown = stepline("learned", "show", "ffff0000", **env)
    assert unknown.returncode != 0
    assert "LEARNED_ACTION_NOT_FOUND" in unknown.stdout + unknown.stderr
