"""Log lines in the original design's format, or as JSON lines.

    [StepProcessor][INFO] [2024-01-01T10:00:02.000Z] [session-abc123]:0 Step started: "Open"

Pass the session and step through `extra`: `log.info("...", extra=on_step(session_id, 0))`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from engine.secrets import RedactingFilter, Secrets

PREFIX = "[StepProcessor]"
LOGGER_NAME = "stepline"
_LEVEL_NAMES = {"WARNING": "WARN"}


def on_session(session_id: UUID | str) -> dict[str, Any]:
    return {"session_id": str(session_id)}


def on_step(session_id: UUID | str, step_index: int) -> dict[str, Any]:
    return {"session_id": str(session_id), "step_index": step_index}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StepProcessorFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        session_id = getattr(record, "session_id", None)
        step_index = getattr(record, "step_index", None)
        session = f" [{session_id}]" if session_id else ""
        step = f":{step_index}" if step_index is not None else ""
        line = f"{PREFIX}[{level}] [{_timestamp(record)}]{session}{step} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": _LEVEL_NAMES.get(record.levelname, record.levelname),
            "module": "step-processor",
            "session_id": getattr(record, "session_id", None),
            "step_index": getattr(record, "step_index", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the write (redirected, captured)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(
    level: str = "INFO", fmt: str = "text", secrets: Secrets | None = None
) -> None:
    """Send Stepline's log lines to stderr in the chosen format (idempotent), with the
    values of `secrets` redacted from every line."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    formatter = JsonLinesFormatter() if fmt == "json" else StepProcessorFormatter()
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(formatter)
    for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
        handler.removeFilter(old)
    if secrets is not None:
        handler.addFilter(RedactingFilter(secrets))
