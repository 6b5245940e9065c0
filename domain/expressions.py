"""The small language of a step's `if:` and a loop's `for each NAME in ...`: comparisons,
`and`, `or`, `not`, `in`, `len(...)` and dotted paths over `vars`, `inputs`, `result` and
the loop variables in scope, with literals (strings, numbers, true, false, null, lists).

Parsed with Python's own parser (`ast`, mode "eval") and evaluated by walking the tree here:
only the node types below are accepted, so nothing is ever called or imported, no attribute
of a Python object is ever read (paths look up keys of JSON values), and every value is JSON.
It is strict, because a condition that quietly reads as false would pass a step that did not
happen: a path that is not there, a comparison of a number with a string, or a condition
that gives anything but true or false is an error that points at the expression.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION = 500
"""Characters in an expression: a condition is a line, not a program."""
MAX_NODES = 100
ROOTS = ("vars", "inputs", "result")
"""The names every expression may start a path with (besides the loop variables)."""
LITERALS: Mapping[str, Any] = {"true": True, "false": False, "null": None}
"""JSON's and YAML's spellings, beside Python's True, False and None."""


class ExpressionError(ValueError):
    """An expression that cannot be read, or cannot be evaluated on the values it was given:
    the message says what and where (`at` is the 0-based column, when known)."""

    def __init__(self, expression: str, problem: str, at: int | None = None) -> None:
        self.expression = expression
        self.problem = problem
        self.at = at
        super().__init__(self.described())

    def described(self) -> str:
        """`vars.count > "3": cannot compare a number with a string (at column 0)`."""
        where = f" (at column {self.at + 1})" if self.at is not None else ""
        return f"{self.expression}: {self.problem}{where}"


