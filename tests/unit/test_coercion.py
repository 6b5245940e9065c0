"""Which arguments that miss their type have one reading, and which stay as they are."""

from __future__ import annotations

from typing import Any

import pytest

from engine.ai.coercion import coerced

SCHEMA = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "ids": {"type": "array", "items": {"type": "integer"}},
        "count": {"type": "integer"},
        "price": {"type": "number"},
        "ok": {"type": "boolean"},
        "name": {"type": "string"},
    },
}


@pytest.mark.parametrize(
    ("key", "sent", "read"),
    [
        ("tags", "one", ["one"]),
        ("count", "42", 42),
        ("count", "-7", -7),
        ("price", "3.5", 3.5),
        ("price", "12", 12),
        ("ok", "true", True),
        ("ok", "False", False),
    ],
)
def test_a_string_with_one_reading_is_read_that_way(key: str, sent: str, read: Any) -> None:
    result = coerced({key: sent}, SCHEMA)

    assert result.arguments == {key: read}
    assert len(result.notes) == 1
    assert result.notes[0].startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("key", "sent"),
    [
        ("ids", "1"),  # an array of integers: not the lone-string case
        ("count", "3.5"),
        ("count", "1e3"),
        ("count", "twelve"),
        ("price", "nan"),
        ("price", "inf"),
        ("price", "1,5"),
        ("ok", "yes"),
        ("ok", "1"),
        ("tags", {"a": "b"}),
        ("tags", 3),
        ("name", "already a string"),
        ("unknown", "x"),
    ],
)
def test_anything_ambiguous_is_left_as_it_is(key: str, sent: Any) -> None:
    result = coerced({key: sent}, SCHEMA)

    assert result.arguments == {key: sent}
    assert result.notes == ()
