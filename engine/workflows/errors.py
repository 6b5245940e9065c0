"""What a workflow file's errors say: where (file:line:column, 1-based) and how to fix it.

YAML reads some steps otherwise than a person meant them, and some not at all: a step that
holds `": "` becomes a mapping, one that starts with `{` or `[` becomes JSON, and ` #` starts a
comment that cuts the step short. Those traps are named, with the step quoted as it should be
written; any other error gets its position and the field's allowed values. An error in a step
names the step: its number (from 0, as `stepline run` shows them) and its text.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from domain.errors import InvalidWorkflow
from domain.loops import header_of
from domain.step_policy import POLICY_FIELDS

STEP_FIELDS = frozenset({"text", "expect"})
"""A step's texts, which YAML may misread."""
STEP_KEYS = STEP_FIELDS | set(POLICY_FIELDS) | {"if", "for_each", "steps", "max_iterations"}
STEP_KEYS |= {"use", "with"}
"""Every key of a step written as a mapping: its texts, its own policy, its condition, a
loop's, and a template's (`use: login` is a template, not a misread step)."""
CANNOT_START = "`@%&*!|>"
"""Characters YAML reserves at the start of a plain (unquoted) value."""
QUOTES = ("'", '"')
STEP_LINE = re.compile(r"(?P<lead>\s*(?:- )?(?:(?:text|expect): )?)(?P<raw>\S.*)")
SHOWN_CHARS = 60
"""Of a step's text in an error: enough to know it by."""


def unreadable(path: Path, error: OSError | UnicodeDecodeError) -> InvalidWorkflow:
    """The file cannot be read: missing, a directory, not ours to read, not UTF-8."""
    if isinstance(error, UnicodeDecodeError):
        return InvalidWorkflow(
            f"{path} is not UTF-8 text (byte {error.start})",
            suggested_action="Save the workflow file as UTF-8",
            file=str(path),
        )
    if isinstance(error, FileNotFoundError):
        advice = f"Check the path: relative paths start from {Path.cwd()}"
    elif isinstance(error, IsADirectoryError):
        advice = "Name a workflow file (.yaml), not a directory"
    else:
        advice = "Check the path, and that the file can be read by this user"
    return InvalidWorkflow(
        f"cannot read {path}: {error.strerror}", suggested_action=advice, file=str(path)
    )


def not_yaml(path: Path, text: str, error: yaml.YAMLError) -> InvalidWorkflow:
    """A file YAML cannot read: where, and, when a step's line is to blame, how to quote it."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return InvalidWorkflow(
            f"{path} is not valid YAML: {str(error).splitlines()[0]}",
            suggested_action="Fix the file's characters: YAML takes printable UTF-8 text",
            file=str(path),
        )
    lines = text.splitlines()
    for mark in (error.problem_mark, error.context_mark):
        trap = _trap_on_line(path, lines, mark)
        if trap is not None:
            return trap
    mark, context = error.problem_mark, error.context_mark
    began = ""
    if context is not None:
        began = f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    index = None
    if mark.line < len(lines):
        index = _step_on_line(lines, mark.line, new_item=lines[mark.line].lstrip().startswith("-"))
    in_step = "" if index is None else f" in step {index}"
    return InvalidWorkflow(
        f"{_where(path, mark)}: not valid YAML{in_step}: {error.problem}{began}",
        suggested_action="Fix the YAML there: indent with spaces, and quote a step that holds "
        "': ' or ' #' or starts with { [ ` or @",
        **_position(path, mark),
        **({} if index is None else {"step": index}),
    )


def trap_in(path: Path, text: str, root: yaml.Node | None) -> InvalidWorkflow | None:
    """A step YAML read as something else than text (a mapping, JSON, a step cut by a
    comment), named with its line and quoted as it should be written."""
    lines = text.splitlines()
    for index, node in _step_values(root):
        if _misread(node, lines):
            start, raw = node.start_mark, _source_of(node, lines)
            reason = _reason(raw) or "is not read as text by YAML"
            return _trap(path, lines, start, raw, reason, index=index, as_text=_holds_fields(node))
    return None


def invalid_fields(
    path: Path, root: yaml.Node | None, error: ValidationError, model: type[BaseModel]
) -> InvalidWorkflow:
    """The fields that are wrong, each at its line (and in its step), and what to do about the
    first one; a misspelt name first, as the likely cause of a field said to be missing."""
    details = error.errors()
    problems = [_field_problem(path, root, detail) for detail in details]
    first = next((d for d in details if d["type"] == "extra_forbidden"), details[0])
    node = _node_at(root, first["loc"])
    position = _position(path, node.start_mark) if node is not None else {"file": str(path)}
    step = _step_index(first["loc"])
    return InvalidWorkflow(
        "; ".join(problems),
        suggested_action=_field_advice(first, model),
        field=_dotted(first["loc"]),
        **position,
        **({} if step is None else {"step": step}),
    )


def _field_problem(path: Path, root: yaml.Node | None, detail: ErrorDetails) -> str:
    loc = detail["loc"]
    node = _node_at(root, loc)
    where = _where(path, node.start_mark) if node is not None else str(path)
    step = _step_index(loc)
    if step is None:
        return f"{where}: {_dotted(loc)}: {detail['msg']}"
    named = f"step {step}{_shown_text(_value_of_index(_value_of(root, 'steps'), step))}"
    if len(loc) == 2 and detail["type"] == "model_type":
        return f"{where}: {named} {_not_text(detail.get('input'))}"
    return f"{where}: {named}: {_dotted(loc[2:])}: {detail['msg']}"


# ---- the traps ------------------------------------------------------------------------------


def _step_values(root: yaml.Node | None) -> list[tuple[int, yaml.Node]]:
    """The nodes that should hold a step's text, with the step's number: each item of
    `steps`, or the text and expect of an item written as a mapping of them."""
    steps = _value_of(root, "steps")
    if not isinstance(steps, yaml.SequenceNode):
        return []
    values: list[tuple[int, yaml.Node]] = []
    for index, item in enumerate(steps.value):
        if isinstance(item, yaml.MappingNode) and _is_loop(item):
            continue  # its steps are a list of their own
        if isinstance(item, yaml.MappingNode) and _keys(item) <= STEP_KEYS:
            values += [(index, value) for key, value in item.value if str(key.value) in STEP_FIELDS]
        else:
            values.append((index, item))
    return values


def _is_loop(node: yaml.MappingNode) -> bool:
    """`for each NAME in EXPRESSION: [steps]` beside the loop's own keys."""
    headers = [key for key in _keys(node) if header_of(key) is not None]
    return len(headers) == 1 and _keys(node) - set(headers) <= STEP_KEYS


