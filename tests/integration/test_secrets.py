"""Secret values never reach the event store, the log or a prompt."""

from __future__ import annotations

import logging

import pytest

from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus
from engine.logs import LOGGER_NAME, configure_logging
from engine.secrets import Secrets
from tests.conftest import PASSWORD
from tests.integration.conftest import (
    LoopFactory,
    assert_secret_recorded_nowhere,
    drive,
    start_session,
)
from tests.scripted_model import ScriptedModel


def test_a_secret_used_everywhere_is_recorded_nowhere(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("DEBUG", "text", Secrets({"DEMO_PASSWORD": PASSWORD}))
    logging.getLogger(LOGGER_NAME).debug("about to sign in with %s", PASSWORD)
    model.calls(
        "http_request",
        reasoning="sign in with {{secrets.DEMO_PASSWORD}}",
        method="POST",
        url="/login",
        body={"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"},
    )
    model.calls("complete_step", summary="signed in", evidence=["status 200"])
    loop = make_loop(shell_allow=["echo"])
    session_id = start_session(
        loop,
        [
            'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}',
            "expect status 200",
            "Sign in again through the form",
        ],
        target,
        tenant=DEV_TENANT,  # the environment's secrets are the dev tenant's
    )
    echo_id = start_session(
        loop, ["run `echo {{secrets.DEMO_PASSWORD}}`"], executor="shell", tenant=DEV_TENANT
    )

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    assert drive(loop, echo_id).status is SessionStatus.COMPLETED
    configure_logging("INFO", "text")

    echoed = [e for e in loop.app.history(echo_id) if type(e).__name__ == "CommandFinished"]
    assert "{{secrets.DEMO_PASSWORD}}" in echoed[0].output  # type: ignore[attr-defined]
    logs = capsys.readouterr().err
    assert "about to sign in with {{secrets.DEMO_PASSWORD}}" in logs
    assert_secret_recorded_nowhere(database_url, logs, model)
