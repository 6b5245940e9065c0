"""The shell executor's sandbox, with real processes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from engine.executors import Command
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.secrets import Secrets

PYTHON = Path(sys.executable).name


def shell(workdir: Path, **limits: object) -> ShellExecutor:
    return ShellExecutor(workdir, Secrets({"TOKEN": "tok-123456"}), ShellLimits(**limits))  # type: ignore[arg-type]


def run(executor: ShellExecutor, text: str) -> tuple[bool, dict[str, object] | str, str | None]:
    outcome = executor.run(Command("shell", "run", {"command": text}))
    code = outcome.error.code if outcome.error else None
    try:
        return outcome.ok, json.loads(outcome.output), code
    except json.JSONDecodeError:
        return outcome.ok, outcome.output, code


def test_a_program_runs_in_the_session_directory(tmp_path: Path) -> None:
    executor = shell(tmp_path)
    ok, output, _ = run(executor, "touch made-here")
    assert ok
    assert (tmp_path / "made-here").exists()
    ok, output, _ = run(executor, "ls")
    assert isinstance(output, dict)
    assert (output["exit_code"], output["output"]) == (0, "made-here\n")


def test_exit_codes_and_output_are_checked_by_expectations(tmp_path: Path) -> None:
    executor = shell(tmp_path)
    run(executor, "false")
    assert executor.run(Command("shell", "expect_exit_code", {"code": 1})).ok
    refused = executor.run(Command("shell", "expect_exit_code", {"code": 0}))
    assert refused.error is not None
    assert refused.error.message == "expected exit code 0, got 1"
    run(executor, "echo all 12 passed")
    assert executor.run(Command("shell", "expect_output_contains", {"text": "12 passed"})).ok


def test_a_program_not_on_the_allow_list_runs_nothing(tmp_path: Path) -> None:
    executor = shell(tmp_path)
    ok, message, code = run(executor, f"{PYTHON} -c \"open('escaped', 'w')\"")
    assert (ok, code) == (False, "SANDBOX_VIOLATION")
    assert "not an allowed program" in str(message)
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize(
    "command",
    ["touch ../outside", "touch /tmp/stepline-outside", "cp ~/.bashrc .", "touch --x=../y"],
)
def test_paths_outside_the_working_directory_are_refused(tmp_path: Path, command: str) -> None:
    workdir = tmp_path / "session"
    ok, message, code = run(shell(workdir), command)
    assert (ok, code) == (False, "SANDBOX_VIOLATION")
    assert "outside the session's working directory" in str(message)
    assert not (tmp_path / "outside").exists()
    assert not Path("/tmp/stepline-outside").exists()


def test_a_program_given_by_path_is_refused(tmp_path: Path) -> None:
    ok, _, code = run(shell(tmp_path), "/bin/echo hi")
    assert (ok, code) == (False, "SANDBOX_VIOLATION")


def test_there_is_no_shell_to_inject_into(tmp_path: Path) -> None:
    ok, output, _ = run(shell(tmp_path), "echo hi; touch injected")
    assert ok
    assert isinstance(output, dict)
    assert output["output"] == "hi; touch injected\n"
    assert not (tmp_path / "injected").exists()


def test_a_command_past_its_timeout_is_killed_with_its_group(tmp_path: Path) -> None:
    started = time.monotonic()
    ok, message, code = run(shell(tmp_path, timeout_s=0.5), "sleep 30")
    assert (ok, code) == (False, "COMMAND_TIMEOUT")
    assert "was killed" in str(message)
    assert time.monotonic() - started < 10


def test_cpu_time_is_limited(tmp_path: Path) -> None:
    executor = shell(tmp_path, cpu_s=1, allowed_programs=(PYTHON,), timeout_s=20)
    ok, message, code = run(executor, f'{PYTHON} -c "while True: pass"')
    assert (ok, code) == (False, "RESOURCE_LIMIT_EXCEEDED")
    assert "SIGXCPU" in str(message) or "SIGKILL" in str(message)


def test_file_size_is_limited(tmp_path: Path) -> None:
    executor = shell(tmp_path, file_mb=1, allowed_programs=(PYTHON,))
    write = f"{PYTHON} -c \"open('big', 'wb').write(b'x' * 3_000_000)\""
    ok, output, _ = run(executor, write)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of the process dying.
    assert ok
    assert isinstance(output, dict)
    assert output["exit_code"] == 1
    assert "File too large" in str(output["output"])
    assert (tmp_path / "big").stat().st_size <= 1024 * 1024


def test_memory_is_limited(tmp_path: Path) -> None:
    executor = shell(tmp_path, memory_mb=200, allowed_programs=(PYTHON,))
    ok, output, _ = run(executor, f'{PYTHON} -c "x = bytearray(1_000_000_000)"')
    assert ok  # the process ran and ended on its own: the allocation was refused
    assert isinstance(output, dict)
    assert output["exit_code"] == 1
    assert "MemoryError" in str(output["output"])


def test_the_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "do-not-leak")
    executor = shell(tmp_path, allowed_programs=("env",))
    ok, output, _ = run(executor, "env")
    assert ok
    assert isinstance(output, dict)
    assert "do-not-leak" not in str(output["output"])
    assert f"HOME={tmp_path}" in str(output["output"])
    assert {line.split("=")[0] for line in str(output["output"]).splitlines()} <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
    }


def test_secrets_are_substituted_only_inside_the_executor(tmp_path: Path) -> None:
    ok, output, _ = run(shell(tmp_path), "echo {{secrets.TOKEN}}")
    assert ok
    assert isinstance(output, dict)
    assert output["output"] == "tok-123456\n"  # the loop redacts this before recording it
    assert os.environ.get("STEPLINE_SECRET_TOKEN") is None
