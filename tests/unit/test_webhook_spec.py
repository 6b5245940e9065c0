"""A workflow file's `webhook`: recorded in the session's config, its events checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.errors import InvalidWorkflow
from engine.workflows.file import load_workflow

HOOK = "https://hooks.example.com/stepline"


def workflow(tmp_path: Path, *webhook: str) -> Path:
    path = tmp_path / "hooked.yaml"
    lines = ["name: hooked", "steps:", "  - GET /health", "webhook:", *webhook]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_workflow_files_webhook_is_recorded_with_the_default_events(tmp_path: Path) -> None:
    spec = load_workflow(workflow(tmp_path, f"  url: {HOOK}"))
    assert spec.session_config()["webhook"] == {
        "url": HOOK,
        "events": ["session.completed", "session.failed"],
    }


def test_a_webhook_may_ask_to_be_told_of_a_session_waiting(tmp_path: Path) -> None:
    spec = load_workflow(workflow(tmp_path, f"  url: {HOOK}", "  events: [session.waiting]"))
    assert spec.session_config()["webhook"]["events"] == ["session.waiting"]


def test_an_event_no_session_has_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidWorkflow) as refused:
        load_workflow(workflow(tmp_path, f"  url: {HOOK}", "  events: [session.exploded]"))
    assert "webhook.events" in refused.value.message


def test_a_workflow_without_a_webhook_records_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("name: plain\nsteps:\n  - GET /health\n")
    assert "webhook" not in load_workflow(path).session_config()


def test_a_url_whose_host_no_sender_could_encode_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    """Found by schemathesis: `http://R\U00014025` passed the pattern and crashed the egress
    check at creation (IDNA refuses the label) with a 500."""
    with pytest.raises(InvalidWorkflow) as refused:
        load_workflow(workflow(tmp_path, '  url: "http://R\\U00014025"'))
    assert "webhook.url" in refused.value.message