def _misread(node: yaml.Node, lines: list[str]) -> bool:
    """Whether YAML read what a person wrote as one step as something else."""
    if isinstance(node, yaml.SequenceNode):
        return True
    if isinstance(node, yaml.MappingNode):  # written on one line: `a: b` or `{...}`
        return (
            bool(node.flow_style)
            or (len(node.value) == 1 and node.value[0][1].end_mark.line == node.start_mark.line)
            or _holds_fields(node)
        )
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        rest = lines[node.end_mark.line][node.end_mark.column :]
        value = str(node.value)
        unbalanced = value.count('"') % 2 == 1 or value.count("`") % 2 == 1
        return unbalanced and rest.lstrip().startswith("#")
    return False


def _holds_fields(node: yaml.Node) -> bool:
    """A step written on several lines (`text` with an `expect:` under it, say) whose first
    line YAML split at a `": "`: its first key is text, not a field's name."""
    if not isinstance(node, yaml.MappingNode) or node.flow_style or len(node.value) < 2:
        return False
    key = node.value[0][0]
    return (
        isinstance(key, yaml.ScalarNode)
        and key.style is None
        and key.value not in STEP_FIELDS
        and any(c.isspace() for c in str(key.value))
    )


def _trap_on_line(path: Path, lines: list[str], mark: yaml.Mark | None) -> InvalidWorkflow | None:
    """A step on the line YAML stopped at (`- step`, `- text: step`, `expect: step`),
    unquoted, holding a trap."""
    if mark is None or mark.line >= len(lines):
        return None
    step = STEP_LINE.fullmatch(lines[mark.line].rstrip())
    if step is None or step["raw"].startswith(QUOTES) or not step["lead"].strip():
        return None
    reason = _reason(step["raw"])
    if reason is None:
        return None
    start = yaml.Mark("", 0, mark.line, len(step["lead"]), None, 0)
    index = _step_on_line(lines, mark.line, new_item="- " in step["lead"])
    return _trap(path, lines, start, step["raw"], reason, index=index)


def _step_on_line(lines: list[str], line: int, new_item: bool) -> int | None:
    """The number of the step on `line`, read from the file up to it (YAML stopped there, so
    what comes before reads), when that is inside `steps`."""
    try:
        root = yaml.compose("\n".join(lines[:line]) + "\n", Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode) or not root.value:
        return None
    last_key, steps = root.value[-1]
    if last_key.value != "steps":
        return None
    before = len(steps.value) if isinstance(steps, yaml.SequenceNode) else 0
    return before if new_item else before - 1


