"""Each command a session issued, paired with its result from the session's own events."""

from __future__ import annotations

from domain.actions import actions_of
from domain.session import StepSpec, WorkflowSession


def a_session() -> WorkflowSession:
    session = WorkflowSession.create(
        name="actions", steps=[StepSpec("sign in"), StepSpec("look")], tenant="acme", actor="al"
    )
    session.start_step(0)
    return session


def issue(session: WorkflowSession, step: int, command_id: str) -> None:
    session.issue_command(step, command_id=command_id, executor="http", name="request", args={})


def test_each_command_is_paired_with_its_result_in_the_order_issued() -> None:
    session = a_session()
    issue(session, 0, "c1")
    session.finish_command(0, command_id="c1", ok=True, output="first")
    session.record_check(0, executor="http", name="expect_status", args={}, ok=True, output="")
    issue(session, 0, "c2")
    session.finish_command(0, command_id="c2", ok=False, output="second")

    actions = actions_of(session.collect_events())

    assert list(actions) == ["c1", "c2"]
    assert [(a.issued.command_id, a.finished and a.finished.output) for a in actions.values()] == [
        ("c1", "first"),
        ("c2", "second"),
    ]


def test_a_command_without_a_result_yet_has_none() -> None:
    session = a_session()
    issue(session, 0, "c1")

    assert actions_of(session.collect_events())["c1"].finished is None


def test_a_result_whose_command_was_issued_before_the_events_is_left_out() -> None:
    session = a_session()
    issue(session, 0, "c1")
    session.collect_events()  # what came before: the events given start after the issue
    session.finish_command(0, command_id="c1", ok=True, output="done")
    session.complete_step(0, summary="signed in", evidence=[])
    session.start_step(1)
    issue(session, 1, "c2")
    session.finish_command(1, command_id="c2", ok=True, output="looked")

    actions = actions_of(session.collect_events())

    assert list(actions) == ["c2"]
    finished = actions["c2"].finished
    assert finished is not None
    assert (finished.step_index, finished.output) == (1, "looked")