_COMPARISONS: Mapping[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ORDERINGS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


@dataclass(frozen=True)
class Expression:
    """A parsed expression; `evaluate` it on the session's values."""

    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str, names: Collection[str] = ()) -> Expression:
        """Parse and check `text`: only the language's forms, and only paths that start from
        `vars`, `inputs`, `result` or one of `names` (the loop variables in scope)."""
        stripped = text.strip()
        if not stripped:
            raise ExpressionError(text, "the expression is empty")
        if len(stripped) > MAX_EXPRESSION:
            raise ExpressionError(stripped[:40] + "…", f"longer than {MAX_EXPRESSION} characters")
        try:
            tree = ast.parse(stripped, mode="eval").body
        except SyntaxError as error:
            at = error.offset - 1 if error.offset else None
            raise ExpressionError(stripped, f"not an expression: {error.msg}", at) from None
        except (RecursionError, MemoryError, ValueError):
            raise ExpressionError(stripped, "nested too deep to read") from None
        _Checker(stripped, {*ROOTS, *names}).check(tree)
        return cls(stripped, tree)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The expression's value over `values` (`vars`, `inputs`, `result`, loop variables).
        A value nested too deep to compare (a target's answer can be) is an ExpressionError
        like any other."""
        try:
            return _Evaluator(self.text, values).value(self.tree)
        except RecursionError:
            raise ExpressionError(self.text, "a value is nested too deep to compare") from None

    def condition(self, values: Mapping[str, Any]) -> bool:
        """The value, which must be true or false (see the module's note)."""
        value = self.evaluate(values)
        if not isinstance(value, bool):
            raise ExpressionError(
                self.text,
                f"a condition must be true or false, and this gives {_kind(value)}: compare "
                "it with something (==, >, in ...)",
            )
        return value

    def items(self, values: Mapping[str, Any]) -> list[Any]:
        """The value, which must be a list: what a loop goes over."""
        value = self.evaluate(values)
        if not isinstance(value, list):
            raise ExpressionError(
                self.text, f"a loop goes over a list, and this gives {_kind(value)}"
            )
        return value


class _Checker:
    """Refuses every form the language does not have, before anything is evaluated."""

    def __init__(self, text: str, names: Collection[str]) -> None:
        self.text = text
        self.names = names
        self.nodes = 0

    def check(self, node: ast.AST) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(self.text, f"more than {MAX_NODES} parts")
        match node:
            case ast.Compare(ops=ops) if any(isinstance(op, ast.Is | ast.IsNot) for op in ops):
                raise ExpressionError(
                    self.text, "`is` is not part of the language: use ==", _column(node)
                )
            case ast.BoolOp() | ast.Compare() | ast.List() | ast.Tuple():
                pass
            case ast.UnaryOp(op=ast.Not() | ast.USub()):
                pass
            case ast.Constant(value=value) if _is_literal(value):
                pass
            case ast.Name(id=name):
                self._check_name(name, node)
            case ast.Attribute(attr=attr) if not attr.startswith("_"):
                pass
            case ast.Subscript(slice=ast.Constant() | ast.UnaryOp()):
                pass
            case ast.Call(func=ast.Name(id="len"), args=[_], keywords=[]):
                self.check(node.args[0])
                return
            case ast.boolop() | ast.cmpop() | ast.unaryop() | ast.Load():
                return
            case _:
                raise ExpressionError(self.text, _refusal(node), _column(node))
        for child in ast.iter_child_nodes(node):
            self.check(child)

    def _check_name(self, name: str, node: ast.Name) -> None:
        if name in self.names or name in LITERALS:
            return
        known = ", ".join(sorted(self.names))
        raise ExpressionError(
            self.text,
            f"unknown name {name!r}: a path starts with one of {known} (vars.{name} is a "
            "saved variable)",
            _column(node),
        )


def _refusal(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return "the only function is len(...)"
    if isinstance(node, ast.Attribute):
        return "a path's parts may not start with _"
    if isinstance(node, ast.Subscript):
        return 'an index must be a number or a quoted key ([0], ["name"])'
    if isinstance(node, ast.BinOp | ast.AugAssign):
        return "there is no arithmetic: compare values (==, !=, <, >, in) instead"
    return f"{type(node).__name__} is not part of the language"


def _column(node: ast.AST) -> int | None:
    return getattr(node, "col_offset", None)


class _Evaluator:
    def __init__(self, text: str, values: Mapping[str, Any]) -> None:
        self.text = text
        self.values = values

    def fail(self, problem: str, node: ast.AST) -> ExpressionError:
        return ExpressionError(self.text, problem, _column(node))

    def value(self, node: ast.expr) -> Any:  # noqa: PLR0911 - one case per form
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                return self._name(name, node)
            case ast.Attribute(value=inner, attr=key):
                return self._key(self.value(inner), key, node)
            case ast.Subscript(value=inner, slice=index):
                return self._key(self.value(inner), self.value(index), node)
            case ast.List(elts=elements) | ast.Tuple(elts=elements):
                return [self.value(element) for element in elements]
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self._boolean(operand, "not")
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -self._number(operand)
            case ast.BoolOp(op=op, values=operands):
                return self._bool_op(isinstance(op, ast.And), operands)
            case ast.Compare(left=left, ops=ops, comparators=rights):
                return self._compare(left, ops, rights)
            case ast.Call(args=[argument]):
                return self._len(argument)
        raise self.fail(_refusal(node), node)  # the checker lets none of the rest through

    def _name(self, name: str, node: ast.Name) -> Any:
        if name in LITERALS:
            return LITERALS[name]
        if name not in self.values:
            raise self.fail(f"{name} has no value here", node)
        return self.values[name]

    def _key(self, container: Any, key: Any, node: ast.expr) -> Any:
        path = ast.unparse(node)
        if isinstance(container, dict):
            if not isinstance(key, str) or key not in container:
                raise self.fail(f"{path} is not there{self._known(container, node)}", node)
            return container[key]
        if isinstance(container, list):
            if not isinstance(key, int) or isinstance(key, bool):
                raise self.fail(f"{path}: a list is indexed by a number", node)
            if not -len(container) <= key < len(container):
                raise self.fail(f"{path} is past the end of a list of {len(container)}", node)
            return container[key]
        raise self.fail(f"{path}: {_kind(container)} has no parts", node)

    def _known(self, container: dict[str, Any], node: ast.expr) -> str:
        """The names there are, for a path from a root (`vars.NAME`: names the workflow's
        author chose); never the keys of a value, which a target's answer may have made of
        anything (a token)."""
        inner = node.value if isinstance(node, ast.Attribute | ast.Subscript) else None
        if not isinstance(inner, ast.Name) or inner.id not in ROOTS:
            return ""
        return f" (there is {', '.join(sorted(container)[:10]) or 'nothing'})"

    def _boolean(self, node: ast.expr, word: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise self.fail(
                f"`{word}` takes true or false, and {ast.unparse(node)} is {_kind(value)}", node
            )
        return value

    def _number(self, node: ast.expr) -> int | float:
        value = self.value(node)
        if not _is_number(value):
            raise self.fail(f"{ast.unparse(node)} is {_kind(value)}, not a number", node)
        return value  # type: ignore[no-any-return]

    def _bool_op(self, conjunction: bool, operands: list[ast.expr]) -> bool:
        word = "and" if conjunction else "or"
        for operand in operands:  # short-circuits as people read it
            if self._boolean(operand, word) is not conjunction:
                return not conjunction
        return conjunction

    def _compare(self, left: ast.expr, ops: list[ast.cmpop], rights: list[ast.expr]) -> bool:
        before = self.value(left)
        for op, right_node in zip(ops, rights, strict=True):
            after = self.value(right_node)
            if not self._holds(op, before, after, right_node):
                return False
            before = after
        return True

    def _holds(self, op: ast.cmpop, left: Any, right: Any, node: ast.expr) -> bool:
        if isinstance(op, ast.In | ast.NotIn):
            found = self._contains(right, left, node)
            return found if isinstance(op, ast.In) else not found
        if isinstance(op, _ORDERINGS) and not _orderable(left, right):
            raise self.fail(f"cannot order {_kind(left)} against {_kind(right)}", node)
        compare = _COMPARISONS.get(type(op))
        if compare is None:
            raise self.fail("`is` is not part of the language: use ==", node)
        return compare(left, right)

    def _contains(self, container: Any, item: Any, node: ast.expr) -> bool:
        if isinstance(container, str):
            if not isinstance(item, str):
                raise self.fail(f"a string holds strings, not {_kind(item)}", node)
            return item in container
        if isinstance(container, dict):
            if not isinstance(item, str):
                raise self.fail(f"an object's keys are strings, not {_kind(item)}", node)
            return item in container
        if isinstance(container, list):
            return item in container
        raise self.fail(
            f"`in` looks inside a list, a string or an object, not {_kind(container)}", node
        )

    def _len(self, node: ast.expr) -> int:
        value = self.value(node)
        if not isinstance(value, str | list | dict):
            raise self.fail(f"len() of {_kind(value)}", node)
        return len(value)


def _is_literal(value: Any) -> bool:
    """A JSON value written in the expression: not bytes, `...`, `1j`, nor `1e999`."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int | str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _orderable(left: Any, right: Any) -> bool:
    return (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)
