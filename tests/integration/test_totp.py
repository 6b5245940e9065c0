"""One-time codes: a step sends `{{totp.NAME}}`, the current code of a TOTP seed its tenant
stored; the target accepts it, and neither the seed nor the code is in any event, log line or
prompt (the placeholder is)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest

from domain.session import SessionStatus
from engine.logs import LOGGER_NAME, configure_logging
from engine.secrets import Secrets
from engine.tenancy.secret_store import TOTP_SEED, SecretStore
from tests.conftest import example_target
from tests.integration.conftest import LoopFactory, assert_stored_nowhere, drive, start_session
from tests.scripted_model import ScriptedModel

SEED = example_target().DEMO_TOTP_SEED
LOGIN = 'POST /totp-login with {"code": "{{totp.DEMO}}"}'


@pytest.fixture
def seed_stored(secret_store: SecretStore) -> Iterator[None]:
    """acme holds the demo app's seed as DEMO (bound to the workflow's base URL)."""
    secret_store.put("acme", "DEMO", SEED, origins=[], kind=TOTP_SEED)
    yield
    secret_store.delete("acme", "DEMO")


def codes_between(started: float, ended: float) -> set[str]:
    """Every code of the seed from a window before `started` to one after `ended`."""
    totp = pyotp.TOTP(SEED)
    return {totp.at(moment) for moment in range(int(started) - 30, int(ended) + 60, 30)}


def standing_alone(codes: set[str], text: str) -> list[str]:
    return [code for code in codes if re.search(rf"(?<!\d){code}(?!\d)", text)]


def accepted_codes(events: list[Any]) -> list[str]:
    """The code each recorded answer of the target says it accepted."""
    finished = [e.output for e in events if type(e).__name__ == "CommandFinished"]
    return [json.loads(json.loads(output)["body"])["accepted"] for output in finished]


def recorded(events: list[Any]) -> str:
    return json.dumps([vars(event) for event in events], default=str)


def test_a_totp_login_completes_and_neither_seed_nor_code_is_recorded(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    seed_stored: None,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model.calls(
        "http_request",
        reasoning="sign in with {{totp.DEMO}}",
        method="POST",
        url="/totp-login",
        body={"code": "{{totp.DEMO}}"},
    )
    model.calls("complete_step", summary="signed in with the code", evidence=["status 200"])
    configure_logging("DEBUG", "text", Secrets())
    loop = make_loop()
    session_id = start_session(
        loop,
        [LOGIN, "expect status 200", "Sign in with the one-time code once more"],
        target,
    )
    started = time.time()

    session = drive(loop, session_id)
    logging.getLogger(LOGGER_NAME).debug("finished")
    configure_logging("INFO", "text")

    assert session.status is SessionStatus.COMPLETED, session.steps
    codes = codes_between(started, time.time())
    history = loop.app.history(session_id)
    assert accepted_codes(history) == ["{{totp.DEMO}}"] * 2  # the target's echo, redacted
    events = recorded(history)
    assert SEED not in events
    assert standing_alone(codes, events) == []
    assert_stored_nowhere(database_url, SEED)
    logs = capsys.readouterr().err
    assert "Step started" in logs
    assert SEED not in logs
    assert standing_alone(codes, logs) == []
    prompts = json.dumps(model.requests)
    assert "{{totp.DEMO}}" in prompts
    assert SEED not in prompts
    assert standing_alone(codes, prompts) == []


def test_a_wrong_code_is_refused_by_the_target(
    make_loop: LoopFactory, target: str, seed_stored: None
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(
        loop, ['POST /totp-login with {"code": "000000"}', "expect status 200"], target
    )

    assert drive(loop, session_id).status is SessionStatus.FAILED


def test_another_tenants_seed_gets_the_refusal_of_an_unknown_one(
    make_loop: LoopFactory, target: str, seed_stored: None
) -> None:
    loop = make_loop(ai=False)
    borrowed = start_session(loop, [LOGIN], target, tenant="globex")
    unknown = start_session(
        loop, ['POST /totp-login with {"code": "{{totp.NO_SUCH}}"}'], target, tenant="globex"
    )

    errors = [drive(loop, session).steps[0].error or {} for session in (borrowed, unknown)]

    assert [error.get("code") for error in errors] == ["SECRET_NOT_FOUND"] * 2
    assert errors[0]["message"] == errors[1]["message"].replace("NO_SUCH", "DEMO")


def test_a_seed_is_not_sent_as_a_value(
    make_loop: LoopFactory, target: str, seed_stored: None
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ['POST /totp-login with {"code": "{{secrets.DEMO}}"}'], target)

    error = drive(loop, session_id).steps[0].error or {}
    assert error.get("code") == "SECRET_KIND_MISMATCH"


def test_a_code_typed_into_a_page_passes_and_is_in_no_event(
    make_loop: LoopFactory, target: str, seed_stored: None
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(
        loop,
        [
            "open /app/totp",
            'fill "Code" with "{{totp.DEMO}}"',
            'click "Verify"',
            'expect page contains "Verified with"',
        ],
        target,
        executor="browser",
    )
    started = time.time()

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED, session.error
    events = recorded(loop.app.history(session_id))
    assert "Verified with {{totp.DEMO}}." in events  # the page's echo, redacted
    assert SEED not in events
    assert standing_alone(codes_between(started, time.time()), events) == []
