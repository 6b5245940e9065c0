"""`for each NAME in EXPRESSION: [steps]`: a step that, when it comes up, becomes its steps
once per item of a list saved earlier.

The loop is a step of its own (its text is its header, `for each todo in vars.todos`); when
it comes up, its list is evaluated and `LoopExpanded` records the iterations' steps, put
right after it, each an ordinary step: its text with `{{NAME}}` and `{{NAME.path}}` written
in from its item, its origin saying which loop and which iteration it came from, and the
loop variables bound for its own `if:` and nested loops. So the views, a replay and a fork
see ordinary steps, and a session's steps can only grow ahead of the step under way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.expressions import Expression, ExpressionError
from domain.json_values import unstorable

DEFAULT_MAX_ITERATIONS = 100
MAX_ITERATIONS = 10_000
"""The most a loop may set `max_iterations` to."""
MAX_EXPANDED_STEPS = 2_000
"""The most steps a session may have, its loops' iterations included."""
MAX_SESSION_EXPANSION_CHARS = 4_000_000
"""All its loops' iterations' steps, as their `LoopExpanded` events record them: the most a
session's loops may add to what is read back whenever it is."""
MAX_ITEM_CHARS = 10_000
"""An item as the iterations' steps record it (bound for their conditions), as JSON."""
MAX_EXPANSION_CHARS = 1_000_000
"""The iterations' steps as one `LoopExpanded` records them, as JSON: an event is read back
whole whenever its session is."""
VARIABLE = r"[A-Za-z_][A-Za-z0-9_]*"
HEADER = re.compile(rf"^for each\s+({VARIABLE})\s+in\s+(\S.*)$", re.DOTALL)
"""A loop as a workflow writes it: `for each todo in vars.todos`."""
_PATH = r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*"


class LoopRefused(ValueError):
    """The loop cannot be expanded: `code` is the error code its step fails with."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Loop:
    """A loop as its step records it: the variable, the list's expression, its steps (each
    as a step records them, `{"text", "expect", "policy", ...}`) and its bound."""

    var: str
    over: str
    steps: tuple[dict[str, Any], ...]
    max_iterations: int = DEFAULT_MAX_ITERATIONS

    @property
    def header(self) -> str:
        return f"for each {self.var} in {self.over}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "var": self.var,
            "over": self.over,
            "steps": list(self.steps),
            "max_iterations": self.max_iterations,
        }

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> Loop:
        return cls(
            var=recorded["var"],
            over=recorded["over"],
            steps=tuple(recorded["steps"]),
            max_iterations=recorded.get("max_iterations", DEFAULT_MAX_ITERATIONS),
        )

    def items_of(self, values: Mapping[str, Any]) -> list[Any]:
        """The list the loop goes over, within its bound (LoopRefused past it)."""
        try:
            items = Expression.parse(self.over, values.keys()).items(values)
        except ExpressionError as error:
            raise LoopRefused("EXPRESSION_FAILED", error.described()) from None
        if len(items) > self.max_iterations:
            raise LoopRefused(
                "LOOP_LIMIT_EXCEEDED",
                f"{self.header}: {len(items)} items, more than its max_iterations "
                f"({self.max_iterations})",
            )
        return items

    def iterations(self, items: list[Any], bound: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The steps of every iteration, in order, as `LoopExpanded` records them; `bound`:
        the loop variables of the loops this one is inside."""
        expanded, size = [], 0
        for number, item in enumerate(items):
            _refuse_item(self, number, item)
            binding = {**bound, self.var: item}
            origin = {"loop": self.header, "iteration": number, "of": len(items), "bind": binding}
            for step in self.steps:
                own = step.get("origin") or {}  # a template's, say
                written = _written(step, self.var, item, number) | {"origin": own | origin}
                size += len(json.dumps(written, ensure_ascii=False))
                if size > MAX_EXPANSION_CHARS:
                    raise LoopRefused(
                        "LOOP_LIMIT_EXCEEDED",
                        f"{self.header}: its iterations' steps would be more than "
                        f"{MAX_EXPANSION_CHARS:,} characters (at item {number})",
                    )
                expanded.append(written)
        return expanded


def _refuse_item(loop: Loop, number: int, item: Any) -> None:
    """An item is recorded (bound for the iteration's conditions), so it must be a value the
    log can keep (`unstorable`: not too deep, no NUL, no Infinity...); and its text may not
    hold a placeholder of its own: written into a step, a value an answer gave would
    otherwise ask for a secret or another variable."""
    problem = unstorable(item)
    if problem is not None:
        raise LoopRefused("LOOP_ITEM_INVALID", f"{loop.header}: item {number}: {problem}")
    text = json.dumps(item, ensure_ascii=False)
    if "{{" in text or "}}" in text or "\\u0000" in text:
        raise LoopRefused(
            "LOOP_ITEM_INVALID",
            f"{loop.header}: item {number} holds {{{{, }}}} or NUL (or a secret's value, "
            "recorded as its {{secrets.NAME}}), which a step may not be given",
        )
    if len(text) > MAX_ITEM_CHARS:
        raise LoopRefused(
            "LOOP_ITEM_INVALID",
            f"{loop.header}: item {number} is {len(text)} characters as JSON; the limit is "
            f"{MAX_ITEM_CHARS}",
        )


def _written(step: dict[str, Any], var: str, item: Any, number: int) -> dict[str, Any]:
    """The step with `{{var}}` and `{{var.path}}` written in from `item` (its text, its
    expect, and the same in the steps of a loop inside it)."""
    written = dict(step)
    written["text"] = _write(step["text"], var, item, number)
    if step.get("expect"):
        written["expect"] = _write(step["expect"], var, item, number)
    inner = step.get("loop")
    if inner:
        body = [_written(s, var, item, number) for s in inner["steps"]]
        written["loop"] = {**inner, "steps": body}
    return written


def _write(text: str, var: str, item: Any, number: int) -> str:
    pattern = re.compile(r"\{\{\s*" + re.escape(var) + rf"((?:\.{_PATH})?)\s*\}}\}}")
    return pattern.sub(lambda found: _shown(_at(item, found.group(1), var, number)), text)


def _at(item: Any, path: str, var: str, number: int) -> Any:
    value = item
    for part in path.split(".")[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise LoopRefused(
                "LOOP_ITEM_INVALID",
                f"{{{{{var}{path}}}}}: item {number} has no {part!r}",
            )
    return value


def _shown(value: Any) -> str:
    """A string as it is, anything else as JSON (`3`, `true`, `{"a": 1}`)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def header_of(text: str) -> tuple[str, str] | None:
    """`(var, expression)` of a loop's header as written, or None if it is not one."""
    found = HEADER.match(text.strip())
    return (found.group(1), found.group(2).strip()) if found else None
