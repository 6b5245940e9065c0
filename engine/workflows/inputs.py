"""A workflow's inputs: what it declares it takes, the values a run gives, and the steps with
those values written in.

A workflow declares each input as a JSON Schema (`inputs: {user: {type: string, default:
demo}}`); a run gives values (`stepline run FILE --input user=ada`, or the API's `with`).
At creation the values are checked against the declarations — every error names the input —
the defaults filled in, and each `{{inputs.NAME}}` in the steps (text and `expect`) and the
base URL replaced by its value. The session records the steps so written and the values
(`config.inputs`), so replay and fork run the very same steps, and nothing later has an
`{{inputs.…}}` left to fill.

A value may not hold `{{`: whoever gives the values would otherwise write placeholders
(`{{secrets.TOKEN}}`) into steps whose author chose where each secret goes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.errors import InvalidInput
from domain.json_values import unstorable
from domain.session import MAX_STEP_TEXT, StepSpec
from engine.executors import PLACEHOLDER
from engine.store.app import SessionRequest

NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_INPUTS = 50
INPUT = re.compile(r"\{\{\s*inputs\.([A-Za-z0-9_]+)\s*\}\}")
TYPES = ("string", "integer", "number", "boolean", "array", "object")
REFUSED_KEYWORDS = frozenset(
    {
        "pattern",
        "patternProperties",
        "$ref",
        "$dynamicRef",
        "$recursiveRef",
        "$defs",
        "definitions",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$recursiveAnchor",
        "$schema",
    }
)
"""JSON Schema keywords an input's declaration may not use: a `pattern` is a regular
expression run on a value some other caller sends (one written to backtrack takes the
process for hours), and a reference may point nowhere or far away."""


class InputSpec(BaseModel):
    """One declared input: a JSON Schema with a `type`, and a `default` that makes it
    optional. Other JSON Schema keywords (`enum`, `minimum`, `pattern`, `items`, …) apply."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"one of {', '.join(TYPES)}")
    description: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _a_schema_with_a_valid_default(self) -> InputSpec:
        if self.type not in TYPES:
            raise ValueError(f"type must be one of {', '.join(TYPES)}, not {self.type!r}")
        schema = self.schema_of()
        if (problem := unstorable(schema)) is not None:
            raise ValueError(f"the declaration cannot be kept: {problem}")
        if refused := REFUSED_KEYWORDS & _keys_in(schema):
            raise ValueError(
                f"{', '.join(sorted(refused))} cannot be used: a pattern could take a request "
                "hours to check, and a reference leads outside the declaration"
            )
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as error:
            raise ValueError(f"not a valid JSON Schema: {error.message}") from None
        if "default" in schema:
            problem = _first_error(schema, schema["default"])
            if problem is not None:
                raise ValueError(f"the default does not fit: {problem}")
        return self

    def schema_of(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    @property
    def required(self) -> bool:
        return "default" not in self.schema_of()


Inputs = dict[str, InputSpec]


def with_inputs(
    request: SessionRequest, declared: Mapping[str, InputSpec], given: Mapping[str, Any]
) -> SessionRequest:
    """`request` with the run's input values written into its steps and base URL, and recorded
    in its config (`inputs`); InvalidInput, before anything is saved, names the first input
    that is unknown, missing or does not fit, or that a step uses but is not declared."""
    base_url = request.config.get("base_url")
    if not declared and not given and not used(request.steps, base_url):
        return request
    values = resolved(declared, given)
    config = {**request.config, "base_url": filled(base_url, values, "the base URL")}
    if values:
        config["inputs"] = values
    return replace(request, steps=written_in(request.steps, values), config=config)


def resolved(declared: Mapping[str, InputSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """The run's values: `given` checked against `declared`, the defaults filled in.
    InvalidInput names the first input that is unknown, missing or does not fit."""
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InvalidInput(name, f"the workflow declares no input {name} (it takes: {known})")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name not in given:
            if spec.required:
                raise InvalidInput(name, f"input {name} is required ({_described(spec)})")
            values[name] = spec.schema_of()["default"]
            continue
        if (unkept := unstorable(given[name])) is not None:
            raise InvalidInput(name, f"input {name} cannot be kept: {unkept}")
        problem = _first_error(spec.schema_of(), given[name])
        if problem is not None:
            raise InvalidInput(name, f"input {name}: {problem}")
        if any("{{" in text or "}}" in text for text in _texts_in(given[name])):
            raise InvalidInput(name, f"input {name} may not hold '{{{{' (no placeholders)")
        values[name] = given[name]
    return values


def written_in(steps: list[StepSpec], values: Mapping[str, Any]) -> list[StepSpec]:
    """`steps` with each `{{inputs.NAME}}` replaced by its value (in a loop's own steps too);
    InvalidInput names an input a step uses that the workflow does not declare."""
    return [_written(step, values, index) for index, step in enumerate(steps)]


def _written(step: StepSpec, values: Mapping[str, Any], index: int) -> StepSpec:
    loop = step.loop
    if loop is not None:
        body = [_written(StepSpec.from_dict(s), values, index).to_dict() for s in loop.steps]
        loop = replace(loop, steps=tuple(body))
    return replace(
        step,
        text=_filled(step.text, values, index),
        expect=None if step.expect is None else _filled(step.expect, values, index),
        loop=loop,
    )


def filled(text: str | None, values: Mapping[str, Any], where: str) -> str | None:
    """`text` (the base URL, say) with its inputs written in: no longer than a step may be
    (InvalidInput before anything is written, however large the values or often used)."""
    if text is None:
        return None
    _refuse_too_long(text, values, where)
    written = INPUT.sub(lambda match: _value(match, values, where), text)
    # Values side by side, or next to a brace the text holds, may still make a placeholder
    # its author did not write: the text may hold its own, and no other.
    own = Counter(PLACEHOLDER.findall(INPUT.sub("\x00", text)))
    if Counter(PLACEHOLDER.findall(written)) != own:
        name = INPUT.findall(text)[0]
        raise InvalidInput(
            name, f"the inputs written into {where} make a placeholder its text does not hold"
        )
    return written


def used(steps: list[StepSpec], base_url: str | None = None) -> set[str]:
    """The inputs the steps and the base URL name."""
    texts = [base_url or ""] + [
        t for s in _with_loop_steps(steps) for t in (s.text, s.expect or "")
    ]
    return {name for text in texts for name in INPUT.findall(text)}


def _with_loop_steps(steps: list[StepSpec]) -> Iterator[StepSpec]:
    for step in steps:
        yield step
        if step.loop is not None:
            yield from _with_loop_steps([StepSpec.from_dict(s) for s in step.loop.steps])


def parsed_value(text: str) -> Any:
    """A value given on the command line (`--input n=3`): JSON if it reads as JSON (a number,
    true, a list), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _filled(text: str, values: Mapping[str, Any], index: int) -> str:
    written = filled(text, values, f"step {index + 1}")
    assert written is not None  # text in, text out
    return written


MAX_WRITTEN = MAX_STEP_TEXT
"""A text with its inputs written in: a step's (or an expect's, a base URL's) limit."""


def _refuse_too_long(text: str, values: Mapping[str, Any], where: str) -> None:
    left = MAX_WRITTEN - len(text)
    for name in INPUT.findall(text):
        if name in values:
            left -= json_length(values[name], left + 1)
            if left < 0:
                raise InvalidInput(
                    name,
                    f"written into {where}, the inputs would make it longer than "
                    f"{MAX_WRITTEN:,} characters",
                )


def json_length(value: Any, limit: int) -> int:
    """About how many characters `value` takes written into a text (a string as it is,
    anything else as JSON), counted no further than `limit`: a value made of one object
    referenced many times is not written out to be measured."""
    total, pending = 0, [value]
    while pending and total < limit:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + (2 if item is not value else 0)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            total += 2 + 2 * len(item)
            pending.extend(item)
        else:
            total += len(str(item))
    return min(total, limit)


def _value(match: re.Match[str], values: Mapping[str, Any], where: str) -> str:
    name = match.group(1)
    if name not in values:
        raise not_declared(name, values, where)
    value = values[name]
    return value if isinstance(value, str) else json.dumps(value)


def not_declared(name: str, declared: Iterable[str], where: str) -> InvalidInput:
    """The error of `where` (a step, the base URL, the workflow) using `{{inputs.NAME}}` that
    the workflow does not declare."""
    return InvalidInput(
        name,
        f"{where} uses {{{{inputs.{name}}}}}, but the workflow declares no input {name} "
        f"(it declares: {', '.join(sorted(declared)) or 'none'})",
        suggested_action=f"Declare it under the workflow's inputs (`inputs: {{{name}: "
        "{type: string}}`), or correct the name",
    )


def _first_error(schema: dict[str, Any], value: Any) -> str | None:
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: e.path)
    return errors[0].message if errors else None


def _described(spec: InputSpec) -> str:
    return spec.type + (f": {spec.description}" if spec.description else "")


def _texts_in(value: Any) -> list[str]:
    """Every string in `value`: its own, and its members' and keys' at any depth."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (*_texts_in(k), *_texts_in(v))]
    if isinstance(value, list):
        return [t for member in value for t in _texts_in(member)]
    return []


def _keys_in(schema: Any) -> set[str]:
    """Every key of `schema`'s mappings, at any depth."""
    if isinstance(schema, dict):
        return set(schema) | {k for member in schema.values() for k in _keys_in(member)}
    if isinstance(schema, list):
        return {k for member in schema for k in _keys_in(member)}
    return set()
