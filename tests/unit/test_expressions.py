"""The language of `if:` and `for each`: what it reads, what it refuses before anything runs,
and that nothing a tenant writes or a target answers raises anything but ExpressionError."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.expressions import Expression, ExpressionError

VALUES: dict[str, Any] = {
    "vars": {"todos": [{"title": "a", "done": False}, {"title": "b", "done": True}], "n": 3},
    "inputs": {"env": "prod", "names": ["ada", "bob"]},
    "result": {"status": "completed", "summary": "ok", "error_code": None},
    "item": {"id": 7, "tags": ["x"]},
}


@pytest.mark.parametrize(
    ("expression", "holds"),
    [
        ("vars.n > 2", True),
        ("vars.n >= 3 and vars.n <= 3", True),
        ("not vars.todos[0].done", True),
        ('vars.todos[1]["title"] == "b"', True),
        ("len(vars.todos) == 2 and len(inputs.names[0]) == 3", True),
        ('inputs.env in ["prod", "staging"]', True),
        ('"bob" not in inputs.names', False),
        ('"x" in item.tags or item.id == 8', True),
        ('result.status == "completed" and result.error_code == null', True),
        ("vars.todos[-1].done == true", True),
        ("1 < vars.n < 5", True),
        ('"title" in vars.todos[0]', True),
        ('"od" in "prod"', True),
    ],
)
def test_a_condition_reads_paths_literals_and_comparisons(expression: str, holds: bool) -> None:
    assert Expression.parse(expression, ["item"]).condition(VALUES) is holds


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("__import__('os').system('id')", "the only function is len"),
        ("vars.todos.__class__", "may not start with _"),
        ("vars.n + 1 > 2", "there is no arithmetic"),
        ("vars.n * 2 > 2", "there is no arithmetic"),
        ("[x for x in vars.todos]", "ListComp is not part of the language"),
        ("(y := 1) == 1", "NamedExpr is not part of the language"),
        ('f"{vars.n}" == "3"', "JoinedStr is not part of the language"),
        ("lambda: 1", "Lambda is not part of the language"),
        ("vars.todos[0:1] == []", "an index must be a number or a quoted key"),
        ("{'a': 1} == vars.n", "Dict is not part of the language"),
        ("vars.n is 3", "`is` is not part of the language"),
        ("vars.n if vars.n else 1", "IfExp is not part of the language"),
        ("*vars.todos", "not an expression"),
        ("len(vars.n, 2) == 1", "the only function is len"),
        ("vars.len(1)", "the only function is len"),
        ("user.name == 'x'", "unknown name 'user'"),
        ("vars.n >", "not an expression"),
        ("", "the expression is empty"),
        ("x" * 501, "longer than 500 characters"),
        (" or ".join(["1 < 2"] * 30), "more than 100 parts"),
        ("vars.n == 1\x00", "not an expression"),
    ],
)
def test_what_is_not_the_language_is_refused_before_anything_runs(
    expression: str, says: str
) -> None:
    with pytest.raises(ExpressionError) as refused:
        Expression.parse(expression)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("vars.missing == 1", "vars.missing is not there (there is n, todos)"),
        ('vars.n > "2"', "cannot order a number against a string"),
        ("vars.n", "a condition must be true or false, and this gives a number"),
        ("vars.todos[5].done", "is past the end of a list of 2"),
        ("vars.n.x == 1", "a number has no parts"),
        ("not vars.n", "`not` takes true or false"),
        ("vars.n and true", "`and` takes true or false"),
        ("-inputs.env == 1", "is a string, not a number"),
        ("len(vars.n) == 1", "len() of a number"),
        ("[1] in vars.todos[0]", "an object's keys are strings"),
        ("1 in inputs.env", "a string holds strings"),
        ("vars.todos < vars.todos", "cannot order a list against a list"),
    ],
)
def test_what_cannot_be_evaluated_on_the_values_says_what_and_where(
    expression: str, says: str
) -> None:
    with pytest.raises(ExpressionError) as failed:
        Expression.parse(expression).condition(VALUES)
    assert says in str(failed.value)
    assert expression in str(failed.value)


def test_a_loop_goes_over_a_list_and_nothing_else() -> None:
    assert Expression.parse("inputs.names").items(VALUES) == ["ada", "bob"]
    with pytest.raises(ExpressionError, match="a loop goes over a list, and this gives an object"):
        Expression.parse("vars.todos[0]").items(VALUES)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=80))
def test_no_text_raises_anything_but_an_expression_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        Expression.parse(text, ["item"]).evaluate(VALUES)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=10,
    ),
    st.sampled_from(["vars.x == vars.x", "vars.x < 1", "1 in vars.x", "len(vars.x) > 0",
                     '"a" in vars.x', "vars.x[0] == 1", "not vars.x", "vars.x.a == 1"]),
)  # fmt: skip
def test_no_saved_value_raises_anything_but_an_expression_error(value: Any, text: str) -> None:
    with contextlib.suppress(ExpressionError):
        Expression.parse(text).condition({**VALUES, "vars": {"x": value}})
