"""MCP tool servers: the example stdio server (examples/mcp_server.py), started jailed by the
session's run, called by `call` steps and by an AI step's tool calls, stopped with the run."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from mcp.types import Tool

from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus, WorkflowSession
from engine.executors.mcp_tools import offered, python_paths
from engine.executors.sandbox import SANDBOX_PATH
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.policies import Policies
from tests.conftest import EXAMPLES, PASSWORD
from tests.e2e.conftest import free_port
from tests.integration.conftest import (
    LoopFactory,
    assert_stored_nowhere,
    drive,
    start_session,
    wait_for,
)
from tests.scripted_model import ScriptedModel

SERVER = str(EXAMPLES / "mcp_server.py")
MCP_POLICY = {
    "executors": ["http", "mcp"],
    "shell_allow": ["python", "echo"],
    "egress_allow": ["127.0.0.1", "localhost"],
}


def allow_mcp(app: Stepline, tenant: str = "acme") -> None:
    """The operator lets `tenant` start Python MCP servers."""
    Policies(app, Settings(database_url=None)).set(tenant, MCP_POLICY, actor="test operator")


def mcp_config(marker: str, **env: str) -> dict[str, object]:
    """The example server, its environment marked so that its processes can be found."""
    return {"command": ["python", SERVER], "env": {"MARKER": marker, **env}}


def processes_marked(marker: str) -> list[int]:
    """The processes (a server, or its jail) whose environment holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"MARKER={marker}".encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def finished(app: Stepline, session_id: UUID) -> list[WorkflowSession.CommandFinished]:
    return [e for e in app.history(session_id) if isinstance(e, WorkflowSession.CommandFinished)]


def test_call_steps_run_the_tools_of_a_server_the_run_starts_and_stops(
    make_loop: LoopFactory,
) -> None:
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES])
    allow_mcp(loop.app)
    marker = uuid4().hex
    session_id = start_session(
        loop,
        [
            'call todo_add with {"title": "milk"}',
            "call todo_list",
            'expect result contains "milk"',
            'call add with {"a": 2, "b": 3}',
            'expect result contains "5"',
        ],
        executor="mcp",
        mcp=mcp_config(marker),
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    issued = [
        (e.executor, e.name, e.args)
        for e in loop.app.history(session_id)
        if isinstance(e, WorkflowSession.CommandIssued)
    ]
    assert issued == [
        ("mcp", "todo_add", {"title": "milk"}),
        ("mcp", "todo_list", {}),
        ("mcp", "add", {"a": 2, "b": 3}),
    ]
    assert json.loads(finished(loop.app, session_id)[1].output)["structured"] == {
        "result": ["milk"]
    }
    assert processes_marked(marker) == []  # the run's end stopped the server and its jail


@pytest.mark.parametrize("conversation", ["summary", "messages"])
def test_an_ai_step_is_offered_the_servers_tools_and_its_calls_are_recorded(
    make_loop: LoopFactory, model: ScriptedModel, conversation: str
) -> None:
    loop = make_loop(mcp_paths=[EXAMPLES], ai_conversation=conversation)
    allow_mcp(loop.app)
    model.calls("todo_add", reasoning="add it", title="bread")
    model.calls("todo_list", reasoning="check it")
    model.calls("complete_step", summary="bread is on the list", evidence=["todo_list: bread"])
    marker = uuid4().hex
    session_id = start_session(
        loop, ["Put bread on the to-do list"], executor="mcp", mcp=mcp_config(marker)
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    offered = model.tool_names(0)
    assert {"add", "todo_add", "todo_list", "complete_step", "fail_step"} <= offered
    schema = next(
        tool["function"]["parameters"]
        for tool in model.requests[0]["tools"]
        if tool["function"]["name"] == "add"
    )
    assert schema["required"] == ["a", "b"]  # the server's JSON Schema, passed through
    assert schema["properties"]["a"]["type"] == "number"
    outputs = [json.loads(e.output) for e in finished(loop.app, session_id)]
    assert [o["tool"] for o in outputs] == ["todo_add", "todo_list"]
    assert outputs[1]["structured"] == {"result": ["bread"]}
    if conversation == "messages":  # the recorded calls are shown back as the tools' own
        called = [
            call["function"]["name"]
            for message in model.requests[2]["messages"]
            for call in message.get("tool_calls") or []
        ]
        assert called == ["todo_add", "todo_list"]
    assert processes_marked(marker) == []


def test_a_server_tool_named_like_a_step_tool_is_offered_under_another_name() -> None:
    tools = [
        Tool(name=name, inputSchema={"type": "object"})
        for name in ("complete_step", "files.read", "add")
    ]
    assert list(offered(tools)) == ["mcp_complete_step", "mcp_files_read", "add"]


def test_a_secret_reaches_the_server_as_it_starts_and_no_event(
    make_loop: LoopFactory, database_url: str
) -> None:
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES], shell_allow=["python"])
    session_id = start_session(
        loop,
        ["call greeting_from_env", 'expect result contains "hello s3cret"'],
        executor="mcp",
        tenant=DEV_TENANT,  # whose secrets are the environment's (DEMO_PASSWORD)
        mcp=mcp_config(uuid4().hex, GREETING="hello {{secrets.DEMO_PASSWORD}}"),
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED
    output = json.loads(finished(loop.app, session_id)[0].output)["result"]
    assert output.startswith("hello {{secrets.DEMO_PASSWORD}} | ")
    assert_stored_nowhere(database_url, PASSWORD)


def test_the_servers_environment_is_only_what_the_workflow_gives(
    make_loop: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_ONLY", "not for servers")
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES])
    allow_mcp(loop.app)
    session_id = start_session(
        loop, ["call greeting_from_env"], executor="mcp", mcp=mcp_config("m", GREETING="hi")
    )

    drive(loop, session_id)

    names = json.loads(finished(loop.app, session_id)[0].output)["result"].split(" | ")[1]
    # PWD and LC_CTYPE are set by bwrap and Python themselves
    assert set(names.split()) <= {"GREETING", "MARKER", "HOME", "PATH", "PWD", "LC_CTYPE"}


