"""A step's extraction by selectors: the browser reads a table or a list into the declared
shape with no model (see `domain.extraction`).

The browser's `read_rows` gives each row's fields as the page shows them, as text; each is
read as its field's declared type (`"3"` an integer, `"yes"` / `"✓"` true, `""` / `"no"`
false), and the rows checked against the schema like a model's data would be. Rows holding a
`{{namespace.name}}` placeholder are refused, as a model's data holding one is: a page cell
reading `{{secrets.TOKEN}}`, saved and sent by a later step, would have the secret filled in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from domain.extraction import Extraction
from engine.executors import SAVED_PLACEHOLDER, Command, holds_placeholder, truncated
from engine.loop.step_results import StepDone, StepFailure, StepResult, failure
from engine.loop.step_run import StepRun

READ_ROWS = "read_rows"
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "✓", "✔", "done", "on", "checked"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "✗", "✘", "", "off", "unchecked"})
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def read_by_selectors(run: StepRun, index: int, extraction: Extraction, key: str) -> StepResult:
    """The rows the step's selectors find, typed as its schema says, as the step's data."""
    args = {"rows": extraction.rows, "fields": extraction.fields}
    outcome = run.execute(index, Command("browser", READ_ROWS, args), key)
    if not outcome.ok:
        return StepFailure(outcome.error) if outcome.error else failure("COMMAND_FAILED", "")
    found = json.loads(outcome.output).get("rows", [])
    data = [_typed(row, extraction.schema.get("items", {})) for row in found]
    if holds_placeholder(data):
        return failure(
            "EXTRACTION_INVALID",
            f"the rows read from the page cannot be saved: {SAVED_PLACEHOLDER}",
            rows=len(data),
        )
    problem = extraction.problem(data)
    if problem is not None:
        return failure(
            "EXTRACTION_INVALID",
            f"the rows read from the page do not fit the step's extract schema: {problem}",
            rows=len(data),
            first=truncated(json.dumps(data[:1]), 300),
        )
    summary = f"read {len(data)} rows of {extraction.rows}"
    return StepDone(summary, [truncated(json.dumps(data), 300)], data)


def _typed(row: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties", {})
    return {name: _as(value, properties.get(name, {})) for name, value in row.items()}


def _as(text: Any, spec: dict[str, Any]) -> Any:
    """A field's text as its declared type, when it reads as one; else the text, which the
    schema check then refuses with the field named."""
    if not isinstance(text, str):
        return text
    kind, plain = spec.get("type"), text.strip()
    if kind == "boolean" and plain.lower() in TRUE_WORDS | FALSE_WORDS:
        return plain.lower() in TRUE_WORDS
    if kind in ("integer", "number") and _NUMBER.fullmatch(plain):
        number = float(plain)
        return int(number) if number.is_integer() else number
    return plain
