"""Secrets: `{{secrets.NAME}}` placeholders, resolved from `STEPLINE_SECRET_NAME` only at the
moment an executor runs a command, and redacted from everything recorded, logged or prompted.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

PREFIX = "STEPLINE_SECRET_"
PLACEHOLDER = re.compile(r"\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}")
MIN_REDACTED_LENGTH = 4  # shorter values would redact ordinary text everywhere


class MissingSecret(KeyError):
    pass


class Secrets:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        # Longest first, so a secret containing another is replaced whole.
        self._by_length = sorted(
            ((v, k) for k, v in self._values.items() if len(v) >= MIN_REDACTED_LENGTH),
            key=lambda pair: -len(pair[0]),
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Secrets:
        return cls(
            {k.removeprefix(PREFIX): v for k, v in environ.items() if k.startswith(PREFIX) and v}
        )

    @property
    def too_short_to_redact(self) -> list[str]:
        return sorted(k for k, v in self._values.items() if len(v) < MIN_REDACTED_LENGTH)

    @property
    def names(self) -> list[str]:
        return sorted(self._values)

    def resolve(self, text: str) -> str:
        """Replace placeholders by values. Only executors call this, just before running."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._values:
                raise MissingSecret(f"secret {name} is not set; set {PREFIX}{name}")
            return self._values[name]

        return PLACEHOLDER.sub(value, text)

    def resolve_all(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.resolve(data)
        if isinstance(data, dict):
            return {k: self.resolve_all(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.resolve_all(v) for v in data]
        return data

    def redact(self, text: str) -> str:
        """Replace every secret value by its placeholder."""
        for value, name in self._by_length:
            if value in text:
                text = text.replace(value, f"{{{{secrets.{name}}}}}")
        return text

    def redact_all(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {k: self.redact_all(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.redact_all(v) for v in data]
        return data


class RedactingFilter(logging.Filter):
    """Rewrites each log record's message with secret values replaced."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.secrets.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
