"""What `stepline … --help` says each option takes: an on/off option takes no value."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from api.cli.main import cli

Named = tuple[tuple[str, ...], Any]


def every_command(command: Any, path: tuple[str, ...] = ()) -> Iterator[Named]:
    """Each command under `command` (a group) with the words that name it."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield path, command
        return
    for name, sub in subcommands.items():
        yield from every_command(sub, (*path, name))


def on_off_options(command: Any) -> list[TyperOption]:
    return [p for p in command.params if isinstance(p, TyperOption) and p.type.name == "boolean"]


def test_every_on_off_option_is_a_plain_flag_with_no_negative_form() -> None:
    found = 0
    for path, command in every_command(typer.main.get_command(cli)):
        for option in on_off_options(command):
            assert option.is_flag, (path, option.opts)
            assert not option.secondary_opts, (path, option.opts, option.secondary_opts)
            found += 1
    assert found >= 15  # --json of most commands, --follow, --strict


def test_help_shows_json_with_no_value_after_it() -> None:
    runner = CliRunner()
    checked = 0
    for path, command in every_command(typer.main.get_command(cli)):
        if not any("--json" in o.opts for o in on_off_options(command)):
            continue
        shown = runner.invoke(cli, [*path, "--help"], env={"COLUMNS": "120"}).output
        line = next(line for line in shown.splitlines() if "--json" in line)
        assert not re.search(r"--json\s+[<\[A-Z]", line), (path, line)
        checked += 1
    assert checked >= 10  # run, demo, replay, fork, history, workers, sessions ..., tenants ...