@pytest.fixture
def http_server() -> Iterator[str]:
    """The example server over streamable HTTP on loopback; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, SERVER, "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port), what="the HTTP MCP server")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_server_reached_over_streamable_http_serves_call_steps(
    make_loop: LoopFactory, http_server: str
) -> None:
    loop = make_loop(ai=False)
    allow_mcp(loop.app)  # its egress allow-list names 127.0.0.1
    session_id = start_session(
        loop,
        ['call todo_add with {"title": "over http"}', "call todo_list"],
        executor="mcp",
        mcp={"url": http_server, "headers": {"X-Token": "{{secrets.MISSING}}"}},
    )

    session = drive(loop, session_id)

    # a header's secret the tenant lacks: the server is not reached with a placeholder
    assert session.status is SessionStatus.FAILED
    assert finished(loop.app, session_id)[0].error["code"] == "SECRET_NOT_FOUND"

    session_id = start_session(
        loop,
        ['call todo_add with {"title": "over http"}', "call todo_list"],
        executor="mcp",
        mcp={"url": http_server},
    )

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    listed = json.loads(finished(loop.app, session_id)[1].output)
    assert listed["structured"] == {"result": ["over http"]}


def test_call_in_a_workflow_with_no_server_is_an_instruction_for_the_model(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    """`Call support` in an HTTP workflow means telephone someone: the model decides it (it
    used to be taken for a tool `support` of a server the workflow has none of, and fail)."""
    loop = make_loop()
    model.calls("complete_step", summary="support was called")

    session = drive(loop, start_session(loop, ["Call support"], target))

    assert session.status is SessionStatus.COMPLETED
    assert len(model.requests) == 1


def test_the_server_runs_as_its_programs_path_under_cpu_and_file_size_limits(
    make_loop: LoopFactory,
) -> None:
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES], workflow_timeout_ms=120_500)
    allow_mcp(loop.app)
    session_id = start_session(
        loop, ["call own_process"], executor="mcp", mcp=mcp_config(uuid4().hex)
    )

    assert drive(loop, session_id).status is SessionStatus.COMPLETED

    started = json.loads(finished(loop.app, session_id)[0].output)["structured"]
    jail_path = ":".join([*(str(p / "bin") for p in python_paths()), SANDBOX_PATH])
    assert started["program"] == shutil.which("python", path=jail_path)  # not found by env
    assert started["program"].startswith("/")
    assert started["cpu"] == 121  # the workflow's timeout, in whole seconds
    assert started["fsize"] == 64 * 1024 * 1024


def test_what_a_server_writes_to_stderr_is_in_the_error_when_it_cannot_start(
    make_loop: LoopFactory,
) -> None:
    """The server's own stderr reaches the worker (bwrap's status descriptor is not 2, which
    the jail would close), so a failed start says why."""
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES])
    allow_mcp(loop.app)
    crash = "import sys; sys.stderr.write('no-database-configured-for-server'); sys.exit(3)"
    session_id = start_session(
        loop, ["call todo_list"], executor="mcp", mcp={"command": ["python", "-c", crash]}
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert session.error is not None
    assert "no-database-configured-for-server" in json.dumps(session.error)
