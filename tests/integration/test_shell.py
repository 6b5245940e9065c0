"""The shell executor's sandbox, with real processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

import engine
from engine.executors import Command
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.secrets import Secrets

PYTHON = "python3"  # the sandbox's, from /usr: the worker's own Python may live elsewhere


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


def test_a_command_past_its_timeout_is_killed_with_its_whole_sandbox(tmp_path: Path) -> None:
    # A child of its own (in its own session, out of the group) must die with it too.
    seconds = f"{3000 + os.getpid() % 1000}.5"  # an argv no other process has
    spawn = (
        "import subprocess, time; "
        f"subprocess.Popen(['sleep', '{seconds}'], start_new_session=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "open('spawned', 'w').close(); time.sleep(60)"
    )
    # Time enough for the child to start even on a loaded machine: it says so in a file.
    executor = shell(tmp_path, timeout_s=5, allowed_programs=(PYTHON,))
    ok, message, code = run(executor, f'{PYTHON} -c "{spawn}"')
    assert (ok, code) == (False, "COMMAND_TIMEOUT")
    assert "was killed" in str(message)
    assert (tmp_path / "spawned").exists()  # the child it left behind was running
    survivors = _wait_until_gone(["sleep", seconds])
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors


def _wait_until_gone(argv: list[str]) -> list[int]:
    """The processes running `argv` that are still there when the deadline passes."""
    wanted = "\0".join(argv).encode() + b"\0"
    deadline = time.monotonic() + 30
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                    alive.append(int(entry.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_the_number_of_processes_is_limited(tmp_path: Path) -> None:
    executor = shell(tmp_path, processes=8, allowed_programs=(PYTHON,))
    spawn = "import subprocess; [subprocess.Popen(['sleep', '5']) for _ in range(20)]"
    ok, output, _ = run(executor, f'{PYTHON} -c "{spawn}"')
    assert ok
    assert isinstance(output, dict)
    assert output["exit_code"] == 1
    assert "Resource temporarily unavailable" in str(output["output"])


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can start processes as uid 65534")
def test_the_process_limit_counts_only_the_sandboxs_own_processes(tmp_path: Path) -> None:
    """uid 65534 is shared (Chromium's sandbox uses it too): its processes on the host must
    not use up a command's allowance, or no command could even start."""
    others = [
        subprocess.Popen(["sleep", "60"], user=65534, group=65534, extra_groups=[])
        for _ in range(6)
    ]
    try:
        ok, output, _ = run(shell(tmp_path, processes=4), "echo started")
    finally:
        for other in others:
            other.kill()
            other.wait()
    assert ok, output
    assert isinstance(output, dict)
    assert output["output"] == "started\n"


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
        "PWD",  # bwrap's, after its --chdir to the work directory
    }


def test_secrets_are_substituted_only_inside_the_executor(tmp_path: Path) -> None:
    ok, output, _ = run(shell(tmp_path), "echo {{secrets.TOKEN}}")
    assert ok
    assert isinstance(output, dict)
    assert output["output"] == "tok-123456\n"  # the loop redacts this before recording it
    assert os.environ.get("STEPLINE_SECRET_TOKEN") is None


def test_paths_inside_the_working_directory_are_allowed_however_written(tmp_path: Path) -> None:
    executor = shell(tmp_path)
    (tmp_path / "f").write_text("b\na\n")
    for command in (
        "mkdir sub",
        f"sort -o{tmp_path}/sorted f",
        "sort --output=sub/../sorted-too f",
        f"cp -t{tmp_path}/sub f",
    ):
        ok, output, _ = run(executor, command)
        assert ok, output
        assert isinstance(output, dict)
        assert output["exit_code"] == 0, output
    assert (tmp_path / "sorted").read_text() == "a\nb\n"
    assert (tmp_path / "sorted-too").read_text() == "a\nb\n"
    assert (tmp_path / "sub" / "f").exists()


def test_a_program_missing_from_the_sandbox_cannot_start(tmp_path: Path) -> None:
    executor = shell(tmp_path, allowed_programs=("no-such-program",))
    ok, message, code = run(executor, "no-such-program --version")
    assert (ok, code) == (False, "COMMAND_FAILED")
    assert "not found in the sandbox's /usr/local/bin:/usr/bin" in str(message)


@pytest.mark.skipif(os.geteuid() != 0, reason="plays a worker that is not root by becoming one")
def test_a_worker_that_is_not_root_jails_its_commands_too() -> None:
    """bwrap then runs as the worker's own uid, in a user namespace of its own."""
    root = Path(tempfile.mkdtemp(prefix="stepline-not-root-"))  # tmp_path is root's alone
    try:
        root.chmod(0o755)
        os.chown(root, 65534, 65534)
        python, path = _python_for_nobody()
        worker = subprocess.run(
            [python, "-c", NOT_ROOT_WORKER, str(root / "session")],
            user=65534,
            group=65534,
            extra_groups=[],
            env={"PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(root)
    said = json.loads(worker.stdout)
    assert said["id -u"] == "65534\n"
    assert said["touch made"] == ""
    assert json.loads(said["processes"]) == [1, 2]  # bwrap's pid 1 and the program


def _python_for_nobody() -> tuple[str, str]:
    """An interpreter uid 65534 may run, and the PYTHONPATH that gives it our code and its
    packages. The test's own may live under a home only root may enter (pyenv's under /root):
    then the system's Python of the same version runs the same packages."""
    paths = sysconfig.get_paths()
    path = os.pathsep.join(
        [str(Path(engine.__file__).parent.parent), paths["purelib"], paths["platlib"]]
    )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            subprocess.run(
                [python, "-c", "import pydantic"],
                user=65534,
                group=65534,
                extra_groups=[],
                env={"PYTHONPATH": path},
                capture_output=True,
                timeout=60,
                check=True,
            )
            return python, path
    raise AssertionError(f"no {version} that uid 65534 may run: {sys.executable} is not one")


NOT_ROOT_WORKER = """
import json, sys
from pathlib import Path
from engine.executors import Command
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.secrets import Secrets

allowed = ("id", "touch", "python3")
executor = ShellExecutor(Path(sys.argv[1]), Secrets({}), ShellLimits(allowed_programs=allowed))
said = {}
pids = "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
for name, command in [("id -u", "id -u"), ("touch made", "touch made"),
                      ("processes", f'python3 -c "{pids}"')]:
    outcome = executor.run(Command("shell", "run", {"command": command}))
    said[name] = json.loads(outcome.output)["output"] if outcome.ok else outcome.output
print(json.dumps(said))
"""
