"""An attacker's workflow naming MCP servers its tenant may not start or reach: a program
outside the tenant's shell programs, a path outside what servers may read, a URL on loopback.
Each is refused before anything starts or a byte is sent. Loopback targets only."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from domain.errors import PolicyRefused
from domain.session import SessionStatus, WorkflowSession
from domain.tenant import Policy
from engine.executors import Command
from engine.executors.mcp_config import McpServer
from engine.executors.mcp_tools import (
    MAX_ERRLOG_CHARS,
    McpExecutor,
    McpLimits,
    Tail,
    python_paths,
)
from engine.secrets import Secret, Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.egress import EgressPolicy
from engine.tenancy.policies import Policies, admitted_config
from tests.api.conftest import Api
from tests.api.test_errors import assert_problem
from tests.api.test_sessions import create
from tests.conftest import EXAMPLES
from tests.integration.conftest import (
    LoopFactory,
    drive,
    secret_store,
    start_session,
)
from tests.integration.test_mcp import MCP_POLICY, SERVER, processes_marked
from tests.redteam.test_tenant_policy import refused

__all__ = ["secret_store"]  # a fixture make_loop takes


def set_policy(app: Stepline, tenant: str, **policy: object) -> None:
    Policies(app, Settings(database_url=None)).set(tenant, policy, actor="test operator")


def failure_of(app: Stepline, session_id: UUID) -> dict[str, object]:
    """The error of the session's one command."""
    results = [e for e in app.history(session_id) if isinstance(e, WorkflowSession.CommandFinished)]
    assert len(results) == 1
    assert results[0].error is not None
    return results[0].error


class Listener:
    """A loopback port that counts the connections made to it."""

    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    opened = Listener(socket.AF_INET, "127.0.0.1")
    yield opened
    opened.close()


def test_a_program_outside_the_tenants_shell_programs_starts_no_server(
    make_loop: LoopFactory,
) -> None:
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES])
    set_policy(loop.app, "acme", executors=["http", "mcp"], shell_allow=["echo"])
    marker = uuid4().hex
    session_id = start_session(
        loop,
        ['call add with {"a": 1, "b": 2}'],
        executor="mcp",
        mcp={"command": ["python", SERVER], "env": {"MARKER": marker}},
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    error = failure_of(loop.app, session_id)
    assert error["code"] == "SANDBOX_VIOLATION"
    assert "not one of this tenant's shell programs" in str(error["message"])
    assert processes_marked(marker) == []


@pytest.mark.parametrize(
    "command",
    [
        ["/usr/bin/python3", SERVER],  # a path is not a program name the allow-list can judge
        ["python", "/etc/passwd"],  # outside the work directory and STEPLINE_MCP_PATHS
        ["python", f"{EXAMPLES}/../engine/settings.py"],
        ["python", "--x=/etc/hostname"],
    ],
)
def test_a_server_command_reaching_outside_its_jail_is_refused(
    make_loop: LoopFactory, command: list[str]
) -> None:
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES])
    set_policy(loop.app, "acme", executors=["http", "mcp"], shell_allow=["python"])
    session_id = start_session(loop, ["call add"], executor="mcp", mcp={"command": command})

    assert drive(loop, session_id).status is SessionStatus.FAILED
    assert failure_of(loop.app, session_id)["code"] == "SANDBOX_VIOLATION"


def test_a_workflow_cannot_widen_its_tenants_programs_for_a_server(
    make_loop: LoopFactory,
) -> None:
    loop = make_loop(ai=False, mcp_paths=[EXAMPLES])
    set_policy(loop.app, "acme", executors=["http", "mcp"], shell_allow=["python", "echo"])
    session_id = start_session(
        loop,
        ["call add"],
        executor="mcp",
        shell_allow=["echo"],  # the workflow's own narrowing holds for servers too
        mcp={"command": ["python", SERVER]},
    )

    assert drive(loop, session_id).status is SessionStatus.FAILED
    assert failure_of(loop.app, session_id)["code"] == "SANDBOX_VIOLATION"


