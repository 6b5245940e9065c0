"""Forgiving where it is safe: tool arguments a small model almost got right, put right.

Small models often send a lone string where a tool asks for an array of strings (e.g.
`complete_step`'s `evidence`), or a number or a boolean written as a string (`"3"`, `"true"`).
Each has exactly one reading, so it is taken in that reading and the change is said in the
turn's note. Anything with more than one reading (an object for an array, `"yes"` for a
boolean, `"3.5"` for an integer) is left as it is, so the schema check makes it a mistake.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_INTEGER = re.compile(r"-?\d{1,18}")
_NUMBER = re.compile(r"-?\d{1,18}(\.\d{1,18})?([eE][-+]?\d{1,3})?")
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class Coerced:
    arguments: dict[str, Any]
    notes: tuple[str, ...]
    """One line per property that was changed, e.g. `evidence: a string taken as a list of one`."""


def coerced(arguments: dict[str, Any], schema: dict[str, Any]) -> Coerced:
    """The arguments with each top-level property that has one unambiguous reading in its
    declared type converted to it; the other properties untouched."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):  # a tool server's schema may be malformed
        return Coerced(dict(arguments), ())
    result = dict(arguments)
    notes: list[str] = []
    for key, value in arguments.items():
        spec = properties.get(key)
        if not isinstance(spec, dict) or not isinstance(value, str):
            continue
        reading = _reading(value, spec)
        if reading is not None:
            result[key], how = reading
            notes.append(f"{key}: {how}")
    return Coerced(result, tuple(notes))


def _reading(value: str, spec: dict[str, Any]) -> tuple[Any, str] | None:
    """The one value of the declared type a string stands for, with how it was read."""
    match spec.get("type"):
        case "array" if _items_are_strings(spec):
            return [value], "a string taken as a list of one"
        case "integer" if _INTEGER.fullmatch(value.strip()):
            return int(value), "a numeric string taken as an integer"
        case "number" if _NUMBER.fullmatch(value.strip()) and math.isfinite(float(value)):
            number = float(value)
            return (int(number) if number.is_integer() and "." not in value else number), (
                "a numeric string taken as a number"
            )
        case "boolean" if value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()], f"the string {value!r} taken as a boolean"
    return None


def _items_are_strings(spec: dict[str, Any]) -> bool:
    items = spec.get("items")
    return isinstance(items, dict) and items.get("type") == "string"
