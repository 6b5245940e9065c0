"""How a view's rows go to their table, and what a batch works out once for every view."""

from __future__ import annotations

import json
import math
from uuid import uuid4

from domain.session import StepSpec, WorkflowSession
from projections.view import Batch, Recorded, _adapted, _without_nul, erasures


def test_a_dict_goes_as_the_json_of_its_values_without_nul_nor_infinite_numbers() -> None:
    for value in (
        {"a": 1, "b": [1.5, "x", None], "c": {"d": True}},
        {"text": "a\x00b", "nested": {"k\x00": ["\x00"]}},
        {"n": math.nan, "i": [math.inf, -math.inf]},
        {"looks_like_nul": "\\u0000", "tuple": (1, "a\x00")},
        {1: "an int key"},
    ):
        assert _adapted(value) == json.dumps(_without_nul(value))
    assert json.loads(_adapted({"t": "a\x00b", "n": math.nan})) == {"t": "ab", "n": None}
    assert _adapted({}) == "{}"


def session_events(erase: bool) -> list[Recorded]:
    session = WorkflowSession.create(
        session_id=uuid4(), name="w", steps=[StepSpec("GET /")], tenant="acme", actor="test"
    )
    session.start_step(0)
    if erase:
        session.cancel(actor="test")
        session.erase(reason="asked", actor="test")
    return [Recorded(n, event) for n, event in enumerate(session.collect_events(), start=1)]


def test_a_batch_finds_its_erasures_once_as_a_list_does_and_each_caller_gets_its_own() -> None:
    events = session_events(erase=False) + session_events(erase=True)
    batch = Batch(events)

    found = erasures(batch)
    assert found == erasures(events)
    assert [type(r.event) for r in found] == [type(events[-1].event)]
    found.clear()
    assert erasures(batch) == erasures(events)
    assert erasures(Batch(session_events(erase=False))) == []
