"""The MCP executor: the tools of a workflow's MCP server (`config.mcp`), offered to the model
as its tools and called by steps such as `call add with {"a": 1, "b": 2}`.

Lifecycle: one server per session run. It is started when the session first needs it (its
first `call`, or the first turn of an AI step) and stopped when the run ends: the session
ended, paused or began to wait (a waiting session holds nothing), or the worker stopped. A
worker that takes a session over, after a crash or a resume, starts a server of its own; what
a server kept in memory does not survive that, so a workflow should not rely on it across a
pause or a wait.

A stdio server runs jailed as a shell command does (`engine.executors.sandbox`): the program
must be one of the tenant's shell programs (narrowed by `config.shell_allow`), every argument
naming a path must stay inside the session's work directory or the read-only paths the
operator lets servers see (`STEPLINE_MCP_PATHS`, and Stepline's own Python, so that `python`
and the `mcp` package are there), it has no network, and its environment is only the
workflow's `env` (secrets filled in as it starts) with PATH and HOME. `env` may not name what
chooses or preloads a program (`mcp_config.DENIED_ENV`), and the program is started by the
path the jail's PATH finds it at. prlimit limits its memory, its CPU time (the workflow's
timeout: a server serves the whole run) and the files it writes, as a shell command's; what it
writes to stderr goes to a pipe of which the worker keeps the last 2,000 characters.

A URL is reached under the tenant's egress policy, checked before anything is sent and again
by every connection. Which secrets its headers and tool arguments may carry is decided by the
URL's origin as httpx reads it, which is where it connects (a URL browsers read otherwise, with
a backslash or a user name, is refused: `mcp_config.url_refusal`).

A tool's name is offered as the server spells it, unless it clashes with the step's own tools
(`complete_step`, ...) or is not a name the model's API takes: then `mcp_<name>`, its
characters past `[A-Za-z0-9_-]` made `_`. A tool call is recorded as a command named after the
tool (as offered), its arguments with secrets as placeholders; the result's text, bounded, is
its output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
)

from engine.executors import (
    Command,
    Outcome,
    VariableNotSet,
    refused,
    truncated,
    with_variables,
)
from engine.executors.http import tls_context
from engine.executors.mcp_client import McpConnection, McpUnavailable, Streams, Transport
from engine.executors.mcp_config import McpServer, env_refusal, program_refusal, url_refusal
from engine.executors.sandbox import (
    SANDBOX_PATH,
    Jail,
    SandboxUnavailable,
    find_bwrap,
    own_work_directory,
    unlisted,
)
from engine.executors.sandbox_paths import path_candidates
from engine.logs import LOGGER_NAME
from engine.secrets import SHELL, Secrets, SecretUnusable, origin_of
from engine.tenancy.egress import EgressPolicy, EgressRefused
from engine.tenancy.egress_async import checked_async_transport

log = logging.getLogger(LOGGER_NAME)
EXPECT_RESULT_CONTAINS = "expect_result_contains"
RESERVED = frozenset({"complete_step", "fail_step", "request_approval", EXPECT_RESULT_CONTAINS})
"""Names a server's tool is not offered under: the step's own tools, and this executor's check."""
OFFERED_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PREFIX = "mcp_"
MAX_DESCRIPTION = 1_000
MAX_ERRLOG_CHARS = 2_000
GRACE_S = 1.0
"""How long a failed server's last words are waited for."""


@dataclass(frozen=True)
class McpLimits:
    timeout_s: float = 30.0
    """Per tool call; starting a server (and listing its tools) too."""
    max_output_chars: int = 4_000
    allowed_programs: tuple[str, ...] = ()
    bwrap_path: str | None = None
    read_only: tuple[Path, ...] = ()
    """Besides the work directory, what a stdio server may read (and name in its arguments)."""
    memory_mb: int = 1024
    cpu_s: int = 3_600
    """CPU time of the server's whole life (one session run): generous, since it serves every
    step of the run; `mcp_executor` makes it the workflow's timeout."""
    file_mb: int = 64
    """The largest file the server may write."""
    processes: int = 64


