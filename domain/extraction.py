"""Typed extraction: a step that completes with data of a declared shape.

A step declares `extract:` as a JSON Schema, or as the shorthand `{field: type, ...}` (each
type one of string, number, integer, boolean, array, object; `[type]` a list of that type;
a mapping a nested object of the same shorthand; every field required). A mapping with a
`type`, `properties` or `$schema` key is read as a JSON Schema; any other, as the shorthand
(so a field named `type` needs the JSON Schema form). The data the step completes with must
validate against the schema; with `save_as: NAME` it is `{{vars.NAME}}` to the steps after.

A browser step may instead give selectors: `extract: {rows: "table#todos tr", fields:
{title: "td.title", done: "td.done"}, schema: {title: string, done: boolean}}` reads each
row's fields' text into an object (typed by `schema`, the shorthand or a JSON Schema of one
row; without it every field is a string), the data a list of them, with no model.

The schema is the tenant's and the data comes from a page (through a model or not), so the
schema is bounded in size and may not use `pattern`s (a regular expression written to
backtrack, run on what a page says, takes the worker for hours) or references.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from domain.errors import InvalidWorkflow
from domain.json_values import unstorable

MAX_SCHEMA_CHARS = 10_000
"""The most a step's schema may take, written as JSON."""
MAX_DATA_CHARS = 100_000
"""The most a step's data may take, written as JSON (it is recorded in the step's event)."""
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What `save_as` may name: a variable `{{vars.NAME}}` can fill in."""
MAX_SELECTOR = 500
MAX_FIELDS = 50
TYPES = ("string", "number", "integer", "boolean", "array", "object")
SCHEMA_KEYS = frozenset({"type", "properties", "$schema"})
SELECTOR_KEYS = frozenset({"rows", "fields", "schema"})
REFUSED_KEYWORDS = frozenset(
    {
        "pattern",
        "patternProperties",
        "$ref",
        "$dynamicRef",
        "$recursiveRef",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$recursiveAnchor",
    }
)


class ExtractionRefused(ValueError):
    """An `extract:` that cannot be used; the message says why."""


@dataclass(frozen=True)
class Extraction:
    """What a step's data must be (`schema`, a JSON Schema) and, for the browser's reading
    without a model, where it is on the page (`rows`, and each field's selector in a row)."""

    schema: dict[str, Any]
    rows: str | None = None
    fields: dict[str, str] | None = None

    @property
    def by_selectors(self) -> bool:
        return self.rows is not None

    def to_dict(self) -> dict[str, Any]:
        """As `Created` records it: the schema, and the selectors only when given."""
        recorded: dict[str, Any] = {"schema": self.schema}
        if self.rows is not None:
            recorded["rows"] = self.rows
            recorded["fields"] = dict(self.fields or {})
        return recorded

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> Extraction:
        fields = recorded.get("fields")
        return cls(recorded["schema"], recorded.get("rows"), dict(fields) if fields else None)

    @classmethod
    def written(cls, given: Any) -> Extraction:
        """The extraction a workflow writes (a JSON Schema, the shorthand, or selectors),
        checked; ExtractionRefused says what is wrong."""
        if not isinstance(given, dict) or not given:
            raise ExtractionRefused(
                "extract must be a mapping: a JSON Schema, {field: type, ...}, or "
                "{rows, fields, schema} for the browser"
            )
        if _is_selector_form(given):
            return _selected(given)
        return cls(checked_schema(schema_of(given)))

    def problem(self, data: Any) -> str | None:
        """Why `data` is not what the step declares, or None if it is."""
        if (unkept := unstorable(data)) is not None:
            return f"the data cannot be kept: {unkept}"
        if len(json.dumps(data)) > MAX_DATA_CHARS:
            return f"the data is longer than {MAX_DATA_CHARS} characters written as JSON"
        error = best_match(Draft202012Validator(self.schema).iter_errors(data))
        if error is None:
            return None
        where = "".join(f"[{part!r}]" for part in error.absolute_path) or "the data"
        return f"{where}: {error.message}"


def schema_of(given: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as given, or the one the shorthand stands for."""
    if SCHEMA_KEYS & given.keys():
        return given
    return _object_of(given)


def _object_of(shorthand: dict[str, Any]) -> dict[str, Any]:
    properties = {str(name): _type_of(value, str(name)) for name, value in shorthand.items()}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _type_of(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return _object_of(value)
    if isinstance(value, list) and len(value) == 1:
        return {"type": "array", "items": _type_of(value[0], name)}
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return {"type": "array", "items": _type_of(value[1:-1].strip(), name)}
    if isinstance(value, str) and value in TYPES:
        return {"type": value}
    raise ExtractionRefused(
        f"extract field {name!r}: {value!r} is not a type; write one of {', '.join(TYPES)}, "
        "[type] for a list of it, or a mapping for a nested object"
    )


def checked_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, if it is a JSON Schema a step may declare; else ExtractionRefused."""
    if (unkept := unstorable(schema)) is not None:
        raise ExtractionRefused(f"the extract schema cannot be kept: {unkept}")
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise ExtractionRefused(
            f"the extract schema is longer than {MAX_SCHEMA_CHARS} characters written as JSON"
        )
    if refused := REFUSED_KEYWORDS & _keys_in(schema):
        raise ExtractionRefused(
            f"the extract schema may not use {', '.join(sorted(refused))}: a pattern run on "
            "what a page says could take the worker hours, and a reference leads outside it"
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        raise ExtractionRefused(f"extract is not a valid JSON Schema: {error.message}") from None
    return schema


NAMED_SCHEMAS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})
"""Keywords whose mapping's keys are names (a field called `pattern`), not keywords."""


def _keys_in(value: Any) -> set[str]:
    """The keywords a schema uses, at any depth."""
    if isinstance(value, list):
        return {key for member in value for key in _keys_in(member)}
    if not isinstance(value, dict):
        return set()
    found = set(value)
    for key, member in value.items():
        named = key in NAMED_SCHEMAS and isinstance(member, dict)
        for schema in member.values() if named else [member]:
            found |= _keys_in(schema)
    return found


def _is_selector_form(given: dict[str, Any]) -> bool:
    return given.keys() <= SELECTOR_KEYS and isinstance(given.get("fields"), dict)


def _selected(given: dict[str, Any]) -> Extraction:
    """The browser's form: a row selector, a selector per field, the schema of one row."""
    rows, fields = given.get("rows"), given["fields"]
    if not _a_selector(rows):
        raise ExtractionRefused(f"extract rows must be a CSS selector of {MAX_SELECTOR} or less")
    if not fields or len(fields) > MAX_FIELDS:
        raise ExtractionRefused(f"extract fields must name 1 to {MAX_FIELDS} fields")
    if not all(_a_selector(selector) for selector in fields.values()):
        raise ExtractionRefused("each of extract's fields must be a CSS selector within a row")
    row = given.get("schema") or dict.fromkeys(fields, "string")
    if not isinstance(row, dict):
        raise ExtractionRefused("extract schema must be a mapping: the schema of one row")
    schema = {"type": "array", "items": schema_of(row)}
    return Extraction(checked_schema(schema), rows, {str(k): v for k, v in fields.items()})


def _a_selector(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value.strip()) <= MAX_SELECTOR and "\x00" not in value


def check_extraction(
    extract: Extraction | None, save_as: str | None, is_loop: bool, label: str, at: str
) -> None:
    """A step's `extract`, a schema it may declare (on a step, not a loop); its `save_as`, a
    variable name, and only with `extract`. InvalidWorkflow names the field."""
    if save_as is not None and extract is None:
        raise InvalidWorkflow(
            f"{label} has save_as but no extract: only extracted data is saved",
            suggested_action=f"Give {label} an extract (the shape of its data), or remove save_as",
            field=f"{at}.save_as",
        )
    if save_as is not None and not VARIABLE_NAME.fullmatch(save_as):
        raise InvalidWorkflow(
            f"save_as of {label} must be a name (letters, digits, _; at most 64)",
            suggested_action="Name the variable as {{vars.NAME}} will use it, e.g. todos",
            field=f"{at}.save_as",
        )
    if extract is None:
        return
    if is_loop:
        raise InvalidWorkflow(
            f"{label} is a loop and cannot extract: give its steps the extract",
            field=f"{at}.extract",
        )
    try:
        checked_schema(extract.schema)
    except ExtractionRefused as refused:
        raise InvalidWorkflow(
            f"{label}: {refused}", suggested_action="Fix the step's extract", field=f"{at}.extract"
        ) from None
