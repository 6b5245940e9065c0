"""`if:` and `for each` against the example app: steps skipped and recorded so, loops that
become one iteration per item of a list saved earlier (the app sees exactly one request per
item), bounds and bad expressions failing with their codes, and replays and forks that take
the same path."""

from __future__ import annotations

import pytest
import yaml

from domain.errors import InvalidWorkflow
from domain.session import SessionStatus, StepSpec, StepState, StepStatus, WorkflowSession
from engine.loop.replay import fork_request, replay_request
from engine.store.app import Stepline
from engine.workflows.file import WorkflowFile
from tests.conftest import PASSWORD, effects, example_target
from tests.integration.conftest import (
    LoopFactory,
    assert_stored_nowhere,
    drive,
    event_types,
    start_session,
)


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    return fresh_app


def steps_of(written: str) -> list[StepSpec]:
    """The steps of a workflow file's `steps:` as a person writes them."""
    document = yaml.safe_load(f"name: test\nsteps:\n{written}")
    return WorkflowFile.model_validate(document).step_specs()


THREE_SAVED = """
  - 'POST /effects with {"name": "a"}'
  - 'POST /effects with {"name": "b"}'
  - 'POST /effects with {"name": "c"}'
  - GET /effects
  - save json applied as applied
"""


def statuses(session: WorkflowSession) -> list[str]:
    return [step.status.value for step in session.steps]


# ---- if: ------------------------------------------------------------------------------------


def test_a_false_condition_skips_its_step_and_a_true_one_runs_it(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(
        THREE_SAVED
        + """
  - text: 'POST /effects with {"name": "more-than-two"}'
    if: len(vars.applied) > 2
  - text: 'POST /effects with {"name": "none"}'
    if: len(vars.applied) == 0
  - text: 'POST /effects with {"name": "after-skip"}'
    if: result.status == "completed" and vars.applied[0].name == "a"
"""
    )
    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.COMPLETED
    assert statuses(session)[5:] == ["completed", "skipped", "completed"]
    assert session.steps[6].summary == "skipped: if len(vars.applied) == 0 was false"
    assert session.steps[6].attempts == 0  # never started
    assert effects(target) == ["a", "b", "c", "more-than-two", "after-skip"]
    assert event_types(loop.app, session.id).count("StepSkipped") == 1
    assert session.outcome == "7 of 8 steps completed, 1 skipped (if: false)"


def test_a_condition_reads_the_inputs_the_session_was_given(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(
        """
  - text: 'POST /effects with {"name": "prod-only"}'
    if: inputs.env == "prod"
  - text: 'POST /effects with {"name": "always"}'
"""
    )
    staging = start_session(loop, steps, target, inputs={"env": "staging"})
    assert statuses(drive(loop, staging)) == ["skipped", "completed"]
    prod = start_session(loop, steps, target, inputs={"env": "prod"})
    assert statuses(drive(loop, prod)) == ["completed", "completed"]
    assert effects(target) == ["always", "prod-only", "always"]


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("vars.missing == 1", "vars.missing is not there"),
        ('len(vars.applied) > "2"', "cannot order a number against a string"),
        ("vars.applied", "a condition must be true or false"),
    ],
)
def test_a_condition_that_cannot_be_evaluated_fails_its_step_naming_it(
    make_loop: LoopFactory, target: str, condition: str, says: str
) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(THREE_SAVED + f"  - text: 'GET /effects'\n    if: '{condition}'\n")
    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.FAILED
    failed = session.steps[5]
    assert failed.status is StepStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "EXPRESSION_FAILED"
    assert condition in failed.error["message"]
    assert says in failed.error["message"]


def test_a_condition_that_is_not_the_language_is_refused_when_the_session_is_created() -> None:
    for written, says in [
        ("__import__('os').system('id')", "the only function is len"),
        ("vars.a.__class__", "may not start with _"),
        ("vars.n + 1 > 2", "there is no arithmetic"),
        ("user.name == 'x'", "unknown name 'user'"),
        ("vars.n >", "not an expression"),
    ]:
        steps = [StepSpec("GET /", condition=written)]
        with pytest.raises(InvalidWorkflow, match=r"steps\[0\]\.if") as refused:
            WorkflowSession.create(name="t", steps=steps, tenant="acme", actor="alice")
        assert says in str(refused.value)


# ---- for each -----------------------------------------------------------------------------


LOOP_OVER_APPLIED = """
  - for each effect in vars.applied:
      - 'POST /effects with {"name": "again-{{effect.name}}"}'
      - text: expect status 201
        if: effect.name != "b"
    max_iterations: 5
  - GET /effects
"""


