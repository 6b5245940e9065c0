from __future__ import annotations

import json
import logging
import re

import pytest

from engine.logs import LOGGER_NAME, configure_logging, on_session, on_step

SESSION = "session-abc123"


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def test_text_lines_follow_the_original_format(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "text")
    log.info('Step started: "Open login page"', extra=on_step(SESSION, 0))
    log.warning("Slow step", extra=on_session(SESSION))
    log.info("Runner up")
    lines = capsys.readouterr().err.splitlines()
    stamp = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\]"
    assert re.fullmatch(
        rf'\[StepProcessor\]\[INFO\] {stamp} \[{SESSION}\]:0 Step started: "Open login page"',
        lines[0],
    )
    assert re.fullmatch(rf"\[StepProcessor\]\[WARN\] {stamp} \[{SESSION}\] Slow step", lines[1])
    assert re.fullmatch(rf"\[StepProcessor\]\[INFO\] {stamp} Runner up", lines[2])


def test_json_lines_carry_the_same_fields(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    try:
        log.error("Step failed", extra=on_step(SESSION, 2))
    finally:
        configure_logging("INFO", "text")
    entry = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert entry["level"] == "ERROR"
    assert (entry["session_id"], entry["step_index"], entry["message"]) == (
        SESSION,
        2,
        "Step failed",
    )
    assert entry["module"] == "step-processor"


def test_configuring_twice_keeps_one_handler(log: logging.Logger) -> None:
    configure_logging("INFO", "text")
    configure_logging("DEBUG", "json")
    configure_logging("INFO", "text")
    assert len(log.handlers) == 1
