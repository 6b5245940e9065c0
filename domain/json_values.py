"""JSON a tenant gives that is kept in events as it came: a run's input values and the input
declarations, a registered workflow's document, a signal's body.

The event store reads back a mapping of exactly `_type_` and `_data_` as a stored Python
type: such a value, kept, would come back as something else or not at all, and every reader
of the log (the views' projector first) would stumble on it. PostgreSQL cannot keep NUL in
text, nor a lone surrogate in UTF-8, nor jsonb an infinite number or NaN (which Python's
JSON reader takes); and a value nested past any sensible depth is a way to exhaust a reader's
stack. So these are refused when the value comes in, with the reason.
"""

from __future__ import annotations

import math
from typing import Any

MARKER_KEYS = frozenset({"_type_", "_data_"})
MAX_DEPTH = 32


def unstorable(value: Any) -> str | None:
    """Why `value` cannot be kept in an event as it is, or None if it can."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            return f"it is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            if (problem := _text_problem(item)) is not None:
                return problem
        elif isinstance(item, dict):
            if item.keys() == MARKER_KEYS:
                return (
                    "it holds a mapping of exactly _type_ and _data_, which the event store "
                    "reserves"
                )
            pending.extend((key, depth + 1) for key in item)
            pending.extend((member, depth + 1) for member in item.values())
        elif isinstance(item, list):
            pending.extend((member, depth + 1) for member in item)
        elif isinstance(item, float) and not math.isfinite(item):
            return "it holds a number JSON cannot write (Infinity or NaN)"
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "it holds a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it holds a lone surrogate, which is no character"
    return None
