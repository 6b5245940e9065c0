from __future__ import annotations

import pytest

from engine.context import within_budget
from engine.secrets import MissingSecret, Secrets


def test_placeholders_resolve_from_stepline_secret_variables() -> None:
    secrets = Secrets.from_environment({"STEPLINE_SECRET_API_TOKEN": "tok-abc", "OTHER": "x"})
    assert secrets.names == ["API_TOKEN"]
    assert secrets.resolve("Bearer {{ secrets.API_TOKEN }}") == "Bearer tok-abc"


def test_a_missing_secret_names_the_variable_to_set() -> None:
    with pytest.raises(MissingSecret, match="set STEPLINE_SECRET_NOPE"):
        Secrets({}).resolve("{{secrets.NOPE}}")


def test_values_are_redacted_to_their_placeholders_everywhere() -> None:
    secrets = Secrets({"A": "hunter2-long", "B": "hunter2-long-and-longer"})
    data = {"x": ["pw=hunter2-long-and-longer", {"y": "hunter2-long"}], "n": 3}
    assert secrets.redact_all(data) == {
        "x": ["pw={{secrets.B}}", {"y": "{{secrets.A}}"}],
        "n": 3,
    }


def test_very_short_values_are_not_redacted_from_ordinary_text() -> None:
    assert Secrets({"PIN": "42"}).redact("answer 42") == "answer 42"


def test_the_context_keeps_the_most_recent_actions_within_budget() -> None:
    entries = [f"action {i} " + "x" * 90 for i in range(10)]
    kept = within_budget(entries, budget=350)
    assert kept[0] == "[7 earlier actions omitted]"
    assert kept[1:] == entries[-3:]
