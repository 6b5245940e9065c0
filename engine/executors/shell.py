"""The shell executor: allow-listed programs in a per-session working directory, never a shell.

Every command runs jailed by bubblewrap (`engine.executors.sandbox`): an unprivileged uid, its
own namespaces, only a read-only /usr and the work directory to see, and NO network at all
(egress for shell commands is out of scope). Without bubblewrap nothing runs
(`SANDBOX_UNAVAILABLE`): there is no unsandboxed fallback.

Before anything runs: the program must be on the allow-list, and no argument may name a path
outside the working directory, option values included (`engine.executors.sandbox_paths`).
The environment is scrubbed to an allow-list; CPU time, memory, file size and process count
are limited; a command past its timeout is killed with its whole sandbox. A command that
breaks a rule runs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.executors import (
    Command,
    Outcome,
    VariableNotSet,
    refused,
    truncated,
    with_variables,
)
from engine.executors.sandbox import (
    SANDBOX_PATH,
    Jail,
    SandboxUnavailable,
    find_bwrap,
    own_work_directory,
    program_exists,
    program_started,
)
from engine.executors.sandbox_paths import outside_arguments
from engine.secrets import SHELL, Secrets, SecretUnusable

DEFAULT_ALLOWED = (
    "echo", "printf", "cat", "ls", "pwd", "true", "false", "grep", "wc", "head", "tail",
    "sort", "uniq", "date", "sleep", "test", "mkdir", "touch", "cp", "mv", "rm", "tr", "cut",
)  # fmt: skip
MAX_KEPT_OUTPUT_BYTES = 1024 * 1024
"""Of a command's output, what is kept (for `expect output contains`); the event records less."""
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
    bwrap_path: str | None = None
    """bubblewrap's program; None: `bwrap` on PATH."""


_LIMIT_SIGNALS = frozenset({signal.SIGXCPU, signal.SIGXFSZ, signal.SIGKILL})


def _killed_by(code: int) -> signal.Signals | None:
    """The signal a limit (or a kill) ended the program with. bwrap reports a program's
    death by signal N as exit code 128 + N, as shells do; only the signals limits send are
    read so, since a program may exit with 130 on its own."""
    if code < 0:
        return signal.Signals(-code)  # bwrap itself was killed
    if code - 128 in _LIMIT_SIGNALS:
        return signal.Signals(code - 128)
    return None


