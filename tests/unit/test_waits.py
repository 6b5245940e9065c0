"""Waits in the WorkflowSession: given these events, when this command, then these events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import InvalidStateTransition
from domain.session import SessionStatus, StepSpec, WorkflowSession, status_after
from domain.waits import WaitKind, variable_of

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def running() -> WorkflowSession:
    session = WorkflowSession.create(
        name="payment", steps=[StepSpec("wait"), StepSpec("send")], tenant="acme", actor="alice"
    )
    session.start_step(0)
    return session


def rebuilt(session: WorkflowSession) -> WorkflowSession:
    """The session as its events rebuild it."""
    copy: WorkflowSession | None = None
    for event in session.collect_events():
        copy = event.mutate(copy)  # type: ignore[arg-type]
    assert copy is not None
    return copy


def waiting(kind: WaitKind, **wait: Any) -> WorkflowSession:
    session = running()
    session.begin_wait(0, kind=kind, key="k0", now=T0, **wait)
    return session


def ended(session: WorkflowSession) -> WorkflowSession.WaitEnded:
    last = session.collect_events()[-1]
    assert isinstance(last, WorkflowSession.WaitEnded)
    return last


def test_a_wait_makes_the_session_waiting_with_what_it_waits_for() -> None:
    session = rebuilt(waiting(WaitKind.APPROVAL, question="Send 1200 EUR?"))

    assert session.status is SessionStatus.WAITING
    assert session.waiting is not None
    assert session.waiting.describe() == "approval: Send 1200 EUR?"


def test_an_approval_ends_the_wait_and_the_session_runs_on() -> None:
    session = waiting(WaitKind.APPROVAL)
    session.approve("fine", actor="bob", now=T0 + timedelta(seconds=5))

    event = ended(session)
    assert (event.outcome, event.comment, event.actor, event.waited_ms) == (
        "approved",
        "fine",
        "bob",
        5000,
    )
    assert session.status is SessionStatus.RUNNING
    assert session.waiting is None


def test_a_rejection_ends_the_wait_as_rejected() -> None:
    session = waiting(WaitKind.APPROVAL)
    session.reject("too much", actor="bob")

    event = ended(session)
    assert (event.outcome, event.comment) == ("rejected", "too much")


def test_a_session_not_waiting_for_an_approval_refuses_one() -> None:
    with pytest.raises(InvalidStateTransition, match="waits for signal paid, not approval"):
        waiting(WaitKind.SIGNAL, signal="paid").approve(actor="bob")
    with pytest.raises(InvalidStateTransition, match="session is running"):
        running().approve(actor="bob")


def test_a_timer_wakes_only_once_due() -> None:
    session = waiting(WaitKind.TIMER, due_at=T0 + timedelta(seconds=3))
    with pytest.raises(InvalidStateTransition, match="due"):
        session.wake(now=T0 + timedelta(seconds=2))
    session.wake(now=T0 + timedelta(seconds=3))

    assert ended(session).outcome == "due"


def test_an_approval_past_its_due_time_times_out() -> None:
    session = waiting(WaitKind.APPROVAL, due_at=T0 + timedelta(hours=2))
    session.wake(now=T0 + timedelta(hours=2))

    assert ended(session).outcome == "timed_out"


def test_a_wait_with_no_due_time_is_never_woken() -> None:
    with pytest.raises(InvalidStateTransition, match="due never"):
        waiting(WaitKind.APPROVAL).wake(now=T0 + timedelta(days=365))


def test_a_signal_sent_during_the_wait_ends_it_with_its_body() -> None:
    session = waiting(WaitKind.SIGNAL, signal="payment.received")
    session.receive_signal("payment.received", {"amount": 1200}, actor="psp")

    assert ended(session).data == {"amount": 1200}
    assert session.mailbox == {}


def test_a_signal_sent_before_the_wait_is_kept_and_taken_when_the_wait_starts() -> None:
    session = running()
    session.receive_signal("payment.received", {"amount": 1200}, actor="psp")
    session.receive_signal("other", "kept", actor="psp")
    assert session.mailbox["payment.received"] == [{"amount": 1200}]

    session.begin_wait(0, kind=WaitKind.SIGNAL, key="k0", signal="payment.received")

    assert ended(session).data == {"amount": 1200}
    assert session.status is SessionStatus.RUNNING
    assert session.mailbox == {"other": ["kept"]}


def test_a_signal_for_another_wait_stays_in_the_mailbox() -> None:
    session = waiting(WaitKind.SIGNAL, signal="payment.received")
    session.receive_signal("refund", {}, actor="psp")

    assert session.status is SessionStatus.WAITING
    assert session.mailbox == {"refund": [{}]}


def test_an_ended_session_takes_no_signal() -> None:
    session = waiting(WaitKind.APPROVAL)
    session.cancel("no longer needed", actor="alice")
    with pytest.raises(InvalidStateTransition):
        session.receive_signal("paid", {}, actor="psp")


def test_a_waiting_session_cannot_be_paused_but_can_be_cancelled() -> None:
    session = waiting(WaitKind.APPROVAL)
    with pytest.raises(InvalidStateTransition):
        session.pause(actor="alice")
    session.cancel(actor="alice")
    assert session.status is SessionStatus.CANCELLED


def test_time_waited_adds_up_over_waits() -> None:
    session = waiting(WaitKind.TIMER, due_at=T0 + timedelta(seconds=10))
    session.wake(now=T0 + timedelta(seconds=10))
    session.begin_wait(0, kind=WaitKind.APPROVAL, key="k1", now=T0 + timedelta(seconds=20))
    session.approve(now=T0 + timedelta(seconds=25))

    assert rebuilt(session).waited_ms == 15_000


def test_the_status_rule_knows_waiting() -> None:
    session = waiting(WaitKind.APPROVAL)
    session.approve()
    started, ended_ = session.collect_events()[-2:]

    assert status_after(started, SessionStatus.RUNNING, True) is SessionStatus.WAITING
    assert status_after(ended_, SessionStatus.WAITING, True) is SessionStatus.RUNNING


def test_a_signal_name_becomes_a_variable_name() -> None:
    assert variable_of("payment.received") == "payment_received"
    assert variable_of("order-42/paid") == "order_42_paid"


def test_a_snapshot_taken_before_waits_existed_loads_with_nothing_awaited() -> None:
    session = running()
    snapshot = WorkflowSession.Snapshot.take(session)
    v2_state = {
        k: v for k, v in snapshot.state.items() if k not in ("waiting", "mailbox", "waited_ms")
    }
    v2 = WorkflowSession.Snapshot(  # type: ignore[call-arg]
        originator_id=snapshot.originator_id,
        originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp,
        topic=snapshot.topic,
        state={**v2_state, "class_version": 2},
    )

    loaded = v2.mutate(None)

    assert isinstance(loaded, WorkflowSession)
    assert (loaded.waiting, loaded.mailbox, loaded.waited_ms) == (None, {}, 0)
