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
        f'{path}:4:5: step 1 holds ": " so YAML reads it as a mapping; quote it: '
        "- 'expect body contains \"Sign in: ok\"'"
    )
    assert error.suggested_action.startswith("Quote the step as the message shows")
    assert (error.details["line"], error.details["step"]) == (4, 1)


def test_a_step_starting_with_a_brace_is_shown_quoted(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /todos", "  - {{vars.todo_id}} is listed")

    error = refusal_of(path)

    assert error.message.startswith(f"{path}:4:5: step 1 starts with {{ so YAML reads it")
    assert error.message.endswith("quote it: - '{{vars.todo_id}} is listed'")
    assert "<unicode string>" not in error.message


def test_a_step_cut_by_a_comment_is_shown_quoted_whole(tmp_path: Path) -> None:
    path = workflow(tmp_path, '  - expect body contains "item #1"')

    error = refusal_of(path)

    assert error.message.startswith(f'{path}:3:5: step 0 holds " #" so YAML reads the rest')
    assert error.message.endswith("quote it: - 'expect body contains \"item #1\"'")


def test_a_step_read_as_a_mapping_is_named_by_number_not_as_missing_and_extra_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "saved.yaml"
    path.write_text(
        "name: Save a person\nexecutor: browser\nsteps:\n  - open /app\n"
        '  - fill "Name" with "Ada"\n  - click "Save"\n  - wait 1\n'
        '  - expect page contains "Saved: Ada"\n'
    )

    error = refusal_of(path)

    assert error.message == (
        f'{path}:8:5: step 4 holds ": " so YAML reads it as a mapping; quote it: '
        "- 'expect page contains \"Saved: Ada\"'"
    )
    assert error.details["quoted"] == "- 'expect page contains \"Saved: Ada\"'"
    assert "Field required" not in error.message
    assert "Extra inputs" not in error.message


def test_a_step_split_at_its_colon_with_an_expect_under_it_is_shown_as_text_and_expect(
    tmp_path: Path,
) -> None:
    path = workflow(
        tmp_path, "  - GET /people", '  - expect body contains "name: Ada"', "    expect: ok"
    )

    error = refusal_of(path)

    assert error.message == (
        f'{path}:4:5: step 1 holds ": " so YAML reads it as a mapping; quote it: '
        "- text: 'expect body contains \"name: Ada\"'"
    )


def test_a_step_yaml_cannot_read_at_all_is_named_by_number(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /", "  - GET /a", "  - text: expect body contains a: b")

    error = refusal_of(path)

    assert error.message == (
        f'{path}:5:11: step 2 holds ": " so YAML reads it as a mapping; quote it: '
        "- text: 'expect body contains a: b'"
    )
    assert error.details["step"] == 2


def test_a_wrong_field_in_a_step_names_the_step_by_number_and_text(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /", "  - text: GET /todos", "    expects: status 200")

    error = refusal_of(path)

    assert error.message == (
        f"{path}:5:14: step 1 (GET /todos): expects: Extra inputs are not permitted"
    )
    assert error.details["step"] == 1
    assert error.suggested_action.startswith("Remove or rename expects (did you mean expect?")


def test_a_misspelt_text_field_is_advised_as_a_misspelling_not_a_missing_field(
    tmp_path: Path,
) -> None:
    path = workflow(tmp_path, "  - txt: GET /todos", "    expect: expect status 200")

    error = refusal_of(path)

    assert error.message == f"{path}:3:10: step 0: txt: Extra inputs are not permitted"
    assert error.suggested_action.startswith("Remove or rename txt (did you mean text?")


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("  -", "step 1 is empty: a step is text, or text: with expect: under it"),
        ("  - 404", "step 1 (404) is read by YAML as the number 404, not as text: quote it"),
        ("  - yes", "step 1 (yes) is read by YAML as true, not as text: quote it"),
    ],
    ids=["empty", "number", "boolean"],
)
def test_a_step_that_is_not_text_says_what_yaml_read(tmp_path: Path, line: str, said: str) -> None:
    path = workflow(tmp_path, "  - GET /", line)

    error = refusal_of(path)

    assert error.message.endswith(f": {said}")
    assert "StepEntry" not in error.message
    assert error.suggested_action == "Write step 1 as text, or as text: with expect: under it"


def test_a_comment_after_a_whole_step_is_only_a_comment(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /todos  # every todo", '  - expect body contains "a"  # ok')

    assert [step.text for step in load_workflow(path).steps] == [
        "GET /todos",
        'expect body contains "a"',
    ]


def test_bad_yaml_names_the_file_line_column_and_step(tmp_path: Path) -> None:
    path = workflow(tmp_path, "  - GET /", "\t- GET /todos")

    error = refusal_of(path)

    assert error.message.startswith(f"{path}:4:1: not valid YAML in step 1: found character '\\t'")
    assert "<unicode string>" not in error.message
    assert (error.details["line"], error.details["column"], error.details["step"]) == (4, 1, 1)


def test_bad_yaml_outside_the_steps_names_no_step(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text("name: Smoke\nlabels: {suite: smoke\nsteps:\n  - GET /\n")

    error = refusal_of(path)

    assert error.message.startswith(f"{path}:3:6: not valid YAML: ")
    assert "step" not in error.details


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

    assert error.suggested_action == "Set executor to one of 'http', 'shell', 'browser' or 'mcp'"
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