def test_creating_a_session_with_a_server_program_the_tenant_lacks_is_refused() -> None:
    policy = Policy(executors=("mcp",), shell_allow=("echo",))
    with pytest.raises(PolicyRefused) as refused:
        admitted_config(policy, {"executor": "mcp", "mcp": {"command": ["python", SERVER]}})
    assert refused.value.details["field"] == "config.mcp.command"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"]
)
def test_an_http_server_on_loopback_is_refused_under_the_default_egress_policy(
    make_loop: LoopFactory, listener: Listener, host: str
) -> None:
    loop = make_loop(ai=False)
    set_policy(loop.app, "initech", executors=["http", "mcp"])  # egress: the public internet
    session_id = start_session(
        loop,
        ['call add with {"a": 1, "b": 2}'],
        executor="mcp",
        tenant="initech",
        mcp={"url": f"http://{host}:{listener.port}/mcp"},
    )

    assert drive(loop, session_id).status is SessionStatus.FAILED
    error = failure_of(loop.app, session_id)
    assert error["code"] == "EGRESS_REFUSED"
    assert listener.connections == 0  # refused before anything was sent


def test_a_tenant_without_the_mcp_executor_runs_no_call(
    make_loop: LoopFactory, listener: Listener
) -> None:
    loop = make_loop(ai=False)
    set_policy(loop.app, "initech", executors=["http"], egress_allow=["127.0.0.1"])
    session_id = start_session(
        loop,
        ["call add"],
        tenant="initech",
        mcp={"url": f"http://127.0.0.1:{listener.port}/mcp"},
    )

    assert drive(loop, session_id).status is SessionStatus.FAILED
    failed = [e for e in loop.app.history(session_id) if isinstance(e, WorkflowSession.StepFailed)]
    assert failed[0].error["code"] == "POLICY_REFUSED"
    assert listener.connections == 0


def test_an_api_body_naming_a_server_program_the_tenant_lacks_is_refused(api: Api) -> None:
    api.services.runtime.policies.set(
        "acme", {"executors": ["http", "mcp"], "shell_allow": ["echo"]}, actor="operator"
    )
    body = {
        "name": "mcp",
        "executor": "mcp",
        "steps": ["call add"],
        "config": {"mcp": {"command": ["python", SERVER]}},
    }

    problem = refused(api, "alice", body, "config.mcp.command")

    assert "'python' is not one of this tenant's shell programs" in problem["message"]


def test_an_api_body_may_name_a_server_its_tenant_may_start(api: Api) -> None:
    runtime = api.services.runtime
    runtime.policies.set("acme", MCP_POLICY, actor="operator")
    server = {"command": ["python", SERVER], "env": {"TOKEN": "{{secrets.TOKEN}}"}}
    body = {"name": "mcp", "executor": "mcp", "steps": ["call add"], "config": {"mcp": server}}
    with api.client("alice") as alice:
        session_id = create(alice, body)
        both = {
            "name": "mcp",
            "steps": ["call add"],
            "config": {"mcp": {**server, "url": "https://x.test/mcp"}},
        }
        assert_problem(alice.post("/v1/sessions", json=both), 422, "VALIDATION_FAILED")

    assert runtime.app.get_session(UUID(session_id)).config["mcp"]["command"] == server["command"]


KEY = "k3y-only-for-allowed-test"


def executor_of(server: McpServer, workdir: Path) -> McpExecutor:
    """The worker's MCP executor for `server` (as built by `mcp_executor`), for a tenant that
    may start `python` and reach loopback, holding KEY bound to http://allowed.test only."""
    secrets = Secrets(bound=[Secret("KEY", KEY, origins=("http://allowed.test",))])
    limits = McpLimits(
        allowed_programs=("python",), read_only=(*python_paths(), EXAMPLES.resolve())
    )
    return McpExecutor(server, secrets, workdir, limits, EgressPolicy.of(["127.0.0.1"]))


def stored(**config: Any) -> McpServer:
    """A server as a config stored before the model refused it holds it (not validated)."""
    return McpServer.model_construct(
        **{"command": None, "env": {}, "url": None, "headers": {}, **config}
    )


