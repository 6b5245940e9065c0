"""The shell executor: allow-listed programs in a per-session working directory, never a shell.

The sandbox rules: the program must be on the allow-list; no argument may name a path outside
the working directory; the environment is scrubbed to an allow-list; CPU time, memory, file
size and process count are limited; a command past its timeout is killed with its whole
process group. A command that breaks a rule runs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from engine.executors import Command, Outcome, refused, truncated
from engine.secrets import SHELL, Secrets, SecretUnusable

DEFAULT_ALLOWED = (
    "echo", "printf", "cat", "ls", "pwd", "true", "false", "grep", "wc", "head", "tail",
    "sort", "uniq", "date", "sleep", "test", "mkdir", "touch", "cp", "mv", "rm", "tr", "cut",
)  # fmt: skip
DEFAULT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass(frozen=True)
class ShellLimits:
    timeout_s: float = 30.0
    cpu_s: int = 30
    memory_mb: int = 512
    file_mb: int = 64
    processes: int = 64
    max_output_chars: int = 4_000
    allowed_programs: tuple[str, ...] = DEFAULT_ALLOWED
    allowed_env: tuple[str, ...] = DEFAULT_ENV
    extra_env: dict[str, str] = field(default_factory=dict)


def _escapes(argument: str) -> bool:
    """Whether an argument names a path outside the working directory."""
    if argument.startswith(("/", "~")):
        return True
    value = argument.split("=", 1)[-1]  # --output=../x
    return ".." in PurePosixPath(value).parts or value.startswith(("/", "~"))


class ShellExecutor:
    kind = "shell"
    checks = frozenset({"expect_exit_code", "expect_output_contains"})

    def __init__(self, workdir: Path, secrets: Secrets, limits: ShellLimits | None = None) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.limits = limits or ShellLimits()
        self.last_exit_code: int | None = None
        self.last_output: str = ""
        workdir.mkdir(parents=True, exist_ok=True)

    def close(self, *, ended: bool = True) -> None:
        pass

    def run(self, command: Command) -> Outcome:
        match command.name:
            case "run":
                return self._run(str(command.args.get("command", "")))
            case "expect_exit_code":
                return self._expect_exit_code(int(command.args["code"]))
            case "expect_output_contains":
                return self._expect_output_contains(str(command.args["text"]))
        return Outcome.failed("UNKNOWN_COMMAND", f"the shell executor has no {command.name}")

    # ---- sandbox ------------------------------------------------------------------------

    def _refusal(self, argv: list[str]) -> str | None:
        if not argv:
            return "the command is empty"
        program = argv[0]
        if "/" in program or program not in self.limits.allowed_programs:
            return (
                f"{program!r} is not an allowed program; allowed: "
                f"{', '.join(self.limits.allowed_programs)}"
            )
        outside = [a for a in argv[1:] if _escapes(a)]
        if outside:
            return f"arguments {outside} name paths outside the session's working directory"
        return None

    def _environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.limits.allowed_env if k in os.environ}
        return {**env, **self.limits.extra_env, "HOME": str(self.workdir)}

    def _limit_resources(self) -> None:
        """Runs in the child before exec."""
        limits = self.limits
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = limits.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    # ---- commands -----------------------------------------------------------------------

    def _run(self, text: str) -> Outcome:
        try:
            argv = shlex.split(text)
        except ValueError as error:
            return Outcome.failed("INVALID_COMMAND", f"cannot parse {text!r}: {error}")
        refusal = self._refusal(argv)
        if refusal is not None:
            return Outcome.failed("SANDBOX_VIOLATION", refusal, command=text)
        try:  # a shell has no network, but what it prints is recorded: see engine.secrets
            resolved: list[str] = self.secrets.filled(argv, SHELL)
        except SecretUnusable as error:
            return refused(error)
        return self._execute(resolved)

    def _execute(self, argv: list[str]) -> Outcome:
        started = time.monotonic()
        try:
            process = subprocess.Popen(  # noqa: S603 - argv passed the sandbox checks
                argv,
                cwd=self.workdir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._limit_resources,  # noqa: PLW1509 - only setrlimit calls
            )
        except OSError as error:
            return Outcome.failed("COMMAND_FAILED", f"cannot start {argv[0]}: {error.strerror}")
        try:
            raw, _ = process.communicate(timeout=self.limits.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return Outcome.failed(
                "COMMAND_TIMEOUT",
                f"{argv[0]} ran past {self.limits.timeout_s:g} s and was killed",
            )
        output = raw.decode("utf-8", errors="replace")
        return self._finished(process.returncode, output, time.monotonic() - started)

    def _finished(self, code: int, output: str, elapsed_s: float) -> Outcome:
        self.last_exit_code, self.last_output = code, output
        shown = truncated(output, self.limits.max_output_chars)
        if code < 0:
            name = signal.Signals(-code).name
            return Outcome.failed(
                "RESOURCE_LIMIT_EXCEEDED",
                f"the process was killed by {name} (a resource limit or a kill)",
                output=shown,
            )
        return Outcome.of(True, exit_code=code, output=shown, output_size=len(output))

    def _expect_exit_code(self, code: int) -> Outcome:
        if self.last_exit_code is None:
            return Outcome.failed("EXPECTATION_FAILED", "no command has run yet in this session")
        if self.last_exit_code != code:
            return Outcome.failed(
                "EXPECTATION_FAILED", f"expected exit code {code}, got {self.last_exit_code}"
            )
        return Outcome.of(True, exit_code=code)

    def _expect_output_contains(self, text: str) -> Outcome:
        if text not in self.last_output:
            return Outcome.failed(
                "EXPECTATION_FAILED",
                f"the output does not contain {text!r}",
                output=truncated(self.last_output, 200),
            )
        return Outcome.of(True, found=text)

    # ---- recovery and AI ----------------------------------------------------------------

    def restore(self, command: Command, output: str) -> None:
        if command.name != "run":
            return
        with contextlib.suppress(json.JSONDecodeError, TypeError, KeyError):
            recorded = json.loads(output)
            self.last_exit_code, self.last_output = recorded["exit_code"], recorded["output"]

    def state(self) -> dict[str, Any] | None:
        return None  # the work directory itself survives a takeover on the same machine

    def load_state(self, state: dict[str, Any]) -> None:
        return None

    def briefing(self) -> str | None:
        return None

    def tools(self) -> list[dict[str, Any]]:
        allowed = ", ".join(self.limits.allowed_programs)
        return [
            {
                "type": "function",
                "function": {
                    "name": "run_shell",
                    "description": (
                        "Run one program (no shell: no pipes, redirects or globbing) in the "
                        f"session's working directory. Allowed programs: {allowed}. Returns the "
                        "exit code and the combined output."
                    ),
                    "parameters": {
                        "type": "object",
                        "properties": {"command": {"type": "string"}},
                        "required": ["command"],
                    },
                },
            }
        ]

    def command_for_tool(self, name: str, arguments: dict[str, Any]) -> Command | None:
        if name != "run_shell":
            return None
        return Command("shell", "run", {"command": str(arguments.get("command", ""))})
