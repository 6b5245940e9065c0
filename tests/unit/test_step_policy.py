"""A step's own policy: how a workflow file and the API write it, how it is recorded, and the
limits a step runs with under it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.http.schemas import CreateSession
from domain.errors import InvalidWorkflow
from domain.limits import LIMITS, STEP_LIMITS, StepLimit
from domain.step_policy import OnFailure, StepPolicy
from engine.loop.limits import Limits
from engine.scheduler import request_of_body
from engine.settings import Settings
from engine.workflows.file import StepEntry, load_workflow


def workflow(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text("\n".join(["name: Policies", "steps:", *lines]) + "\n")
    return path


def test_a_workflow_file_gives_a_step_its_own_policy_in_either_yaml_style(
    tmp_path: Path,
) -> None:
    path = workflow(
        tmp_path,
        "  - GET /login",
        "  - {text: GET /flaky, retries: 3, retry_backoff_ms: 50}",
        "  - text: Look around",
        "    expect: the page lists todos",
        "    timeout_ms: 5000",
        "    max_turns: 4",
        "    on_failure: continue",
    )

    specs = load_workflow(path).step_specs()

    assert [spec.policy for spec in specs] == [
        StepPolicy(),
        StepPolicy(retries=3, retry_backoff_ms=50),
        StepPolicy(timeout_ms=5000, max_turns=4, on_failure=OnFailure.CONTINUE),
    ]
    assert specs[2].expect == "the page lists todos"


@pytest.mark.parametrize("step_limit", STEP_LIMITS.values(), ids=list(STEP_LIMITS))
def test_a_steps_own_limit_is_bounded_below_as_the_limit_it_stands_for(
    step_limit: StepLimit,
) -> None:
    least = LIMITS[step_limit.limit].ge - step_limit.offset
    entry = StepEntry.model_validate({"text": "s", step_limit.name: least})
    assert entry.step_policy().limits_set() == {step_limit.name: least}
    with pytest.raises(ValidationError, match=f"greater than or equal to {least}"):
        StepEntry.model_validate({"text": "s", step_limit.name: least - 1})


@pytest.mark.parametrize(
    ("line", "field"),
    [("    retries: -1", "retries"), ("    on_failure: skip", "on_failure")],
)
def test_a_bad_step_policy_in_a_file_is_refused_naming_the_step_and_field(
    tmp_path: Path, line: str, field: str
) -> None:
    path = workflow(tmp_path, "  - GET /", "  - text: GET /flaky", line)

    with pytest.raises(InvalidWorkflow) as refused:
        load_workflow(path)

    error = refused.value.to_standard_error()
    assert error.details["field"].endswith(field)
    assert error.details["line"] == 5  # the step's own line of the field


def test_a_policy_records_only_what_it_sets_and_reads_back_the_same() -> None:
    policy = StepPolicy(retries=0, timeout_ms=100, on_failure=OnFailure.CONTINUE)

    recorded = policy.to_dict()

    assert recorded == {"retries": 0, "timeout_ms": 100, "on_failure": "continue"}
    assert StepPolicy.from_dict(recorded) == policy
    assert StepPolicy().to_dict() == {}
    assert StepPolicy.from_dict({}) == StepPolicy()
    assert policy.described() == "retries 0, timeout_ms 100, on_failure continue"


def test_a_step_runs_with_its_own_values_over_the_sessions_limits_and_no_others() -> None:
    session = Limits(**{name: int(getattr(Settings(), name)) for name in LIMITS})
    policy = StepPolicy(retries=2, retry_backoff_ms=5, timeout_ms=700, max_turns=3)

    step = session.for_step(policy)

    assert (step.max_attempts, step.retry_backoff_ms) == (3, 5)
    assert (step.step_timeout_ms, step.max_turns_per_step) == (700, 3)
    assert step.token_budget == session.token_budget
    assert session.for_step(StepPolicy()) == session


def test_a_limit_names_the_setting_it_comes_from_for_a_step() -> None:
    policy = StepPolicy(timeout_ms=700)
    assert policy.setting_of("step_timeout_ms") == "timeout_ms"
    assert policy.setting_of("max_turns_per_step") == "max_turns_per_step"


def test_a_schedules_recorded_workflow_gives_its_sessions_the_steps_policies() -> None:
    body = CreateSession.model_validate(
        {
            "name": "nightly",
            "steps": ["GET /login", {"text": "GET /flaky", "retries": 2, "on_failure": "continue"}],
        }
    )

    fired = request_of_body(body.model_dump(mode="json"))  # as a schedule records it

    assert [step.policy for step in fired.steps] == [
        StepPolicy(),
        StepPolicy(retries=2, on_failure=OnFailure.CONTINUE),
    ]
    assert fired.steps == body.step_specs()
