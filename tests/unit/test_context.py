"""What the model is told of the current attempt, built from the session's own events."""

from __future__ import annotations

from domain.session import StepSpec, WorkflowSession
from engine.ai.prompt import describe_actions


def test_the_model_is_told_of_each_command_and_check_with_its_verdict() -> None:
    session = WorkflowSession.create(
        name="checks", steps=[StepSpec("sign in")], tenant="acme", actor="alice"
    )
    session.start_step(0)
    session.issue_command(
        0, command_id="c1", executor="http", name="request", args={"method": "GET", "url": "/"}
    )
    session.finish_command(0, command_id="c1", ok=True, output='{"status": 200}')
    session.record_check(
        0, executor="http", name="expect_status", args={"code": 200}, ok=True, output="{}"
    )
    session.record_check(
        0,
        executor="http",
        name="expect_body_contains",
        args={"text": "Welcome"},
        ok=False,
        output="no Welcome",
        error={"code": "EXPECTATION_FAILED", "message": "no Welcome"},
    )

    assert describe_actions(session.collect_events()) == [
        'Called http.request {"method": "GET", "url": "/"} -> ok: {"status": 200}',
        'Checked http.expect_status {"code": 200} -> ok: {}',
        'Checked http.expect_body_contains {"text": "Welcome"} -> FAILED (EXPECTATION_FAILED): '
        "no Welcome",
    ]