SERVER_ENV_PREFIX = "STEPLINE_SERVER_ENV_"
SERVER_ENV = (
    "import os, sys\n"
    f"prefix = {SERVER_ENV_PREFIX.encode()!r}\n"
    "given = {k[len(prefix):]: v for k, v in os.environb.items() if k.startswith(prefix)}\n"
    "os.execve(sys.argv[1], sys.argv[1:], given)\n"
)
"""Run in the jail once it has dropped to the sandbox uid: starts the server with exactly the
environment handed to it under `SERVER_ENV_PREFIX`, under its own names."""


def python_paths() -> tuple[Path, ...]:
    """Stepline's own Python environment (its venv and the interpreter it was made from), so
    that a jailed `python` is this one, with the `mcp` package."""
    return tuple(dict.fromkeys([Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]))


class McpExecutor:
    kind = "mcp"
    checks = frozenset({EXPECT_RESULT_CONTAINS})

    def __init__(
        self,
        server: McpServer | None,
        secrets: Secrets,
        workdir: Path,
        limits: McpLimits,
        egress: EgressPolicy,
    ) -> None:
        self.server = server
        self.secrets = secrets
        self.workdir = workdir
        self.limits = limits
        self.egress = egress
        self.variables: dict[str, Any] = {}
        self.last_result: str | None = None
        self._connection: McpConnection | None = None
        self._tools: dict[str, Tool] = {}
        """The server's tools by the name they are offered under."""
        self._unavailable: Outcome | None = None
        self._errlog: Tail | None = None

    # ---- the server -----------------------------------------------------------------------

    def _connected(self, retry: bool) -> McpConnection | Outcome:
        """The running server, started if need be; the outcome saying why it cannot run. A
        failure is kept (the model's briefing and tools ask again) until a command retries."""
        if self._connection is not None and self._connection.alive:
            return self._connection
        if self._unavailable is not None and not retry:
            return self._unavailable
        self.close()
        started = self._started()
        if isinstance(started, Outcome):
            self._unavailable = started
        else:
            self._unavailable = None
            self._connection = started
        return started

    def _started(self) -> McpConnection | Outcome:
        server = self.server
        if server is None:
            return Outcome.failed(
                "MCP_NOT_CONFIGURED",
                "the workflow names no MCP server: give config.mcp a command or a url",
            )
        try:
            transport = self._stdio(server) if server.command else self._http(server)
        except (SecretUnusable, VariableNotSet) as error:
            return refused(error)
        except McpRefused as refusal:
            return refusal.outcome
        connection = McpConnection(transport, self._name(), self.limits.timeout_s)
        try:
            tools = connection.start()
        except McpUnavailable as error:
            return Outcome.failed(
                "MCP_SERVER_UNAVAILABLE",
                f"the MCP server could not be started: {error}{self._server_said()}",
            )
        self._tools = offered(tools)
        return connection

    def _name(self) -> str:
        server = self.server
        assert server is not None
        return (server.command or [str(urlsplit(server.url or "").hostname)])[0][:40]

    def _stdio(self, server: McpServer) -> Transport:
        assert server.command is not None
        argv = server.command
        refusal = program_refusal(argv, self.limits.allowed_programs)
        if refusal is not None:
            raise McpRefused(Outcome.failed("SANDBOX_VIOLATION", refusal, command=argv))
        outside = self._outside(argv)
        if outside:
            raise McpRefused(
                Outcome.failed(
                    "SANDBOX_VIOLATION",
                    f"arguments {outside} name paths outside the session's working directory "
                    "and the paths MCP servers may read (STEPLINE_MCP_PATHS)",
                    arguments=outside,
                )
            )
        refusal = env_refusal(server.env)  # a config stored before the model refused it
        if refusal is not None:
            raise McpRefused(Outcome.failed("SANDBOX_VIOLATION", refusal, command=argv))
        program = self._program(argv[0])
        env = self.secrets.filled(with_variables(server.env, {}), SHELL)
        params = self._launched(self._jail(), [program, *argv[1:]], env)
        errlog = self._errlog = Tail(MAX_ERRLOG_CHARS)
        return lambda: stdio_client(params, errlog=errlog.writer)

    def _launched(self, jail: Jail, argv: list[str], env: dict[str, str]) -> StdioServerParameters:
        """How the SDK starts `argv` in `jail`, with `env` over PATH and HOME.

        The server's environment is handed to the jail under names of Stepline's own, and
        given its own names by `SERVER_ENV` once the jail has dropped to the sandbox uid: what
        runs before the drop (as root, when the worker is) never sees a tenant's variable by
        its name. It is set by bwrap's options, which are on no command line (`unlisted`): a
        tenant's secret in `env` is not on the host's process list. bwrap clears its own
        environment for the jail (--clearenv); the SDK adds a few of the worker's variables to
        the launcher's alone. The program is named by its path (`argv[0]`, found by
        `_program`), so that nothing in `env` chooses it."""
        base = self._environment()
        given = {f"{SERVER_ENV_PREFIX}{name}": value for name, value in {**base, **env}.items()}
        python = str(Path(sys.executable).resolve())  # in the jail at that path (python_paths)
        started = [*self._limits(), python, "-I", "-c", SERVER_ENV, *argv]
        options, command = jail.parts(started, {**base, **given}, status_fd=None)  # stderr kept
        launcher, launcher_env = unlisted(jail.bwrap, options, command)
        return StdioServerParameters(command=launcher[0], args=launcher[1:], env=launcher_env)

    def _program(self, name: str) -> str:
        """The absolute path of the server's program, as the jail's PATH finds it."""
        found = shutil.which(name, path=self._environment()["PATH"])
        if found is None:
            raise McpRefused(
                Outcome.failed(
                    "COMMAND_FAILED",
                    f"cannot start {name}: not found in the sandbox's "
                    f"{self._environment()['PATH']}",
                )
            )
        return found

    def _limits(self) -> list[str]:
        """prlimit's limits for the server, as a shell command has them: memory, CPU time (a
        long-lived server's own, `McpLimits.cpu_s`) and the size of a file it writes."""
        limits = self.limits
        return [
            "/usr/bin/prlimit",
            f"--as={limits.memory_mb * 1024 * 1024}",
            f"--cpu={limits.cpu_s}",
            f"--fsize={limits.file_mb * 1024 * 1024}",
            "--",
        ]

    def _environment(self) -> dict[str, str]:
        """What a server's environment always holds: only /usr and Stepline's Python are in
        the jail, so the worker's PATH would name directories it lacks."""
        path = ":".join([*(str(p / "bin") for p in python_paths()), SANDBOX_PATH])
        return {"PATH": path, "HOME": str(self.workdir.resolve())}

    def _jail(self) -> Jail:
        self.workdir.mkdir(parents=True, exist_ok=True)
        own_work_directory(self.workdir)
        try:
            jail = Jail(
                find_bwrap(self.limits.bwrap_path),
                self.workdir.resolve(),
                processes=self.limits.processes,
                # Stepline's Python, which gives the server its environment (`SERVER_ENV`).
                read_only=tuple(dict.fromkeys([*python_paths(), *self.limits.read_only])),
            )
            jail.check()
        except SandboxUnavailable as error:
            raise McpRefused(Outcome.failed("SANDBOX_UNAVAILABLE", str(error))) from None
        return jail

    def _outside(self, argv: list[str]) -> list[str]:
        """The arguments naming a path outside the work directory and the read-only paths."""
        roots = [os.path.realpath(self.workdir), *(str(p) for p in self.limits.read_only)]
        return [
            argument
            for argument in argv[1:]
            if not all(_inside_any(c, self.workdir, roots) for c in path_candidates(argument))
        ]

    def _http(self, server: McpServer) -> Transport:
        refusal = url_refusal(server.url or "")
        if refusal is not None:  # a config stored before the model refused it
            raise McpRefused(Outcome.failed("EGRESS_REFUSED", f"config.mcp.url: {refusal}"))
        url = self._url()
        parts = httpx.URL(url)
        try:
            self.egress.addresses(
                parts.host, parts.port or (443 if parts.scheme == "https" else 80)
            )
        except EgressRefused as refusal_:
            raise McpRefused(
                Outcome.failed("EGRESS_REFUSED", str(refusal_), **refusal_.refusal.details())
            ) from None
        except OSError as error:
            raise McpRefused(
                Outcome.failed("MCP_SERVER_UNAVAILABLE", f"{parts.host} does not resolve: {error}")
            ) from None
        headers = self.secrets.filled(with_variables(server.headers, {}), self._destination())
        timeout = httpx.Timeout(self.limits.timeout_s, read=300.0)
        egress = self.egress

        @contextlib.asynccontextmanager
        async def opened() -> AsyncIterator[Streams]:
            transport = checked_async_transport(egress, tls_context())
            async with (
                httpx.AsyncClient(
                    headers=headers, timeout=timeout, transport=transport, trust_env=False
                ) as client,
                streamable_http_client(url, http_client=client) as (read, write, _),
            ):
                yield read, write

        return opened

    def _url(self) -> str:
        """The server's URL as httpx reads it, which is where it connects: the one spelling
        the egress check, the secrets' destination and the connection all use."""
        server = self.server
        url = server.url if server is not None else None
        assert url is not None
        return str(httpx.URL(url))

    def _server_said(self) -> str:
        """What a stdio server wrote to stderr before it failed (its last words), if anything."""
        if self._errlog is None:
            return ""
        said = self.secrets.redact(self._errlog.finished()).strip()
        lines = [line for line in said.splitlines() if not line.startswith('{"child-pid"')]
        said = "\n".join(lines)[-MAX_ERRLOG_CHARS:]
        return f"; it said: {said}" if said else ""

    def close(self, *, ended: bool = True) -> None:
        """Stop the server: a paused or waiting session holds none (see the module's note)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        if self._errlog is not None:
            self._errlog.close()  # its last words stay readable, for `_server_said`

    # ---- commands -------------------------------------------------------------------------

    def run(self, command: Command) -> Outcome:
        if command.name == EXPECT_RESULT_CONTAINS:
            return self._expect_result_contains(str(command.args.get("text", "")))
        connection = self._connected(retry=True)
        if isinstance(connection, Outcome):
            return connection
        tool = self._tool_named(command.name)
        if tool is None:
            names = ", ".join(sorted(self._tools)) or "none"
            return Outcome.failed(
                "UNKNOWN_TOOL", f"the MCP server has no tool {command.name!r}; it has: {names}"
            )
        try:
            arguments = self.secrets.filled(
                with_variables(command.args, self.variables), self._destination()
            )
        except (SecretUnusable, VariableNotSet) as error:
            return refused(error)
        try:
            result = connection.call(tool.name, arguments)
        except McpUnavailable as error:
            self.close()  # the next command starts the server again
            return Outcome.failed("MCP_SERVER_UNAVAILABLE", f"{error}{self._server_said()}")
        return self._finished(tool.name, result)

    def _tool_named(self, name: str) -> Tool | None:
        """The tool a command names: as offered, or as the server spells it (a step's)."""
        if name in self._tools:
            return self._tools[name]
        return next((tool for tool in self._tools.values() if tool.name == name), None)

    def _destination(self) -> str:
        """Where a call's arguments go: a stdio server is a jailed program, as a shell
        command is; a URL's server is its origin."""
        server = self.server
        return origin_of(self._url()) if server is not None and server.url else SHELL

    def _finished(self, name: str, result: CallToolResult) -> Outcome:
        text = rendered(result)
        self.last_result = text
        shown = truncated(text, self.limits.max_output_chars)
        if result.isError:
            return Outcome.failed("MCP_TOOL_ERROR", f"{name} failed: {shown}", tool=name)
        output: dict[str, Any] = {"tool": name, "result": shown}
        structured = json.dumps(result.structuredContent, ensure_ascii=False, default=str)
        if result.structuredContent is not None and len(structured) <= self.limits.max_output_chars:
            output["structured"] = result.structuredContent
        return Outcome.of(True, **output)

    def _expect_result_contains(self, text: str) -> Outcome:
        if self.last_result is None:
            return Outcome.failed("EXPECTATION_FAILED", "no tool has been called yet")
        if text not in self.last_result:
            return Outcome.failed(
                "EXPECTATION_FAILED",
                f"the last tool result does not contain {text!r}",
                result=truncated(self.last_result, 200),
            )
        return Outcome.of(True, found=text)

    # ---- recovery and AI ------------------------------------------------------------------

    def restore(self, command: Command, output: str) -> None:
        if command.name in self.checks:
            return
        with contextlib.suppress(json.JSONDecodeError, TypeError, KeyError):
            recorded = json.loads(output)
            self.last_result = str(recorded["result"])

    def state(self) -> dict[str, Any] | None:
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        return None

    def briefing(self) -> str | None:
        connection = self._connected(retry=False)
        if isinstance(connection, Outcome):
            return f"The MCP server's tools are not available: {connection.output}"
        return None

    def tools(self) -> list[dict[str, Any]]:
        if isinstance(self._connected(retry=False), Outcome):
            return []
        return [_definition(name, tool) for name, tool in self._tools.items()]

    def command_for_tool(self, name: str, arguments: dict[str, Any]) -> Command | None:
        if name not in self._tools:
            return None
        return Command(self.kind, name, arguments)


class McpRefused(Exception):
    """A server the policies do not let start or be reached: nothing ran, nothing was sent."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.output)
        self.outcome = outcome


class Tail:
    """Where a stdio server's stderr goes: a pipe whose reader keeps only the last `keep`
    characters, so a server writing without end grows nothing on the worker's host."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._kept = ""
        self._lock = threading.Lock()
        read, write = os.pipe()
        self.writer: TextIO = open(write, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True)
        self._reader.start()

    def _read(self, read: int) -> None:
        with open(read, "rb") as stream:
            while chunk := stream.read1(65_536):
                with self._lock:
                    text = self._kept + chunk.decode("utf-8", errors="replace")
                    self._kept = text[-self.keep :]

    def text(self) -> str:
        with self._lock:
            return self._kept

    def finished(self) -> str:
        """What was kept once the server (which failed) has closed its end too, or after a
        moment if it has not."""
        self.close()
        self._reader.join(timeout=GRACE_S)
        return self.text()

    def close(self) -> None:
        """Close the worker's end; the reader ends once the server's end is closed too."""
        with contextlib.suppress(OSError):
            self.writer.close()


def offered(tools: list[Tool]) -> dict[str, Tool]:
    """The tools by the names the model is offered (see the module's note); a second tool
    offered under a name already taken is left out, and so is a tool whose schema is not one
    the step's checks can read (`schema_refusal`), logged as the server is started."""
    by_name: dict[str, Tool] = {}
    for tool in tools:
        refusal = schema_refusal(tool.inputSchema)
        if refusal is not None:
            log.warning("MCP tool %r is not offered: its inputSchema %s", tool.name, refusal)
            continue
        name = tool.name
        if name in RESERVED or not OFFERED_NAME.match(name):
            name = PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", name)[: 64 - len(PREFIX)]
        by_name.setdefault(name, tool)
    return by_name


def schema_refusal(schema: object) -> str | None:
    """Why a tool's input schema is left out, or None: it must be an object whose
    `properties` (if any) map names to schemas (objects) and whose `required` (if any) is a
    list of names."""
    if not isinstance(schema, dict):
        return "is not an object"
    if schema.get("type", "object") != "object":
        return "is not of type object"
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(spec, dict) for spec in properties.values()
    ):
        return "has properties that are not an object of schemas"
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        return "has a required that is not a list of names"
    return None


def rendered(result: CallToolResult) -> str:
    """A tool result as text: its text parts, and a note for each part that is not text."""
    parts: list[str] = []
    for item in result.content:
        match item:
            case TextContent():
                parts.append(item.text)
            case EmbeddedResource(resource=TextResourceContents() as resource):
                parts.append(resource.text)
            case ImageContent():
                parts.append(f"[image {item.mimeType}, {len(item.data) * 3 // 4} bytes]")
            case ResourceLink():
                parts.append(f"[resource {item.uri}]")
            case _:
                parts.append(f"[{item.type} content]")
    return "\n".join(parts)


def _definition(name: str, tool: Tool) -> dict[str, Any]:
    description = tool.description or tool.title or f"the MCP server's {tool.name} tool"
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": truncated(description, MAX_DESCRIPTION),
            "parameters": tool.inputSchema or {"type": "object", "properties": {}},
        },
    }


def _inside_any(candidate: str, workdir: Path, roots: list[str]) -> bool:
    if candidate.startswith("~"):
        return False
    resolved = os.path.realpath(os.path.join(workdir, candidate))
    return any(resolved == root or resolved.startswith(root.rstrip("/") + "/") for root in roots)
