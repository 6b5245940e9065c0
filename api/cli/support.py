"""What every `stepline` command shares: where it prints, how it fails, the runtime it opens
and who its commands are recorded as. Light on imports: the web stack is not among them."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import typer
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from domain.errors import DomainError, StandardError
from engine.bootstrap import Runtime, open_runtime
from engine.settings import Settings
from engine.store.database import DatabaseUnavailable

console = Console()
errors = Console(stderr=True)


class ExitCode(IntEnum):
    """How a `stepline` command ends; `run`, `replay` and `fork` use all four."""

    COMPLETED = 0
    NOT_COMPLETED = 1
    """The session failed, was cancelled or expired, or stopped at a pause or a wait."""
    BAD_INPUT = 2
    """Nothing was run: an invalid file, a missing secret, a configuration or a database
    that is not there."""
    INTERRUPTED = 3
    """Ctrl-C, SIGTERM or SIGHUP: the run stopped and handed its session back unfinished."""


def fail(error: StandardError) -> typer.Exit:
    errors.print(f"[bold red]{error.code}[/]: {escape(error.message)}")  # may quote a [name]
    errors.print(f"[dim]{escape(error.suggested_action)}[/]")
    return typer.Exit(code=ExitCode.BAD_INPUT)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        raise fail(StandardError.of("CONFIGURATION_INVALID", message)) from None
    except SettingsError as error:  # a variable that is not valid JSON where JSON is due
        raise fail(StandardError.of("CONFIGURATION_INVALID", str(error))) from None


def cli_actor() -> str:
    """Who a command typed in this terminal is recorded as: `cli:<login>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


@contextmanager
def runtime_or_exit(quiet: bool = False) -> Iterator[Runtime]:
    """The runtime, or a clear error and exit code 2. `quiet`: the live display replaces the
    INFO log lines, unless STEPLINE_LOG_LEVEL asks for them."""
    settings = load_settings()
    if quiet and "log_level" not in settings.model_fields_set:
        settings = settings.model_copy(update={"log_level": "WARNING"})
    try:
        with open_runtime(settings) as runtime:
            yield runtime
    except DomainError as error:
        raise fail(error.to_standard_error()) from None
    except (PersistenceError, DatabaseUnavailable) as error:
        raise fail(StandardError.of("DATABASE_UNAVAILABLE", str(error))) from None
