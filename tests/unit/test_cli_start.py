"""`stepline --help` starts without the heavy stacks: they load when a command runs."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("openai", "fastapi", "uvicorn", "eventsourcing", "psycopg", "pydantic_settings")


def test_the_command_line_declares_its_commands_without_importing_the_runtime() -> None:
    probe = f"import sys, api.cli.main; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == ""


def test_help_lists_every_command() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout

    for command in ("run", "demo", "history", "serve", "worker", "workers", "keys", "projections"):
        assert f" {command} " in shown
