"""Writing a run's input values into its steps: what each step carries besides its text stays."""

from __future__ import annotations

from domain.session import StepSpec
from domain.step_policy import OnFailure, StepPolicy
from engine.workflows.inputs import parsed_value, written_in


def test_the_values_are_written_in_and_each_steps_own_policy_kept() -> None:
    policy = StepPolicy(retries=3, on_failure=OnFailure.CONTINUE)
    steps = [
        StepSpec("GET /people/{{inputs.who}}", "expect json n == {{ inputs.n }}", policy),
        StepSpec("expect status 200"),
    ]

    written = written_in(steps, {"who": "ada", "n": 3})

    assert written == [
        StepSpec("GET /people/ada", "expect json n == 3", policy),
        StepSpec("expect status 200"),
    ]


def test_a_command_line_value_is_json_when_it_reads_as_json_and_text_otherwise() -> None:
    assert [parsed_value(t) for t in ("3", "true", "[1, 2]", "ada", "3 apples")] == [
        3,
        True,
        [1, 2],
        "ada",
        "3 apples",
    ]
