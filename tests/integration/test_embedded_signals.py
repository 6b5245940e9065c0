"""No embedded PostgreSQL outlives the `stepline` processes using it: each command that can start
it releases it when a signal ends the command, and a process killed outright (SIGKILL) is
forgotten by the next one to start, which stops the server on its own way out.

Real processes, real signals. The tests share one data directory (making one takes seconds);
each ends with no server and no process of its own left, whatever it found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.embedded

STEPLINE = str(Path(sys.executable).parent / "stepline")
DEADLINE_S = 60.0
"""Generous: a bound on a wait that normally ends in a second or two, never a measurement."""

SLOW_WORKFLOW = "name: Slow\nexecutor: shell\nsteps:\n" + "  - run `sleep 1`\n" * 120
"""Two minutes of one-second steps: each step's end is a safe point to stop at."""

Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded").resolve()


@pytest.fixture
def start(data_dir: Path, tmp_path: Path) -> Iterator[Start]:
    """Start `stepline ARGS...` on the embedded server in `data_dir`; every process started,
    and any server left in `data_dir`, is killed afterwards."""
    processes: list[subprocess.Popen[str]] = []

    def started(*args: str) -> subprocess.Popen[str]:
        with output_file(tmp_path).open("a") as output:
            process = subprocess.Popen(
                [STEPLINE, *args],
                env=embedded_env(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
        processes.append(process)
        return process

    yield started
    for process in processes:
        process.kill()
        process.wait(timeout=DEADLINE_S)
    stop_servers(data_dir)


def output_file(tmp_path: Path) -> Path:
    """Where the processes a test starts write their output."""
    return tmp_path / "stepline.log"


def embedded_env(data_dir: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    return {**clean, "STEPLINE_DATA_DIR": str(data_dir), "COLUMNS": "120"}


def servers_of(data_dir: Path) -> list[psutil.Process]:
    """The `postgres` processes whose command line names the data directory (its postmaster)."""
    pgdata = str(data_dir / "pg")
    return [
        process
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "postgres" and pgdata in (process.info["cmdline"] or [])
    ]


def recorded_users(data_dir: Path) -> list[int]:
    """The pids in the server's list of users; none while that file is being rewritten."""
    try:
        users: list[int] = json.loads((data_dir / "pg" / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return users


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_until_it_holds_the_server(
    process: subprocess.Popen[str], data_dir: Path, tmp_path: Path
) -> None:
    def holds() -> bool:
        if process.poll() is not None:
            output = output_file(tmp_path).read_text()
            pytest.fail(f"stepline exited early ({process.returncode}):\n{output}")
        return process.pid in recorded_users(data_dir) and bool(servers_of(data_dir))

    wait_for(holds, f"stepline (pid {process.pid}) to hold the embedded server")


def is_zombie(pid: int) -> bool:
    return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


def stop_servers(data_dir: Path) -> None:
    """Whatever a failed test left running: a fast shutdown, else a kill."""
    servers = servers_of(data_dir)
    for server in servers:
        server.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(servers, timeout=30)
    for server in alive:
        server.kill()
    (data_dir / "pg" / ".handle_pids.json").unlink(missing_ok=True)


def command_line(command: str, tmp_path: Path) -> list[str]:
    """The arguments of each command that can start the embedded server, as a user runs it."""
    if command == "run":
        workflow = tmp_path / "slow.yaml"
        workflow.write_text(SLOW_WORKFLOW)
        return ["run", str(workflow)]
    if command == "serve":
        return ["serve", "--port", "0"]
    return command.split()


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        ("sessions watch", signal.SIGTERM),
        ("serve", signal.SIGTERM),
        ("sessions watch", signal.SIGHUP),
        ("serve", signal.SIGHUP),
    ],
)
def test_a_command_ended_by_a_signal_leaves_no_embedded_server(
    start: Start, data_dir: Path, tmp_path: Path, command: str, signum: signal.Signals
) -> None:
    process = start(*command_line(command, tmp_path))
    wait_until_it_holds_the_server(process, data_dir, tmp_path)

    process.send_signal(signum)

    assert process.wait(timeout=DEADLINE_S) == -signum  # unwound, then ended by the signal
    wait_for(lambda: not servers_of(data_dir), "the embedded server to stop")
    assert recorded_users(data_dir) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_releases_the_embedded_server_and_exits_3(
    start: Start, data_dir: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    process = start(*command_line("run", tmp_path))
    wait_until_it_holds_the_server(process, data_dir, tmp_path)

    process.send_signal(signum)

    code = process.wait(timeout=DEADLINE_S)
    assert code == 3, output_file(tmp_path).read_text()  # `run`'s own code for "interrupted"
    wait_for(lambda: not servers_of(data_dir), "the embedded server to stop")
    assert recorded_users(data_dir) == []


def test_the_next_process_stops_the_server_a_killed_one_left_running(
    start: Start, data_dir: Path, tmp_path: Path
) -> None:
    killed = start("sessions", "watch")
    wait_until_it_holds_the_server(killed, data_dir, tmp_path)
    killed.kill()  # not reaped until the fixture's end: a zombie, dead but still listed
    wait_for(lambda: is_zombie(killed.pid), "the killed process to die")
    assert servers_of(data_dir), "SIGKILL leaves the server running, its user recorded"

    following = subprocess.run(
        [STEPLINE, "workers", "--json"],
        env=embedded_env(data_dir),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )

    assert following.returncode == 0, following.stderr
    wait_for(lambda: not servers_of(data_dir), "the embedded server to stop")
    assert recorded_users(data_dir) == []
