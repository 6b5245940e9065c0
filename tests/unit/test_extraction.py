"""A step's `extract:`: the shorthand's schema, what a schema may not be, what data fits, and
how the step records it (so snapshots and older steps load as they were)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from domain.errors import InvalidStateTransition, InvalidWorkflow
from domain.extraction import MAX_SCHEMA_CHARS, Extraction, ExtractionRefused
from domain.session import StepSpec, StepState, WorkflowSession
from engine.loop.builtin_steps import builtin
from engine.workflows.file import load_workflow
from engine.workflows.plan import plan, unfillable


def test_the_shorthand_is_an_object_of_required_typed_fields() -> None:
    extraction = Extraction.written(
        {"title": "string", "tags": ["string"], "ids": "[integer]", "owner": {"name": "string"}}
    )

    assert extraction.schema == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "ids": {"type": "array", "items": {"type": "integer"}},
            "owner": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            },
        },
        "required": ["title", "tags", "ids", "owner"],
    }


def test_a_json_schema_is_taken_as_it_is() -> None:
    schema = {"type": "array", "items": {"type": "string"}, "maxItems": 3}

    assert Extraction.written(schema).schema == schema


def test_a_field_may_be_named_as_a_refused_keyword() -> None:
    extraction = Extraction.written({"pattern": "string", "$ref": "string"})

    assert extraction.problem({"pattern": "a+", "$ref": "x"}) is None


def test_selectors_read_rows_of_the_row_schema() -> None:
    extraction = Extraction.written(
        {"rows": "table tr", "fields": {"title": "td.title", "done": "td.done"}}
    )

    assert extraction.by_selectors
    assert extraction.schema["type"] == "array"
    assert extraction.schema["items"]["properties"] == {
        "title": {"type": "string"},
        "done": {"type": "string"},
    }


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"title": "text"}, "'text' is not a type"),
        ({"type": "strung"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"pattern": "(a+)+$"}}}, "pattern"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s"}}}, "$ref"),
        ({"type": "array", "items": {"properties": {"p": {"pattern": "(a+)+$"}}}}, "pattern"),
        ({"type": "string", "description": "x" * MAX_SCHEMA_CHARS}, "longer than"),
        ({"type": "string", "description": "nul \x00"}, "NUL"),
        ({"rows": "", "fields": {"a": "td"}}, "rows must be a CSS selector"),
        ({"rows": "tr", "fields": {}}, "fields must name"),
        ([], "must be a mapping"),
    ],
)
def test_a_schema_that_cannot_be_used_is_refused_with_the_reason(given: Any, said: str) -> None:
    with pytest.raises(ExtractionRefused, match=None) as refused:
        Extraction.written(given)

    assert said in str(refused.value)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"title": "milk"}, "'count' is a required property"),
        ({"title": "milk", "count": "2"}, "['count']: '2' is not of type 'integer'"),
        ({"title": "a\x00", "count": 1}, "NUL"),
    ],
)
def test_data_that_does_not_fit_is_explained(data: Any, said: str) -> None:
    extraction = Extraction.written({"title": "string", "count": "integer"})

    problem = extraction.problem(data)

    assert problem is not None
    assert said in problem


def test_a_step_records_its_extraction_only_when_it_has_one() -> None:
    plain = StepSpec("Read the todos")
    extracting = StepSpec(
        "Read the todos", extract=Extraction.written({"title": "string"}), save_as="todo"
    )

    assert "extract" not in plain.to_dict()
    assert "save_as" not in plain.to_dict()
    assert StepSpec.from_dict(extracting.to_dict()) == extracting
    assert StepState.of(extracting.to_dict()).spec() == extracting


def test_a_step_state_from_before_extraction_loads() -> None:
    before = {"text": "GET /", "expect": None, "summary": "ok", "evidence": []}

    step = StepState(**before)

    assert (step.extract, step.save_as, step.data) == (None, None, None)


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "extract.yaml"
    path.write_text("\n".join(["name: Extract", "steps:", *lines]) + "\n")
    return path


def test_a_workflow_file_gives_the_step_its_extraction(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - text: Read the first todo",
        "    extract: {title: string, done: boolean}",
        "    save_as: first",
    )

    step = load_workflow(path).step_specs()[0]

    assert step.save_as == "first"
    assert step.extract is not None
    assert step.extract.schema["required"] == ["title", "done"]


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        (["    extract: {title: text}"], "'text' is not a type"),
        (["    extract: {type: object, properties: {a: {pattern: '(a+)+$'}}}"], "pattern"),
        (["    extract: {title: string}", "    save_as: not a name"], "save_as"),
        (["    save_as: first"], "save_as but no extract"),
    ],
)
def test_a_workflow_file_with_an_unusable_extract_is_refused(
    tmp_path: Path, lines: list[str], said: str
) -> None:
    path = write(tmp_path, "  - text: Read the first todo", *lines)

    with pytest.raises(InvalidWorkflow) as refused:
        load_workflow(path).step_specs()

    assert said in str(refused.value)


@pytest.mark.parametrize(
    ("step", "said"),
    [
        (StepSpec("Read", save_as="first"), "save_as but no extract"),
        (
            StepSpec("Read", extract=Extraction.written({"a": "string"}), save_as="1st"),
            "save_as of step 0 must be a name",
        ),
        (StepSpec("Read", extract=Extraction({"type": "strung"})), "not a valid JSON Schema"),
        (
            StepSpec("Read", extract=Extraction({"type": "string", "pattern": "(a+)+$"})),
            "may not use pattern",
        ),
    ],
)
def test_a_session_is_not_created_with_an_extraction_it_cannot_use(
    step: StepSpec, said: str
) -> None:
    with pytest.raises(InvalidWorkflow) as refused:
        WorkflowSession.create(name="n", steps=[step], tenant="acme", actor="alice")

    assert said in str(refused.value)


def test_a_step_completes_only_with_the_data_it_declares() -> None:
    extraction = Extraction.written({"title": "string"})
    session = WorkflowSession.create(
        name="n",
        steps=[StepSpec("Read", extract=extraction, save_as="t"), StepSpec("GET /")],
        tenant="acme",
        actor="alice",
    )
    session.start_step(0)

    with pytest.raises(InvalidStateTransition, match="not what it declares"):
        session.complete_step(0, summary="read", data={"title": 3})
    session.complete_step(0, summary="read", data={"title": "milk"})
    session.start_step(1)
    with pytest.raises(InvalidStateTransition, match="declares no extract"):
        session.complete_step(1, summary="ok", data={"title": "milk"})

    assert session.steps[0].data == {"title": "milk"}


def test_a_check_of_the_workflow_knows_the_variable_an_extracting_step_saves() -> None:
    steps = [
        StepSpec("GET /todos?first={{vars.first}}"),
        StepSpec("GET /todos", extract=Extraction.written({"title": "string"}), save_as="first"),
        StepSpec("GET /todos?first={{vars.first}}"),
    ]

    planned = plan(builtin(), steps)

    assert planned[1].decided_by_ai  # data comes from the model, never from a definition
    assert [(step.index, str(p)) for step, p in unfillable(planned)] == [(0, "{{vars.first}}")]