def children_of(pid: int) -> list[int]:
    """The processes `pid` started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize(
    "trick",
    [
        "http://allowed.test\\@127.0.0.1:{port}/mcp",  # a browser's host: allowed.test
        "http://allowed.test@127.0.0.1:{port}/mcp",
        "http://allowed.test:x@127.0.0.1:{port}/mcp",
    ],
)
def test_a_url_whose_host_reads_two_ways_gets_no_secret_and_no_connection(
    listener: Listener, tmp_path: Path, api: Api, trick: str
) -> None:
    url = trick.format(port=listener.port)
    headers = {"X-Api-Key": "{{secrets.KEY}}"}
    with pytest.raises(ValidationError, match=r"backslash|names a user"):
        McpServer.model_validate({"url": url, "headers": headers})
    api.services.runtime.policies.set(
        "acme", {**MCP_POLICY, "egress_allow": ["127.0.0.1"]}, actor="operator"
    )
    body = {"name": "mcp", "executor": "mcp", "steps": ["call add"],
            "config": {"mcp": {"url": url, "headers": headers}}}  # fmt: skip
    with api.client("alice") as alice:
        assert_problem(alice.post("/v1/sessions", json=body), 422, "VALIDATION_FAILED")

    executor = executor_of(stored(url=url, headers=headers), tmp_path)
    try:
        outcome = executor.run(Command("mcp", "add", {"a": 1, "b": 2}))
    finally:
        executor.close()

    assert not outcome.ok
    assert listener.connections == 0  # neither the secret nor anything else was sent


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "PYTHONPATH"])
def test_env_cannot_choose_or_preload_the_servers_program(tmp_path: Path, name: str) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    impostor = workdir / "python"  # what `env: {PATH: <workdir>}` would make `python` run
    impostor.write_text("#!/usr/bin/sh\necho ran > ran.txt\n")
    impostor.chmod(0o755)
    env = {name: str(workdir), "MARKER": uuid4().hex}
    with pytest.raises(ValidationError, match=f"env may not set \\['{name}'\\]"):
        McpServer.model_validate({"command": ["python", SERVER], "env": env})

    executor = executor_of(stored(command=["python", SERVER], env=env), workdir)
    try:
        outcome = executor.run(Command("mcp", "add", {"a": 1, "b": 2}))
    finally:
        executor.close()

    assert outcome.error is not None
    assert outcome.error.code == "SANDBOX_VIOLATION"
    assert f"env may not set ['{name}']" in outcome.error.message
    assert not (workdir / "ran.txt").exists()
    assert processes_marked(env["MARKER"]) == []


def test_a_server_writing_to_stderr_without_end_grows_nothing_on_the_host(
    tmp_path: Path,
) -> None:
    marker = uuid4().hex
    executor = executor_of(stored(command=["python", SERVER], env={"MARKER": marker}), tmp_path)
    try:
        assert executor.run(Command("mcp", "server_id", {})).ok
        (jail,) = children_of(os.getpid())  # bwrap: the server's stderr is its
        assert os.readlink(f"/proc/{jail}/fd/2").startswith("pipe:")  # not a file that grows
    finally:
        executor.close()
    assert processes_marked(marker) == []

    tail = Tail(MAX_ERRLOG_CHARS)  # what reads that pipe
    for _ in range(4096):  # 4 MiB
        tail.writer.write("x" * 1023 + "\n")
    tail.writer.write("the end\n")

    kept = tail.finished()

    assert len(kept) == MAX_ERRLOG_CHARS
    assert kept.endswith("x\nthe end\n")


def test_a_secret_given_to_a_server_is_on_no_command_line_of_the_host(tmp_path: Path) -> None:
    """Any process of the host may read another's command line (ps): a secret in a server's
    env is in the server's environment alone, which only its own user may read."""
    token, marker = f"tok-{uuid4().hex}", uuid4().hex
    server = stored(
        command=["python", SERVER], env={"TOKEN": "{{secrets.TOKEN}}", "MARKER": marker}
    )
    limits = McpLimits(
        allowed_programs=("python",), read_only=(*python_paths(), EXAMPLES.resolve())
    )
    executor = McpExecutor(
        server, Secrets({"TOKEN": token}), tmp_path, limits, EgressPolicy.of(["127.0.0.1"])
    )
    try:
        assert executor.run(Command("mcp", "server_id", {})).ok
        [running] = processes_marked(marker)
        environ = Path(f"/proc/{running}/environ").read_bytes().split(b"\0")
        on_command_lines = [
            proc.name
            for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and token.encode() in _read(proc / "cmdline")
        ]
        held = [os.readlink(fd) for fd in Path(f"/proc/{running}/fd").iterdir()]
    finally:
        executor.close()
    assert f"TOKEN={token}".encode() in environ  # the server has it
    assert on_command_lines == []
    assert not [fd for fd in held if "bwrap" in fd]  # nor does it hold the jail's options


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # a process that ended meanwhile
        return b""