def test_a_loop_runs_its_steps_once_per_item_of_a_saved_list(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session = drive(loop, start_session(loop, steps_of(THREE_SAVED + LOOP_OVER_APPLIED), target))

    assert session.status is SessionStatus.COMPLETED
    assert effects(target) == ["a", "b", "c", "again-a", "again-b", "again-c"]
    header = session.steps[5]
    assert (header.text, header.status, header.summary) == (
        "for each effect in vars.applied",
        StepStatus.COMPLETED,
        "3 iterations",
    )
    iterations = session.steps[6:12]
    assert [step.text for step in iterations[::2]] == [
        f'POST /effects with {{"name": "again-{name}"}}' for name in "abc"
    ]
    assert [(s.origin or {}).get("iteration") for s in iterations] == [0, 0, 1, 1, 2, 2]
    assert statuses(session)[6:] == [
        "completed", "completed", "completed", "skipped", "completed", "completed", "completed"
    ]  # fmt: skip
    assert len(session.steps) == 13
    expanded = [
        e for e in loop.app.history(session.id) if isinstance(e, WorkflowSession.LoopExpanded)
    ]
    assert [(e.step_index, e.items, len(e.steps)) for e in expanded] == [(5, 3, 6)]


def test_a_loop_over_more_items_than_its_bound_fails_with_a_named_code(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    bounded = LOOP_OVER_APPLIED.replace("max_iterations: 5", "max_iterations: 2")
    session = drive(loop, start_session(loop, steps_of(THREE_SAVED + bounded), target))

    assert session.status is SessionStatus.FAILED
    assert session.error is not None
    assert session.error["code"] == "LOOP_LIMIT_EXCEEDED"
    assert "3 items, more than its max_iterations (2)" in session.error["message"]
    assert effects(target) == ["a", "b", "c"]  # not one iteration ran
    assert len(session.steps) == 7  # nothing was expanded


def test_a_loop_item_that_holds_a_placeholder_is_refused(
    make_loop: LoopFactory, target: str
) -> None:
    """A value an answer gave, written into a step, must not ask for a variable or a secret."""
    loop = make_loop(ai=False)
    steps = steps_of(
        """
  - 'POST /effects with {"name": "\\u007b\\u007bvars.applied"}'
  - GET /effects
  - save json applied as applied
"""
        + LOOP_OVER_APPLIED
    )
    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.FAILED
    assert session.error is not None
    assert session.error["code"] == "LOOP_ITEM_INVALID"
    assert [name for name in effects(target) if name.startswith("again")] == []


def test_a_loop_over_what_is_not_a_list_fails_naming_the_expression(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(THREE_SAVED + LOOP_OVER_APPLIED.replace("vars.applied:", "vars.applied[0]:"))
    session = drive(loop, start_session(loop, steps, target))

    assert session.error is not None
    assert session.error["code"] == "EXPRESSION_FAILED"
    assert "vars.applied[0]: a loop goes over a list" in session.error["message"]


def test_nested_loops_bind_both_variables(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(
        THREE_SAVED
        + """
  - for each outer in vars.applied:
      - for each inner in vars.applied:
          - text: 'POST /effects with {"name": "{{outer.name}}{{inner.name}}"}'
            if: outer.name != inner.name
"""
    )
    session = drive(loop, start_session(loop, steps, target))

    assert session.status is SessionStatus.COMPLETED
    assert effects(target)[3:] == ["ab", "ac", "ba", "bc", "ca", "cb"]


def test_a_secret_an_answer_echoed_never_reaches_the_log_through_a_loop(
    make_loop: LoopFactory, target: str, fresh_database_url: str
) -> None:
    """The tenant's secret, sent in a body the app echoes back, is in the saved list: the
    loop refuses the item rather than record the value in its iterations' steps."""
    loop = make_loop(ai=False)
    steps = steps_of(
        """
  - 'POST /effects with {"name": "{{secrets.DEMO_PASSWORD}}"}'
  - GET /effects
  - save json applied as applied
"""
        + LOOP_OVER_APPLIED
    )
    session = drive(loop, start_session(loop, steps, target))

    assert effects(target) == [PASSWORD]  # it was sent, and echoed
    assert session.error is not None
    assert session.error["code"] == "LOOP_ITEM_INVALID"
    assert_stored_nowhere(fresh_database_url, PASSWORD)


# ---- replay and fork ------------------------------------------------------------------------


def path_of(session: WorkflowSession) -> list[tuple[str, str]]:
    return path_of_steps(session.steps)


def path_of_steps(steps: list[StepState]) -> list[tuple[str, str]]:
    return [(step.text, step.status.value) for step in steps]


def test_a_replay_takes_the_same_path_through_skips_and_loop_iterations(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(THREE_SAVED + LOOP_OVER_APPLIED)
    source = drive(loop, start_session(loop, steps, target))
    with example_target().serving(password=PASSWORD) as again:
        replay = loop.app.create(
            replay_request(source, strict=True, base_url=again), tenant="acme", actor="alice"
        )
        replayed = drive(loop, replay.id)
        assert effects(again) == effects(target)

    assert replayed.status is SessionStatus.COMPLETED
    assert path_of(replayed) == path_of(source)
    assert event_types(loop.app, replayed.id).count("LoopExpanded") == 1


def test_a_fork_from_inside_a_loop_keeps_the_iterations_it_had(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source = drive(loop, start_session(loop, steps_of(THREE_SAVED + LOOP_OVER_APPLIED), target))
    history = loop.app.history(source.id)

    fork = loop.app.create(fork_request(source, history, from_step=8), tenant="acme", actor="alice")
    forked = drive(loop, fork.id)

    assert forked.status is SessionStatus.COMPLETED
    assert path_of(forked) == path_of(source)
    assert event_types(loop.app, fork.id).count("LoopExpanded") == 0  # carried over, not again
    assert effects(target)[6:] == ["again-b", "again-c"]  # from iteration 1 on


def test_a_fork_from_before_a_loop_runs_it_again(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    source = drive(loop, start_session(loop, steps_of(THREE_SAVED + LOOP_OVER_APPLIED), target))

    fork = loop.app.create(
        fork_request(source, loop.app.history(source.id), from_step=5), tenant="acme", actor="alice"
    )
    forked = drive(loop, fork.id)

    assert forked.status is SessionStatus.COMPLETED
    assert path_of(forked) == path_of(source)
    assert effects(target)[6:] == ["again-a", "again-b", "again-c"]


def test_a_fork_carries_over_a_skipped_step_as_skipped(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(
        """
  - text: GET /effects
    if: 1 == 2
  - GET /effects
  - GET /effects
"""
    )
    source = drive(loop, start_session(loop, steps, target))
    fork = loop.app.create(
        fork_request(source, loop.app.history(source.id), from_step=2), tenant="acme", actor="alice"
    )
    forked = drive(loop, fork.id)

    assert statuses(forked) == ["skipped", "completed", "completed"]


def test_a_condition_cannot_test_a_secrets_value_nor_say_it_in_an_error(
    make_loop: LoopFactory, target: str, fresh_database_url: str
) -> None:
    """Variables are read as the log records them: the echoed secret is its placeholder, so
    a condition learns nothing of its value, and an error quoting the variables has none."""
    loop = make_loop(ai=False)
    steps = steps_of(
        f"""
  - 'POST /effects with {{"name": "{{{{secrets.DEMO_PASSWORD}}}}"}}'
  - GET /effects
  - save json applied as applied
  - text: 'POST /effects with {{"name": "oracle said yes"}}'
    if: '"{PASSWORD[:6]}" in vars.applied[0].name'
  - text: GET /effects
    if: vars.applied[0].nope == 1
"""
    )
    session = drive(loop, start_session(loop, steps, target))

    assert statuses(session)[3:] == ["skipped", "failed"]
    assert session.error is not None
    assert session.error["code"] == "EXPRESSION_FAILED"
    assert effects(target) == [PASSWORD]
    assert_stored_nowhere(fresh_database_url, PASSWORD)


def test_a_replay_of_a_fork_from_inside_a_loop_runs_each_iteration_once(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source = drive(loop, start_session(loop, steps_of(THREE_SAVED + LOOP_OVER_APPLIED), target))
    fork = loop.app.create(
        fork_request(source, loop.app.history(source.id), from_step=8), tenant="acme", actor="bob"
    )
    forked = drive(loop, fork.id)

    with example_target().serving(password=PASSWORD) as again:
        replay = loop.app.create(
            replay_request(forked, strict=True, base_url=again), tenant="acme", actor="bob"
        )
        replayed = drive(loop, replay.id)
        assert effects(again) == ["a", "b", "c", "again-a", "again-b", "again-c"]

    assert replayed.status is SessionStatus.COMPLETED
    assert path_of(replayed) == path_of(source)


@pytest.mark.parametrize("from_step", [1, 7])
def test_a_fork_from_right_after_a_skipped_step_or_a_loop(
    make_loop: LoopFactory, target: str, from_step: int
) -> None:
    loop = make_loop(ai=False)
    steps = steps_of(
        """
  - text: GET /effects
    if: 1 == 2
"""
        + THREE_SAVED
        + LOOP_OVER_APPLIED
    )
    source = drive(loop, start_session(loop, steps, target))
    assert source.steps[from_step - 1].status in (StepStatus.SKIPPED, StepStatus.COMPLETED)

    fork = loop.app.create(
        fork_request(source, loop.app.history(source.id), from_step=from_step),
        tenant="acme",
        actor="bob",
    )

    carried = loop.app.get_session(fork.id).steps[:from_step]
    assert path_of_steps(carried) == path_of(source)[:from_step]
    if from_step == 7:  # from the loop's first iteration: the same path to the end
        assert path_of(drive(loop, fork.id)) == path_of(source)