def _reason(raw: str) -> str | None:
    """Why YAML does not read `raw` as the text it is (the step is its subject)."""
    if raw.startswith("{"):
        return "starts with { so YAML reads it as JSON (a mapping)"
    if raw.startswith("["):
        return "starts with [ so YAML reads it as JSON (a list)"
    if raw[:1] and raw[0] in CANNOT_START:
        return f"starts with {raw[0]}, which YAML cannot read unquoted"
    if ": " in raw or raw.endswith(":"):
        return 'holds ": " so YAML reads it as a mapping'
    if " #" in raw:
        return 'holds " #" so YAML reads the rest of the line as a comment'
    return None


def _trap(
    path: Path,
    lines: list[str],
    start: yaml.Mark,
    raw: str,
    reason: str,
    *,
    index: int | None,
    as_text: bool = False,
) -> InvalidWorkflow:
    """The step quoted as it should be written: in its place (`- `, `text: `, `expect: `), or
    as `- text: ` when fields of its own follow it."""
    before = "- text: " if as_text else lines[start.line][: start.column].lstrip()
    written = f"{before}{_single_quoted(raw)}"
    subject = "this step" if index is None else f"step {index}"
    return InvalidWorkflow(
        f"{_where(path, start)}: {subject} {reason}; quote it: {written}",
        suggested_action="Quote the step as the message shows: in single quotes, a ' inside "
        "written twice ('')",
        quoted=written,
        **_position(path, start),
        **({} if index is None else {"step": index}),
    )


def _source_of(node: yaml.Node, lines: list[str]) -> str:
    """The text the person wrote for the node: to its end when it ends on its line (a
    trailing comment left out), else to the end of the line."""
    start = node.start_mark
    end = node.end_mark
    if isinstance(node, yaml.MappingNode) and not node.flow_style:
        end = node.value[-1][1].end_mark
    line = lines[start.line]
    cut_by_comment = isinstance(node, yaml.ScalarNode)
    if end.line == start.line and not cut_by_comment:
        return line[start.column : max(end.column, start.column + 1)].rstrip()
    return line[start.column :].rstrip()


def _single_quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- positions and fields -------------------------------------------------------------------


def _where(path: Path, mark: yaml.Mark) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def _position(path: Path, mark: yaml.Mark) -> dict[str, Any]:
    return {"file": str(path), "line": mark.line + 1, "column": mark.column + 1}


def _keys(node: yaml.MappingNode) -> set[str]:
    return {str(key.value) for key, _ in node.value}


def _value_of(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for name, value in node.value if name.value == key), None)


def _node_at(root: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """The deepest node on the error's path that the file has (a missing field: its parent)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        else:
            child = _value_of(node, str(part))
        if child is None:
            break
        node = child
    return node


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _step_index(loc: tuple[int | str, ...]) -> int | None:
    """The step an error's location is in (`steps.3.text`: 3), if any."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        return loc[1]
    return None


def _value_of_index(node: yaml.Node | None, index: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        item: yaml.Node = node.value[index]
        return item
    return None


def _shown_text(step: yaml.Node | None) -> str:
    """` (its text)`, shortened, for a step written as text or with a `text:`; else nothing."""
    text = _value_of(step, "text") if isinstance(step, yaml.MappingNode) else step
    if not isinstance(text, yaml.ScalarNode) or not str(text.value).strip():
        return ""
    value = " ".join(str(text.value).split())
    return f" ({value if len(value) <= SHOWN_CHARS else value[: SHOWN_CHARS - 1] + '…'})"


def _not_text(given: Any) -> str:
    """What YAML made of a step that is not text (nothing, a number, true or false)."""
    if given is None:
        return "is empty: a step is text, or text: with expect: under it"
    shown = str(given).lower() if isinstance(given, bool) else f"the number {given}"
    return f"is read by YAML as {shown}, not as text: quote it"


def _field_advice(detail: ErrorDetails, model: type[BaseModel]) -> str:
    """What to do about one field error: its allowed values, or the fields there are."""
    loc, context = detail["loc"], detail.get("ctx", {})
    field = _dotted(loc)
    if detail["type"] == "extra_forbidden":
        allowed = list(_model_at(model, loc[:-1]).model_fields)
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        meant = f"did you mean {near[0]}? " if near else ""
        return f"Remove or rename {loc[-1]} ({meant}the fields there are {', '.join(allowed)})"
    if "expected" in context:
        return f"Set {field} to one of {context['expected']}"
    if detail["type"] == "missing":
        return f"Add {field}"
    if detail["type"] == "model_type" and _step_index(loc) is not None and len(loc) == 2:
        return f"Write step {loc[1]} as text, or as text: with expect: under it"
    return f"Fix {field}: {detail['msg']}"


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model a location inside `model` is an instance of (a step, the config)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            continue  # an index into a list: the list's model stays the one
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:  # a step's schema, shown otherwise
        return _model_in(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            if (found := _model_in(argument)) is not None:
                return found
    return None
