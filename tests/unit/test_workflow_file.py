"""Workflow files: what their errors say about where the problem is and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.errors import InvalidWorkflow, StandardError, kind_of
from domain.limits import LIMITS, Limit
from engine.workflows.file import WorkflowConfig, load_workflow


def refusal_of(path: Path) -> StandardError:
    with pytest.raises(InvalidWorkflow) as raised:
        load_workflow(path)
    return raised.value.to_standard_error()


def workflow(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "smoke.yaml"
    path.write_text("\n".join(["name: Smoke", "steps:", *lines]) + "\n")
    return path


def test_a_step_holding_a_colon_is_shown_quoted_with_its_line(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /login", '  - expect body contains "Sign in: ok"')

    error = refusal_of(path)

    assert error.message == (
        f'{path}:4:5: this step holds ": " so YAML reads it as a mapping; quote it: '
        "- 'expect body contains \"Sign in: ok\"'"
    )
    assert error.suggested_action.startswith("Quote the step as the message shows")
    assert error.details["line"] == 4


def test_a_step_starting_with_a_brace_is_shown_quoted(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /todos", "  - {{vars.todo_id}} is listed")

    error = refusal_of(path)

    assert error.message.startswith(f"{path}:4:5: this step starts with {{ so YAML reads it")
    assert error.message.endswith("quote it: - '{{vars.todo_id}} is listed'")
    assert "<unicode string>" not in error.message


def test_a_step_cut_by_a_comment_is_shown_quoted_whole(tmp_path: Path) -> None:
    path = workflow(tmp_path, '  - expect body contains "item #1"')

    error = refusal_of(path)

    assert error.message.startswith(f'{path}:3:5: this step holds " #" so YAML reads the rest')
    assert error.message.endswith("quote it: - 'expect body contains \"item #1\"'")


def test_a_comment_after_a_whole_step_is_only_a_comment(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /todos  # every todo", '  - expect body contains "a"  # ok')

    assert [step.text for step in load_workflow(path).steps] == [
        "GET /todos",
        'expect body contains "a"',
    ]


def test_bad_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /", "\t- GET /todos")

    error = refusal_of(path)

    assert error.message.startswith(f"{path}:4:1: not valid YAML: found character '\\t'")
    assert "<unicode string>" not in error.message
    assert (error.details["line"], error.details["column"]) == (4, 1)


def test_a_missing_file_says_where_the_path_was_looked_for(tmp_path: Path) -> None:
    error = refusal_of(tmp_path / "nowhere.yaml")

    assert error.message.startswith(f"cannot read {tmp_path / 'nowhere.yaml'}")
    assert error.suggested_action == f"Check the path: relative paths start from {Path.cwd()}"


def test_a_misspelt_field_is_named_at_its_line_with_the_fields_there_are(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text("name: Smoke\nbase-url: http://127.0.0.1\nsteps:\n  - GET /\n")

    error = refusal_of(path)

    assert error.message == f"{path}:2:11: base-url: Extra inputs are not permitted"
    assert error.suggested_action.startswith("Remove or rename base-url (did you mean base_url?")


def test_a_field_with_allowed_values_says_them(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text("name: Smoke\nexecutor: curl\nsteps:\n  - GET /\n")

    error = refusal_of(path)

    assert error.suggested_action == "Set executor to one of 'http', 'shell' or 'browser'"
    assert error.suggested_action != kind_of("VALIDATION_FAILED").suggested_action


@pytest.mark.parametrize("limit", LIMITS.values(), ids=list(LIMITS))
def test_a_workflows_config_sets_each_limit_within_its_declared_bound(limit: Limit) -> None:
    assert WorkflowConfig.model_validate({limit.name: limit.ge}).model_dump(exclude_none=True) == {
        limit.name: limit.ge
    }
    with pytest.raises(ValidationError, match=f"greater than or equal to {limit.ge}"):
        WorkflowConfig.model_validate({limit.name: limit.ge - 1})


def test_a_workflows_config_has_every_declared_limit_unset_by_default() -> None:
    limits = {name for name in WorkflowConfig.model_fields if name in LIMITS}
    assert limits == set(LIMITS)
    assert WorkflowConfig().model_dump(exclude_none=True) == {}
