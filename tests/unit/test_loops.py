"""A loop's expansion in the domain: the items it refuses (values the log cannot keep, or
that would ask for a placeholder), and the bounds on what its iterations add to a session."""

from __future__ import annotations

from typing import Any

import pytest

from domain.expressions import Expression, ExpressionError
from domain.loops import MAX_SESSION_EXPANSION_CHARS, Loop, LoopRefused
from domain.session import StepSpec, WorkflowSession


def body(*texts: str, expect: str | None = None) -> tuple[dict[str, Any], ...]:
    return tuple({"text": text, "expect": expect, "policy": {}} for text in texts)


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("item", "says"),
    [
        (float("inf"), "a number JSON cannot write"),
        (float("nan"), "a number JSON cannot write"),
        ({"_type_": "decimal", "_data_": "1"}, "_type_ and _data_"),
        ("a\x00b", "NUL"),
        ("\ud800", "lone surrogate"),
        (deep(2_000), "nested more than 32 levels"),
        ({"k": "{{secrets.TOKEN}}"}, "holds {{, }} or NUL"),
        ({"{{vars": 1}, "holds {{, }} or NUL"),
        ("x" * 10_001, "the limit is 10000"),
    ],
)
def test_an_item_the_log_cannot_keep_or_that_asks_for_a_placeholder_is_refused(
    item: Any, says: str
) -> None:
    loop = Loop("x", "vars.xs", body("GET /{{x}}"))
    with pytest.raises(LoopRefused) as refused:
        loop.iterations([item], {})
    assert refused.value.code == "LOOP_ITEM_INVALID"
    assert says in str(refused.value)


def test_an_infinite_number_written_in_an_expression_is_refused() -> None:
    with pytest.raises(ExpressionError, match="Constant is not part of the language"):
        Expression.parse("[1e999]")


def test_a_value_nested_too_deep_to_compare_is_an_expression_error() -> None:
    values = {"vars": {"x": deep(5_000), "y": deep(5_000)}, "inputs": {}, "result": None}
    with pytest.raises(ExpressionError, match="nested too deep"):
        Expression.parse("vars.x == vars.y").condition(values)


def session_with(loop: Loop) -> WorkflowSession:
    session = WorkflowSession.create(
        name="loops", steps=[StepSpec(loop.header, loop=loop)], tenant="acme", actor="alice"
    )
    session.start_step(0)
    return session


def test_an_iterations_expect_is_held_to_a_steps_length() -> None:
    session = session_with(Loop("x", "vars.xs", body("GET /", expect="{{x}}" * 399)))
    with pytest.raises(LoopRefused, match="the expect of step 0 of its iterations"):
        session.expand_loop(0, ["y" * 10])
    assert len(session.steps) == 1  # nothing was put in


def run_to_the_next_loop(session: WorkflowSession) -> int:
    """Complete the steps before the next loop; its index."""
    while session.steps[index := session.current_step].loop is None:
        session.start_step(index)
        session.complete_step(index, summary="done")
    return index


def test_a_sessions_loops_together_add_no_more_than_their_bound() -> None:
    """Six inner loops of about 0.8 MB each: the fifth or sixth would pass 4 MB."""
    inner = Loop("y", "vars.ys", body("GET /{{y}}"))
    session = session_with(Loop("x", "vars.xs", (StepSpec(inner.header, loop=inner).to_dict(),)))
    session.expand_loop(0, list(range(6)))
    items = ["z" * 1_900] * 200
    refusal: LoopRefused | None = None
    expanded = 0
    while refusal is None and expanded < 6:
        header = run_to_the_next_loop(session)
        session.start_step(header)
        try:
            session.expand_loop(header, items)
            expanded += 1
        except LoopRefused as refused:
            refusal = refused
    assert refusal is not None
    assert refusal.code == "LOOP_LIMIT_EXCEEDED"
    assert f"{MAX_SESSION_EXPANSION_CHARS:,} characters" in str(refusal)
    assert 4 <= expanded < 6
