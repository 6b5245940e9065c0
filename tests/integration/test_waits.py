"""Steps that wait, driven by the task loop in this process against the example app: each run
ends with the session waiting, and the next run (after an approval, a signal, a due time)
takes it on from the wait."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from domain.session import SessionStatus, StepStatus, WorkflowSession
from engine.loop.replay import fork_request, lineage_history, replay_request
from engine.loop.waits import SignalRefused, check_signal
from engine.store.app import Stepline
from tests.conftest import PASSWORD
from tests.integration.conftest import LoopFactory, drive, start_session
from tests.scripted_model import ScriptedModel
from tests.waiting import eventually

PAYMENT = [
    "wait for approval: Send 1200 EUR to ACME?",
    'wait for signal "payment.received"',
    'POST /effects with {"name": "paid {{vars.payment_received}}"}',
    "expect status 201",
]


def waits_of(app: Stepline, session_id: UUID) -> list[WorkflowSession.WaitEnded]:
    return [e for e in app.history(session_id) if isinstance(e, WorkflowSession.WaitEnded)]


def effect_names(target: str) -> list[str]:
    return [effect["name"] for effect in httpx.get(f"{target}/effects").json()["applied"]]


def test_an_approved_session_goes_on_to_its_next_step(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(
        loop, ["wait for approval: Ship it?", 'POST /effects with {"name": "shipped"}'], target
    )

    waiting = drive(loop, session_id)
    assert waiting.status is SessionStatus.WAITING
    assert waiting.waiting is not None
    assert waiting.waiting.question == "Ship it?"
    assert effect_names(target) == []  # nothing after the wait ran

    loop.app.approve(session_id, "go ahead", actor="bob")
    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert effect_names(target) == ["shipped"]
    [ended] = waits_of(loop.app, session_id)
    assert (ended.outcome, ended.actor, ended.comment) == ("approved", "bob", "go ahead")


def test_a_rejection_fails_the_step_with_the_comment(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["wait for approval", "GET /effects"], target)
    drive(loop, session_id)

    loop.app.reject(session_id, "wrong amount", actor="bob")
    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    error = session.steps[0].error
    assert error is not None
    assert error["code"] == "APPROVAL_REJECTED"
    assert error["details"]["comment"] == "wrong amount"
    assert error["details"]["rejected_by"] == "bob"
    assert session.steps[1].status is StepStatus.PENDING


def test_an_approval_nobody_gives_in_time_fails_the_step(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["wait for approval within 1 second", "GET /effects"], target)
    assert drive(loop, session_id).status is SessionStatus.WAITING

    session = eventually(
        lambda: (s := drive(loop, session_id)).status is SessionStatus.FAILED and s,
        "the approval timed out",
    )

    error = session.steps[0].error
    assert error is not None
    assert error["code"] == "APPROVAL_TIMED_OUT"
    assert [e.outcome for e in waits_of(loop.app, session_id)] == ["timed_out"]


def test_a_timer_is_not_woken_before_it_is_due(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["wait 1 hour", "GET /effects"], target)

    assert drive(loop, session_id).status is SessionStatus.WAITING
    assert drive(loop, session_id).status is SessionStatus.WAITING
    assert waits_of(loop.app, session_id) == []


def test_a_timer_goes_on_once_due_and_waiting_is_not_running_time(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(
        loop, ["wait 3 seconds", "GET /effects"], target, workflow_timeout_ms=2_000
    )
    drive(loop, session_id)

    session = eventually(
        lambda: (s := drive(loop, session_id)).status.is_terminal and s, "the timer ended"
    )

    assert session.status is SessionStatus.COMPLETED  # 3 s old, but it ran for far less than 2

    [ended] = waits_of(loop.app, session_id)
    assert ended.outcome == "due"
    assert ended.waited_ms >= 3_000


@pytest.mark.parametrize("before_the_wait", [True, False])
def test_a_signal_body_reaches_the_next_step_as_a_variable(
    make_loop: LoopFactory, target: str, before_the_wait: bool
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, PAYMENT[1:], target)
    if before_the_wait:
        loop.app.signal(session_id, "payment.received", "PAY-42", actor="psp")
    else:
        assert drive(loop, session_id).status is SessionStatus.WAITING
        loop.app.signal(session_id, "payment.received", "PAY-42", actor="psp")

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert effect_names(target) == ["paid PAY-42"]
    [ended] = waits_of(loop.app, session_id)
    assert (ended.outcome, ended.data) == ("signalled", "PAY-42")


def test_an_object_body_is_filled_in_as_json(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, PAYMENT[1:], target)
    loop.app.signal(session_id, "payment.received", {"amount": 1200}, actor="psp")

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    assert effect_names(target) == ['paid {"amount": 1200}']


def test_a_signal_for_a_session_that_took_over_is_still_its_variable(
    make_loop: LoopFactory, target: str
) -> None:
    """The body is in the log, not in the process that saw it: a new run (another worker's)
    finds it there."""
    loop = make_loop(ai=False)
    session_id = start_session(loop, [*PAYMENT[1:2], "wait for approval", *PAYMENT[2:]], target)
    loop.app.signal(session_id, "payment.received", "PAY-7", actor="psp")
    assert drive(loop, session_id).status is SessionStatus.WAITING  # at the approval
    loop.app.approve(session_id, actor="bob")

    assert drive(make_loop(ai=False), session_id).status is SessionStatus.COMPLETED
    assert effect_names(target) == ["paid PAY-7"]


def test_a_secret_value_in_a_signal_body_is_recorded_as_its_placeholder(
    make_loop: LoopFactory, target: str, database_url: str
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, PAYMENT[1:], target)
    loop.signal(session_id, "payment.received", {"echo": PASSWORD}, actor="psp")

    [received] = [
        e for e in loop.app.history(session_id) if isinstance(e, WorkflowSession.SignalReceived)
    ]
    assert received.body == {"echo": "{{secrets.DEMO_PASSWORD}}"}
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT state FROM stepline_events WHERE originator_id = %s", (session_id,)
        ).fetchall()
    assert not [row for row in stored if PASSWORD.encode() in bytes(row[0])]


def test_a_signal_body_with_a_placeholder_is_refused() -> None:
    with pytest.raises(SignalRefused, match="placeholder"):
        check_signal("payment.received", {"note": "{{secrets.DEMO_PASSWORD}}"})
    with pytest.raises(SignalRefused, match="not a signal name"):
        check_signal("no spaces please", {})
    check_signal("payment.received", {"amount": 1200, "note": "{not a placeholder}"})


def paid(loop: Any, target: str) -> UUID:
    """A payment session approved and signalled, run to its end."""
    session_id = start_session(loop, PAYMENT, target)
    drive(loop, session_id)
    loop.app.approve(session_id, "fine", actor="bob")
    drive(loop, session_id)
    loop.app.signal(session_id, "payment.received", "PAY-1", actor="psp")
    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    return session_id


def test_a_replay_uses_the_recorded_approval_and_signal_again(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source = paid(loop, target)
    replay = loop.app.create(
        replay_request(loop.app.get_session(source), strict=True), tenant="acme", actor="alice"
    )

    session = drive(loop, replay.id)

    assert session.status is SessionStatus.COMPLETED  # never waited for a person or a sender
    approval, signal = waits_of(loop.app, replay.id)
    assert (approval.outcome, approval.actor) == ("approved", "stepline")
    assert approval.comment == f"as in session {source}, approved by bob: fine"
    assert (signal.outcome, signal.data) == ("signalled", "PAY-1")
    assert effect_names(target) == ["paid PAY-1", "paid PAY-1"]


def test_a_fork_after_the_signal_keeps_its_body_as_the_variable(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    source = paid(loop, target)
    request = fork_request(
        loop.app.get_session(source), lineage_history(loop.app, source), from_step=2
    )
    fork = loop.app.create(request, tenant="acme", actor="alice")

    assert drive(loop, fork.id).status is SessionStatus.COMPLETED
    assert waits_of(loop.app, fork.id) == []  # the waits were the source's
    assert effect_names(target) == ["paid PAY-1", "paid PAY-1"]


def test_a_model_may_ask_for_approval_when_the_workflow_allows_it(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop()
    session_id = start_session(loop, ["Pay the invoice"], target, approvals="model")
    model.calls("request_approval", reasoning="this spends money", question="Pay 1200 EUR?")

    session = drive(loop, session_id)
    assert session.status is SessionStatus.WAITING
    assert session.waiting is not None
    assert session.waiting.question == "Pay 1200 EUR?"

    loop.app.approve(session_id, "yes", actor="bob")
    model.calls("complete_step", summary="paid")
    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    assert "request_approval" in model.tool_names(0)
    assert "Waited for approval: approved by bob: yes" in model.prompt(1)


def test_a_model_is_not_offered_approvals_unless_the_workflow_allows_them(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop()
    session_id = start_session(loop, ["Pay the invoice"], target)
    model.calls("complete_step", summary="paid")

    drive(loop, session_id)

    assert "request_approval" not in model.tool_names(0)


def test_a_rejected_model_approval_fails_the_step(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop()
    session_id = start_session(loop, ["Pay the invoice"], target, approvals="model")
    model.calls("request_approval", question="Pay 1200 EUR?")
    drive(loop, session_id)

    loop.app.reject(session_id, "not this month", actor="bob")
    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    error = session.steps[0].error
    assert error is not None
    assert (error["code"], error["details"]["comment"]) == ("APPROVAL_REJECTED", "not this month")
    assert len(model.requests) == 1  # the model was not asked again
