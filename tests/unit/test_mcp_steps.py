"""`call <tool>` steps and the `config.mcp` a workflow names its server with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from mcp.types import Tool
from pydantic import ValidationError

from engine.ai.coercion import coerced
from engine.ai.provider import schema_problem
from engine.executors import Command
from engine.executors.mcp_config import McpServer, env_refusal, program_refusal
from engine.executors.mcp_tools import offered
from engine.logs import LOGGER_NAME
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


@pytest.mark.parametrize(
    "url",
    [
        "https://allowed.example.com\\@evil.com/mcp",  # a browser's host: allowed.example.com
        "http://allowed.test\\@127.0.0.1:9/mcp",
        "https://user@evil.com/mcp",
        "https://allowed.example.com:pw@evil.com/mcp",
        "https://allowed.example.com/\\evil/mcp",
    ],
)
def test_a_url_read_one_way_by_browsers_and_another_by_httpx_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match=r"backslash|names a user|reads differently"):
        McpServer.model_validate({"url": url})


def test_a_plain_url_is_taken() -> None:
    assert McpServer.model_validate({"url": "https://mcp.example.com:8443/mcp"}).url


@pytest.mark.parametrize(
    "name",
    [
        "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
        "BASH_ENV", "ENV", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS", "GIT_SSH_COMMAND", "PERL5LIB",
        "PERL5OPT", "RUBYOPT", "HOME", "path",
    ],
)  # fmt: skip
def test_an_env_name_that_chooses_or_preloads_the_program_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match=f"env may not set .*{name}"):
        McpServer.model_validate({"command": ["python"], "env": {name: "/work/x"}})
    assert env_refusal(["MARKER", "GREETING", "API_TOKEN"]) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "required": 5},
        {"type": "object", "required": [1]},
        {"type": "object", "properties": {"a": "x"}},
        {"type": "object", "properties": ["a"]},
        {"type": "string"},
    ],
)
def test_a_tool_with_a_malformed_schema_is_not_offered(schema: dict[str, Any]) -> None:
    tools = [Tool(name="odd", inputSchema=schema), Tool(name="add", inputSchema={"type": "object"})]
    logged = Logged()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(logged)  # the app's logging setup may keep records from the root's
    try:
        assert list(offered(tools)) == ["add"]
    finally:
        logger.removeHandler(logged)

    assert len([m for m in logged.messages if "'odd' is not offered" in m]) == 1


class Logged(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "required": 5, "properties": {"a": "x"}},
        {"type": "object", "required": ["a", 3], "properties": ["a"]},
        {"type": "object", "properties": {"a": {"type": ["string", "null"], "enum": 5}}},
    ],
)
def test_the_argument_checks_read_a_malformed_schema_without_crashing(
    schema: dict[str, Any],
) -> None:
    assert schema_problem({"a": "1"}, schema) in (None, "missing required ['a']")
    assert coerced({"a": "1"}, schema).arguments == {"a": "1"}