class ShellExecutor:
    kind = "shell"
    checks = frozenset({"expect_exit_code", "expect_output_contains"})

    def __init__(self, workdir: Path, secrets: Secrets, limits: ShellLimits | None = None) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.limits = limits or ShellLimits()
        self.last_exit_code: int | None = None
        self.last_output: str = ""
        self._checked_jail: Jail | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        own_work_directory(workdir)

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

    def _program_refusal(self, argv: list[str]) -> str | None:
        if not argv:
            return "the command is empty"
        program = argv[0]
        if "/" in program or program not in self.limits.allowed_programs:
            return (
                f"{program!r} is not an allowed program; allowed: "
                f"{', '.join(self.limits.allowed_programs)}"
            )
        refused = [arg for arg in argv[1:] if _widens(program, arg)]
        if refused:
            return f"{program} may not be given {refused}: it would run or link what it names"
        return None

    def _outside(self, argv: list[str], resolved: list[str]) -> list[str]:
        """The arguments naming a path outside the work directory, as written (a secret's
        value is checked too, but only its placeholder is named)."""
        as_written = outside_arguments(argv, self.workdir)
        once_resolved = set(outside_arguments(resolved, self.workdir))
        return [
            written
            for written, value in zip(argv[1:], resolved[1:], strict=True)
            if written in as_written or value in once_resolved
        ]

    def _environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.limits.allowed_env if k in os.environ}
        # Only /usr is in the jail, so the worker's PATH would name directories it lacks.
        jailed = {"PATH": SANDBOX_PATH, "HOME": str(self.workdir.resolve())}
        return {**env, **self.limits.extra_env, **jailed}

    def _limit_resources(self) -> None:
        """Runs in the child before exec; bubblewrap and the program inherit the limits. The
        process limit is set inside the jail instead (`Jail.processes`): see `Jail._inside`."""
        limits = self.limits
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = limits.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    # ---- commands -----------------------------------------------------------------------

    def _run(self, text: str) -> Outcome:
        try:
            argv = shlex.split(text)
        except ValueError as error:
            return Outcome.failed("INVALID_COMMAND", f"cannot parse {text!r}: {error}")
        if any("\0" in arg for arg in argv):
            return Outcome.failed("INVALID_COMMAND", "an argument holds a NUL character")
        refusal = self._program_refusal(argv)
        if refusal is not None:
            return Outcome.failed("SANDBOX_VIOLATION", refusal, command=text)
        try:  # a shell has no network, but what it prints is recorded: see engine.secrets
            resolved: list[str] = self.secrets.filled(with_variables(argv, {}), SHELL)
        except (SecretUnusable, VariableNotSet) as error:  # a shell keeps no variables
            return refused(error)
        outside = self._outside(argv, resolved)
        if outside:
            return Outcome.failed(
                "SANDBOX_VIOLATION",
                f"arguments {outside} name paths outside the session's working directory",
                command=text,
                arguments=outside,
            )
        return self._jailed(resolved)

    def _jailed(self, argv: list[str]) -> Outcome:
        try:
            jail = self._jail()
        except SandboxUnavailable as error:
            return Outcome.failed("SANDBOX_UNAVAILABLE", str(error))
        if not program_exists(argv[0]):
            return Outcome.failed(
                "COMMAND_FAILED",
                f"cannot start {argv[0]}: not found in the sandbox's {SANDBOX_PATH}",
            )
        status_read, status_write = os.pipe()
        try:
            return self._execute(jail, argv, status_read, status_write)
        finally:
            os.close(status_read)

    def _jail(self) -> Jail:
        """This session's jail, tried once before its first command."""
        if self._checked_jail is None:
            limits = self.limits
            jail = Jail(
                find_bwrap(limits.bwrap_path),
                self.workdir.resolve(),
                tmp_mb=limits.file_mb,
                processes=limits.processes,
            )
            jail.check()
            self._checked_jail = jail
        return self._checked_jail

    def _execute(self, jail: Jail, argv: list[str], status_read: int, status_write: int) -> Outcome:
        started = time.monotonic()
        try:
            process = subprocess.Popen(  # noqa: S603 - argv passed the sandbox checks
                jail.argv(argv, self._environment(), status_write),
                env={},  # bwrap's own pid 1 keeps this environment: nothing of the worker's
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(status_write,),
                start_new_session=True,
                preexec_fn=self._limit_resources,  # noqa: PLW1509 - only setrlimit calls
            )
        except OSError as error:
            return Outcome.failed("SANDBOX_UNAVAILABLE", f"cannot start {jail.bwrap}: {error}")
        finally:
            os.close(status_write)
        raw = _output_of(process, self.limits.timeout_s)
        if raw is None:
            # bwrap leads the group; the jail dies with it (--die-with-parent), all of it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return Outcome.failed(
                "COMMAND_TIMEOUT",
                f"{argv[0]} ran past {self.limits.timeout_s:g} s and was killed",
            )
        output = raw.decode("utf-8", errors="replace")
        if not program_started(status_read):
            return Outcome.failed(
                "SANDBOX_UNAVAILABLE",
                f"bubblewrap could not build the sandbox, so {argv[0]} did not run: "
                f"{output.strip() or f'exit {process.returncode}'}",
            )
        return self._finished(process.returncode, output, time.monotonic() - started)

    def _finished(self, code: int, output: str, elapsed_s: float) -> Outcome:
        self.last_exit_code, self.last_output = code, output
        shown = truncated(output, self.limits.max_output_chars)
        killer = _killed_by(code)
        if killer is not None:
            return Outcome.failed(
                "RESOURCE_LIMIT_EXCEEDED",
                f"the process was killed by {killer.name} (a resource limit or a kill)",
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


WIDENING_OPTIONS = {
    "sort": ("--compress-program",),  # runs the program it names
    "cp": ("--symbolic-link",),  # a link the operand check of a later command cannot see
}
"""Options of allowed programs that would widen what a command may do: the jail still holds,
but the allow-list would no longer say what runs. (`cp -s` is refused by `_widens` too.)"""


def _widens(program: str, argument: str) -> bool:
    if any(argument.startswith(option) for option in WIDENING_OPTIONS.get(program, ())):
        return True
    if program != "cp" or not argument.startswith("-") or argument.startswith("--"):
        return False
    for letter in argument[1:]:  # a cluster such as -as; -t and -S take the rest as a value
        if letter == "s":
            return True
        if letter in "tS":
            return False
    return False


def _output_of(process: subprocess.Popen[bytes], timeout_s: float) -> bytes | None:
    """The first MAX_KEPT_OUTPUT_BYTES of what the process prints (the rest is read and
    dropped, so a command cannot fill the worker's memory), once it has exited; None if it
    runs past `timeout_s`."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    kept = bytearray()
    with process.stdout as stream:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
                return None
            chunk = os.read(stream.fileno(), 65_536)
            if not chunk:
                break
            kept += chunk[: max(0, MAX_KEPT_OUTPUT_BYTES - len(kept))]
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None
    return bytes(kept)
