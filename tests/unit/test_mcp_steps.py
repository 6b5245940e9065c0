"""`call <tool>` steps and the `config.mcp` a workflow names its server with."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.executors import Command
from engine.executors.mcp_config import McpServer, program_refusal
from engine.loop.builtin_steps import builtin
from engine.loop.definitions import DefinitionError


@pytest.mark.parametrize(
    ("step", "command"),
    [
        ('call add with {"a": 1, "b": 2}', Command("mcp", "add", {"a": 1, "b": 2})),
        ("call todo_list", Command("mcp", "todo_list", {})),
        ("call files.read with {}", Command("mcp", "files.read", {})),
        (
            'expect result contains "milk"',
            Command("mcp", "expect_result_contains", {"text": "milk"}),
        ),
    ],
)
def test_a_call_step_is_one_tool_call(step: str, command: Command) -> None:
    assert builtin().match(step) == [command]


def test_a_calls_arguments_must_be_an_object() -> None:
    with pytest.raises(DefinitionError, match="must be a JSON object"):
        builtin().match("call add with [1, 2]")


def test_a_sentence_starting_with_call_is_left_to_the_model() -> None:
    assert builtin().match("Call the support line and ask for a refund") is None


def test_a_server_is_a_command_or_a_url_never_both() -> None:
    with pytest.raises(ValidationError, match="either a command"):
        McpServer.model_validate({"command": ["python"], "url": "https://x.test/mcp"})
    with pytest.raises(ValidationError, match="either a command"):
        McpServer.model_validate({})
    with pytest.raises(ValidationError, match="headers go with a url"):
        McpServer.model_validate({"command": ["python"], "headers": {"A": "b"}})


def test_a_relative_script_is_read_from_beside_the_workflow_file(tmp_path: Path) -> None:
    server = McpServer(command=["python", "server.py", "--verbose"])

    beside = server.beside(tmp_path / "flow.yaml")

    assert beside.command == ["python", str(tmp_path / "server.py"), "--verbose"]


@pytest.mark.parametrize("program", ["sh", "/usr/bin/python3", "./python", ""])
def test_only_a_tenant_shell_program_named_without_a_path_may_start_a_server(
    program: str,
) -> None:
    assert program_refusal([program, "x"], ["python", "echo"]) is not None
    assert program_refusal(["python", "x"], ["python", "echo"]) is None


@pytest.mark.parametrize("name", ["A=B", "1X", "WITH SPACE", ""])
def test_an_env_name_a_program_could_misread_is_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        McpServer.model_validate({"command": ["python"], "env": {name: "x"}})
