"""WorkflowSession: given these events, when this command, then these events (or this error)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from domain.errors import InvalidStateTransition, InvalidWorkflow
from domain.session import (
    MAX_EXPANDED_STEPS,
    MAX_STEP_TEXT,
    MAX_STEPS,
    SessionStatus,
    StepSpec,
    StepStatus,
    WorkflowSession,
    status_after,
)
from domain.step_policy import OnFailure, StepPolicy

Command = Callable[[WorkflowSession], Any]
ERROR = {"code": "TASK_LOOP_TIMEOUT", "message": "step took too long"}


def new_session(steps: int = 2, **config: Any) -> WorkflowSession:
    return WorkflowSession.create(
        name="Login smoke test",
        steps=[StepSpec(f"step {i}") for i in range(steps)],
        tenant="acme",
        actor="alice",
        config=config,
        labels={"suite": "smoke"},
    )


def given(*commands: Command, steps: int = 2, **config: Any) -> WorkflowSession:
    """A session rebuilt by replaying the events these commands recorded."""
    session = new_session(steps, **config)
    for command in commands:
        command(session)
    events = session.collect_events()
    rebuilt: WorkflowSession | None = None
    for recorded in events:
        rebuilt = recorded.mutate(rebuilt)  # type: ignore[arg-type]
    assert rebuilt is not None
    return rebuilt


def then_events(session: WorkflowSession) -> list[str]:
    return [type(e).__name__ for e in session.collect_events()]


def start(i: int) -> Command:
    return lambda s: s.start_step(i)


def issue(i: int, command_id: str) -> Command:
    return lambda s: s.issue_command(
        i, command_id=command_id, executor="http", name="request", args={"path": "/"}
    )


def finish(i: int, command_id: str) -> Command:
    return lambda s: s.finish_command(i, command_id=command_id, ok=True, output="200")


def complete(i: int) -> Command:
    return lambda s: s.complete_step(i, summary=f"step {i} done")


def fail(i: int, *, retryable: bool) -> Command:
    return lambda s: s.fail_step(i, error=ERROR, retryable=retryable)


def pause(s: WorkflowSession) -> None:
    s.pause("lunch", "bob")


def resume(s: WorkflowSession) -> None:
    s.resume("back", "bob")


def cancel(s: WorkflowSession) -> None:
    s.cancel("not needed", "bob")


RUN_BOTH_STEPS = (start(0), complete(0), start(1), complete(1))

# ---- creation ---------------------------------------------------------------------------


def test_create_records_the_workflow_and_who_created_it() -> None:
    session = new_session(steps=2, max_attempts=3)
    (created,) = session.collect_events()
    assert type(created).__name__ == "Created"
    assert created.steps == [
        {"text": "step 0", "expect": None, "policy": {}},
        {"text": "step 1", "expect": None, "policy": {}},
    ]
    assert (created.tenant, created.actor, created.labels) == ("acme", "alice", {"suite": "smoke"})
    assert created.config == {"max_attempts": 3}
    assert session.status is SessionStatus.PENDING


def test_create_keeps_the_expect_criterion_and_strips_whitespace() -> None:
    session = WorkflowSession.create(
        name=" Smoke ",
        steps=[StepSpec("  Sign in  ", expect=" a cookie is set ")],
        tenant="acme",
        actor="alice",
    )
    assert session.name == "Smoke"
    assert (session.steps[0].text, session.steps[0].expect) == ("Sign in", "a cookie is set")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "at least one step"),
        ([StepSpec("ok"), StepSpec("   ")], "step 1 is empty"),
        ([StepSpec("x" * (MAX_STEP_TEXT + 1))], f"the limit is {MAX_STEP_TEXT}"),
        ([StepSpec("ok", expect="x" * (MAX_STEP_TEXT + 1))], "expect criterion of step 0"),
        ([StepSpec("s")] * (MAX_STEPS + 1), f"at most {MAX_STEPS} steps"),
        (
            [StepSpec("s")] + [StepSpec("i", origin={"iteration": 0})] * MAX_EXPANDED_STEPS,
            f"at most {MAX_EXPANDED_STEPS} steps with its loops' iterations, got 2001",
        ),
    ],
)
def test_create_refuses_bad_steps(steps: list[StepSpec], message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        WorkflowSession.create(name="n", steps=steps, tenant="acme", actor="alice")


@pytest.mark.parametrize(
    ("steps", "advice"),
    [
        ([StepSpec("ok"), StepSpec("   ")], "Write step 1, or remove it"),
        ([StepSpec("x" * (MAX_STEP_TEXT + 1))], "Shorten step 0, or split it"),
        ([StepSpec("o\x00k")], "Remove the NUL character"),
    ],
)
def test_a_refused_step_says_what_to_do_about_that_step(steps: list[StepSpec], advice: str) -> None:
    with pytest.raises(InvalidWorkflow) as refused:
        WorkflowSession.create(name="n", steps=steps, tenant="acme", actor="alice")
    assert refused.value.to_standard_error().suggested_action.startswith(advice)


def test_create_accepts_the_largest_workflow() -> None:
    session = WorkflowSession.create(
        name="n", steps=[StepSpec("x" * MAX_STEP_TEXT)] * MAX_STEPS, tenant="t", actor="a"
    )
    assert len(session.steps) == MAX_STEPS


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "name must be"),
        ({"name": "n" * 201}, "name must be"),
        ({"tenant": ""}, "tenant"),
        ({"labels": {f"k{i}": "v" for i in range(51)}}, "at most 50 labels"),
        ({"labels": {"": "v"}}, "label keys"),
        ({"config": {"max_attempts": 0}}, "max_attempts"),
        ({"config": {"max_attempts": "3"}}, "max_attempts"),
        ({"name": "a\x00b"}, "name contains a NUL"),
        ({"labels": {"k": "v\x00"}}, "labels.k contains a NUL"),
        ({"steps": [StepSpec("GET /\x00")]}, r"steps\[0\] contains a NUL"),
        ({"steps": [StepSpec("ok", expect="\x00!")]}, r"steps\[0\].expect contains a NUL"),
    ],
)
def test_create_refuses_a_bad_header(fields: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "name": "n",
        "steps": [StepSpec("s")],
        "tenant": "acme",
        "actor": "alice",
    }
    with pytest.raises(InvalidWorkflow, match=message):
        WorkflowSession.create(**{**arguments, **fields})


# ---- steps ------------------------------------------------------------------------------


def test_starting_the_first_step_makes_the_session_running() -> None:
    session = given()
    assert session.start_step(0) == 1
    assert then_events(session) == ["StepStarted"]
    assert session.status is SessionStatus.RUNNING
    assert session.steps[0].status is StepStatus.RUNNING


def test_steps_run_in_order() -> None:
    session = given()
    with pytest.raises(InvalidStateTransition, match="steps run in order and the next is 0"):
        session.start_step(1)
    assert then_events(session) == []


def test_only_one_step_runs_at_a_time() -> None:
    session = given(start(0))
    with pytest.raises(InvalidStateTransition, match="already running"):
        session.start_step(0)
    with pytest.raises(InvalidStateTransition, match="next is 0"):
        session.start_step(1)


def test_a_completed_step_is_not_started_again() -> None:
    session = given(start(0), complete(0))
    with pytest.raises(InvalidStateTransition, match="next is 1"):
        session.start_step(0)
    session.start_step(1)
    assert then_events(session) == ["StepStarted"]


def test_no_step_starts_after_every_step_completed() -> None:
    session = given(start(0), complete(0), start(1), complete(1))
    with pytest.raises(InvalidStateTransition, match="every step is done"):
        session.start_step(2)


def test_a_retryable_failure_is_retried_as_a_new_attempt() -> None:
    session = given(start(0), fail(0, retryable=True), max_attempts=2)
    assert session.steps[0].status is StepStatus.FAILED
    assert session.start_step(0) == 2
    assert then_events(session) == ["StepStarted"]
    assert session.steps[0].error is None


def test_a_step_is_not_retried_beyond_max_attempts() -> None:
    session = given(start(0), fail(0, retryable=True), max_attempts=1)
    with pytest.raises(InvalidStateTransition, match="all 1 attempts are used"):
        session.start_step(0)


def test_a_non_retryable_failure_is_not_retried() -> None:
    session = given(start(0), fail(0, retryable=False), max_attempts=3)
    with pytest.raises(InvalidStateTransition, match="not retryable"):
        session.start_step(0)


def test_no_step_starts_while_paused() -> None:
    session = given(start(0), complete(0), pause)
    with pytest.raises(InvalidStateTransition, match="session is paused"):
        session.start_step(1)


def test_turns_are_numbered_per_step_and_count_tokens() -> None:
    session = given(start(0))
    first = session.record_turn(0, reasoning="look", model="m", prompt_tokens=10)
    second = session.record_turn(0, reasoning="act", model="m", completion_tokens=5)
    assert (first, second) == (1, 2)
    assert then_events(session) == ["TurnRecorded", "TurnRecorded"]
    assert session.tokens_used == 15


def test_turns_are_recorded_only_inside_the_running_step() -> None:
    with pytest.raises(InvalidStateTransition, match="session is pending"):
        given().record_turn(0, reasoning="r", model="m")
    with pytest.raises(InvalidStateTransition, match="step 1 is not the step in progress"):
        given(start(0)).record_turn(1, reasoning="r", model="m")
    with pytest.raises(InvalidStateTransition, match="session is paused"):
        given(start(0), pause).record_turn(0, reasoning="r", model="m")


# ---- commands ---------------------------------------------------------------------------


def test_a_command_is_issued_inside_the_running_step() -> None:
    session = given(start(0))
    issue(0, "c1")(session)
    assert then_events(session) == ["CommandIssued"]
    assert session.steps[0].open_commands == ["c1"]


def test_commands_are_refused_outside_a_started_step() -> None:
    with pytest.raises(InvalidStateTransition, match="session is pending"):
        issue(0, "c1")(given())
    with pytest.raises(InvalidStateTransition, match="step 1 is not the step in progress"):
        issue(1, "c1")(given(start(0)))
    with pytest.raises(InvalidStateTransition, match="step 0 is not the step in progress"):
        issue(0, "c1")(given(start(0), complete(0)))


def test_a_command_id_is_used_once_per_session() -> None:
    session = given(start(0), issue(0, "c1"), finish(0, "c1"))
    with pytest.raises(InvalidStateTransition, match="c1 was already issued"):
        issue(0, "c1")(session)


def test_a_result_is_recorded_for_an_issued_command() -> None:
    session = given(start(0), issue(0, "c1"))
    finish(0, "c1")(session)
    assert then_events(session) == ["CommandFinished"]
    assert session.steps[0].open_commands == []


@pytest.mark.parametrize(
    "history",
    [
        (start(0),),
        (start(0), issue(0, "c1"), finish(0, "c1")),
        (start(0), issue(0, "other")),
    ],
    ids=["never-issued", "already-finished", "another-command"],
)
def test_a_result_is_refused_for_a_command_not_open(history: tuple[Command, ...]) -> None:
    session = given(*history)
    with pytest.raises(InvalidStateTransition, match="c1 has no open issue in step 0"):
        finish(0, "c1")(session)


def test_a_result_names_the_step_its_command_was_issued_in() -> None:
    session = given(start(0), issue(0, "c1"))
    with pytest.raises(InvalidStateTransition, match="no open issue in step 1"):
        finish(1, "c1")(session)


def test_a_running_command_may_finish_while_the_session_is_paused() -> None:
    session = given(start(0), issue(0, "c1"), pause)
    finish(0, "c1")(session)
    assert then_events(session) == ["CommandFinished"]


def test_a_step_with_a_command_in_flight_neither_completes_nor_fails() -> None:
    session = given(start(0), issue(0, "c1"))
    with pytest.raises(InvalidStateTransition, match=r"commands \['c1'\] have no result"):
        complete(0)(session)
    with pytest.raises(InvalidStateTransition, match=r"commands \['c1'\] have no result"):
        fail(0, retryable=False)(session)


def check(i: int, *, ok: bool = True) -> Command:
    return lambda s: s.record_check(
        i, executor="http", name="expect_status", args={"code": 200}, ok=ok, output="{}"
    )


def test_a_check_is_one_event_and_leaves_nothing_open() -> None:
    session = given(start(0), issue(0, "c1"), finish(0, "c1"))
    check(0)(session)
    check(0, ok=False)(session)
    complete(0)(session)
    assert then_events(session) == ["Checked", "Checked", "StepCompleted"]
    assert session.steps[0].open_commands == []


@pytest.mark.parametrize(
    "history",
    [(), (start(0), pause), (start(0), complete(0)), (start(0), cancel)],
    ids=["pending", "paused", "step-ended", "cancelled"],
)
def test_a_check_is_recorded_only_inside_the_running_step(history: tuple[Command, ...]) -> None:
    """Unlike a command's result, a check's is not kept once the session paused: it had no
    side effect, so the resumed step simply checks again."""
    with pytest.raises(InvalidStateTransition, match="cannot record a check"):
        check(0)(given(*history))


def test_a_snapshot_taken_before_replays_existed_loads_as_a_new_session() -> None:
    session = given(start(0), issue(0, "c1"), finish(0, "c1"))
    snapshot = WorkflowSession.Snapshot.take(session)
    assert snapshot.state["class_version"] == 3
    old_state = {
        k: v
        for k, v in snapshot.state.items()
        if k not in ("class_version", "replay_of", "forked_from", "waiting", "mailbox", "waited_ms")
    }
    old = WorkflowSession.Snapshot(  # type: ignore[call-arg]
        originator_id=snapshot.originator_id,
        originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp,
        topic=snapshot.topic,
        state=old_state,
    )

    loaded = old.mutate(None)

    assert isinstance(loaded, WorkflowSession)
    assert (loaded.replay_of, loaded.forked_from) == (None, None)
    assert loaded.steps[0].status is StepStatus.RUNNING
    assert loaded.version == session.version


def test_completing_a_step_records_summary_and_evidence() -> None:
    session = given(start(0))
    session.complete_step(0, summary="logged in", evidence=["status 200"])
    assert then_events(session) == ["StepCompleted"]
    assert session.steps[0].summary == "logged in"
    assert session.steps[0].evidence == ["status 200"]
    assert session.current_step == 1


def test_failing_a_step_records_the_error() -> None:
    session = given(start(0))
    fail(0, retryable=True)(session)
    assert then_events(session) == ["StepFailed"]
    assert session.steps[0].error == ERROR
    assert session.steps[0].retryable


def test_steps_end_only_while_running() -> None:
    with pytest.raises(InvalidStateTransition, match="session is paused"):
        complete(0)(given(start(0), pause))
    with pytest.raises(InvalidStateTransition, match="session is paused"):
        fail(0, retryable=True)(given(start(0), pause))
    with pytest.raises(InvalidStateTransition, match="step 0 is not the step in progress"):
        complete(0)(given(start(0), fail(0, retryable=True), max_attempts=2))


# ---- pause, resume, cancel --------------------------------------------------------------


@pytest.mark.parametrize("history", [(), (start(0),)], ids=["pending", "running"])
def test_pause_from_pending_or_running_then_resume_returns_there(
    history: tuple[Command, ...],
) -> None:
    session = given(*history)
    before = session.status
    pause(session)
    assert session.status is SessionStatus.PAUSED
    resume(session)
    assert session.status is before
    events = session.collect_events()
    assert [type(e).__name__ for e in events] == ["Paused", "Resumed"]
    assert [(e.reason, e.actor) for e in events] == [("lunch", "bob"), ("back", "bob")]


def test_pause_is_refused_when_already_paused() -> None:
    with pytest.raises(InvalidStateTransition, match="cannot pause: session is paused"):
        pause(given(start(0), pause))


def test_resume_is_refused_unless_paused() -> None:
    with pytest.raises(InvalidStateTransition, match="cannot resume: session is running"):
        resume(given(start(0)))
    with pytest.raises(InvalidStateTransition, match="cannot resume: session is pending"):
        resume(given())


@pytest.mark.parametrize(
    "history", [(), (start(0),), (start(0), pause)], ids=["pending", "running", "paused"]
)
def test_cancel_from_any_live_state(history: tuple[Command, ...]) -> None:
    session = given(*history)
    cancel(session)
    assert then_events(session) == ["Cancelled"]
    assert session.status is SessionStatus.CANCELLED


# ---- per-step policies ----------------------------------------------------------------------


def with_policies(*commands: Command, policies: list[StepPolicy], **config: Any) -> WorkflowSession:
    """A session of one step per policy, rebuilt from the events these commands recorded."""
    session = WorkflowSession.create(
        name="policies",
        steps=[StepSpec(f"step {i}", policy=policy) for i, policy in enumerate(policies)],
        tenant="acme",
        actor="alice",
        config=config,
    )
    for command in commands:
        command(session)
    rebuilt: WorkflowSession | None = None
    for recorded in session.collect_events():
        rebuilt = recorded.mutate(rebuilt)  # type: ignore[arg-type]
    assert rebuilt is not None
    return rebuilt


def continue_after(i: int) -> Command:
    return lambda s: s.continue_after_failure(i)


CONTINUES = StepPolicy(on_failure=OnFailure.CONTINUE)


def test_a_steps_policy_is_recorded_with_it_and_only_what_it_sets() -> None:
    session = with_policies(policies=[StepPolicy(retries=2, timeout_ms=500), CONTINUES])
    created = WorkflowSession.create(
        name="n", steps=[StepSpec("s", policy=StepPolicy(max_turns=3))], tenant="t", actor="a"
    ).collect_events()[0]

    assert created.steps == [{"text": "s", "expect": None, "policy": {"max_turns": 3}}]
    assert [step.policy for step in session.steps] == [
        StepPolicy(retries=2, timeout_ms=500),
        CONTINUES,
    ]


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (StepPolicy(retries=-1), "steps[1].retries"),
        (StepPolicy(retry_backoff_ms=-5), "steps[1].retry_backoff_ms"),
        (StepPolicy(timeout_ms=0), "steps[1].timeout_ms"),
        (StepPolicy(max_turns=0), "steps[1].max_turns"),
        (StepPolicy(max_turns="3"), "steps[1].max_turns"),  # type: ignore[arg-type]
    ],
)
def test_a_step_policy_below_its_limits_least_value_is_refused_naming_the_step(
    policy: StepPolicy, field: str
) -> None:
    steps = [StepSpec("fine"), StepSpec("greedy", policy=policy)]
    with pytest.raises(InvalidWorkflow, match=r"^step 1: ") as refused:
        WorkflowSession.create(name="n", steps=steps, tenant="acme", actor="alice")
    assert refused.value.to_standard_error().details["field"] == field


def test_a_steps_own_retries_allow_it_more_attempts_than_the_config() -> None:
    session = with_policies(
        start(0),
        fail(0, retryable=True),
        start(0),
        fail(0, retryable=True),
        policies=[StepPolicy(retries=2), StepPolicy()],
        max_attempts=1,
    )
    assert session.start_step(0) == 3
    assert session.attempts_allowed(1) == 1


def test_a_steps_own_retries_of_zero_allow_it_one_attempt_whatever_the_config() -> None:
    session = with_policies(
        start(0), fail(0, retryable=True), policies=[StepPolicy(retries=0)], max_attempts=5
    )
    with pytest.raises(InvalidStateTransition, match="all 1 attempts are used"):
        session.start_step(0)


def test_a_step_failed_for_good_with_on_failure_continue_lets_the_next_step_start() -> None:
    session = with_policies(
        start(0), fail(0, retryable=True), policies=[CONTINUES, StepPolicy()], max_attempts=1
    )
    session.continue_after_failure(0)
    assert then_events(session) == ["ContinuedAfterFailure"]
    assert session.start_step(1) == 1
    assert session.steps[0].status is StepStatus.FAILED


@pytest.mark.parametrize(
    ("history", "policies", "message"),
    [
        ((start(0), fail(0, retryable=False)), [StepPolicy()], "its on_failure is fail"),
        ((start(0), fail(0, retryable=True)), [replace(CONTINUES, retries=1)], "attempts left"),
        ((start(0),), [CONTINUES], "not the failed current step"),
        ((start(0), complete(0)), [CONTINUES, CONTINUES], "not the failed current step"),
    ],
)
def test_a_session_goes_on_past_a_step_only_once_it_failed_for_good_and_may(
    history: tuple[Command, ...], policies: list[StepPolicy], message: str
) -> None:
    session = with_policies(*history, policies=policies)
    with pytest.raises(InvalidStateTransition, match=message):
        session.continue_after_failure(session.current_step)


def test_a_session_that_went_on_past_failed_steps_completes_naming_them() -> None:
    session = with_policies(
        start(0),
        fail(0, retryable=False),
        continue_after(0),
        start(1),
        complete(1),
        start(2),
        fail(2, retryable=False),
        continue_after(2),
        policies=[CONTINUES, StepPolicy(), CONTINUES],
    )
    session.complete()
    assert session.status is SessionStatus.COMPLETED
    assert session.outcome == (
        "1 of 3 steps completed; steps 0, 2 failed and the session went on (on_failure: continue)"
    )


# ---- the end of a session ---------------------------------------------------------------


def test_the_session_completes_after_every_step_completed() -> None:
    session = given(*RUN_BOTH_STEPS)
    session.complete()
    assert then_events(session) == ["Completed"]
    assert session.status is SessionStatus.COMPLETED
    assert session.outcome == "all 2 steps completed"


def test_the_session_does_not_complete_with_steps_left() -> None:
    with pytest.raises(InvalidStateTransition, match="step 1 is not completed"):
        given(start(0), complete(0)).complete()
    with pytest.raises(InvalidStateTransition, match="session is pending"):
        given().complete()


@pytest.mark.parametrize("history", [(), (start(0), fail(0, retryable=False))])
def test_the_session_fails_from_pending_or_running(history: tuple[Command, ...]) -> None:
    session = given(*history)
    session.fail(ERROR)
    assert then_events(session) == ["Failed"]
    assert session.status is SessionStatus.FAILED
    assert session.error == ERROR
    assert session.outcome == "step took too long"


def test_a_paused_session_is_not_failed_by_the_worker() -> None:
    with pytest.raises(InvalidStateTransition, match="session is paused"):
        given(start(0), pause).fail(ERROR)


@pytest.mark.parametrize(
    "history", [(), (start(0),), (start(0), pause)], ids=["pending", "running", "paused"]
)
def test_a_live_session_expires(history: tuple[Command, ...]) -> None:
    session = given(*history)
    session.expire({"code": "SESSION_EXPIRED"})
    assert then_events(session) == ["Expired"]
    assert session.status is SessionStatus.EXPIRED


TERMINAL_HISTORIES: dict[str, tuple[Command, ...]] = {
    "completed": (*RUN_BOTH_STEPS, lambda s: s.complete()),
    "failed": (start(0), lambda s: s.fail(ERROR)),
    "cancelled": (start(0), cancel),
    "expired": (lambda s: s.expire(ERROR),),
}

EVERY_COMMAND: dict[str, Command] = {
    "start_step": start(0),
    "record_turn": lambda s: s.record_turn(0, reasoning="r", model="m"),
    "issue_command": issue(0, "late"),
    "finish_command": finish(0, "late"),
    "complete_step": complete(0),
    "fail_step": fail(0, retryable=True),
    "pause": pause,
    "resume": resume,
    "cancel": cancel,
    "complete": lambda s: s.complete(),
    "fail": lambda s: s.fail(ERROR),
    "expire": lambda s: s.expire(ERROR),
}


@pytest.mark.parametrize("terminal", TERMINAL_HISTORIES)
@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_nothing_is_accepted_after_a_terminal_state(terminal: str, command: str) -> None:
    session = given(*TERMINAL_HISTORIES[terminal])
    assert session.status.value == terminal
    with pytest.raises(InvalidStateTransition):
        EVERY_COMMAND[command](session)
    assert then_events(session) == []


def test_replaying_the_events_rebuilds_the_same_state() -> None:
    live = new_session(steps=2, max_attempts=2)
    for command in (
        start(0),
        issue(0, "c1"),
        pause,
        finish(0, "c1"),
        resume,
        fail(0, retryable=True),
        start(0),
        complete(0),
        start(1),
        complete(1),
    ):
        command(live)
    rebuilt = None
    for recorded in live.collect_events():
        rebuilt = recorded.mutate(rebuilt)  # type: ignore[arg-type]
    assert vars(rebuilt) == vars(live)


LIVES: dict[str, list[Command]] = {
    "completed": [
        lambda s: s.start_step(0),
        lambda s: s.pause(),
        lambda s: s.resume(),
        lambda s: s.complete_step(0, summary="ok"),
        lambda s: s.start_step(1),
        lambda s: s.complete_step(1, summary="ok"),
        lambda s: s.complete(),
    ],
    "paused before it started, then cancelled": [
        lambda s: s.pause(),
        lambda s: s.resume(),
        lambda s: s.pause(),
        lambda s: s.cancel(),
    ],
    "failed": [lambda s: s.start_step(0), lambda s: s.fail(ERROR)],
    "expired while paused": [
        lambda s: s.start_step(0),
        lambda s: s.pause(),
        lambda s: s.expire(ERROR),
    ],
}


@pytest.mark.parametrize("life", LIVES)
def test_status_after_each_event_is_the_status_the_aggregate_reaches(life: str) -> None:
    session = new_session()
    folded, started = SessionStatus.PENDING, False
    for command in LIVES[life]:
        command(session)
        for event in session.collect_events():
            folded = status_after(event, folded, started)
            started = started or isinstance(event, WorkflowSession.StepStarted)
        assert folded is session.status, life
