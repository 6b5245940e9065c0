"""The shell executor, attacked: the tricks of the tenant-boundary issue, with real processes.

Every command here is one a tenant could send (or one an operator's allow-list could let
through); each must be refused before it runs, or run where it can do no harm. The allow-lists
are passed to the executor directly: tenants cannot widen theirs, but a program such as
python3 shows what any allowed program could do once started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.executors import Command, Outcome
from engine.executors.shell import MAX_KEPT_OUTPUT_BYTES, ShellExecutor, ShellLimits
from engine.secrets import Secrets

WORKER_SECRET = "worker-only-4f9c2e"


@dataclass(frozen=True)
class Victim:
    """A file outside the session's work directory, and how it was before the attack."""

    path: Path
    content: bytes
    mtime_ns: int

    def untouched(self) -> bool:
        stat = self.path.stat()
        return (self.path.read_bytes(), stat.st_mtime_ns) == (self.content, self.mtime_ns)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    session = tmp_path / "session"
    session.mkdir()
    (session / "f").write_text("a file of the session\n")
    (session / "link").symlink_to(tmp_path / "outside")
    return session


@pytest.fixture
def victim(tmp_path: Path) -> Victim:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "victim.txt"
    path.write_text("2020-01-01\n")  # a date, so that `date -f` would print it
    stat = path.stat()
    return Victim(path, path.read_bytes(), stat.st_mtime_ns)


def shell(workdir: Path, *programs: str, **limits: object) -> ShellExecutor:
    allowed = programs or ShellLimits().allowed_programs
    return ShellExecutor(
        workdir,
        Secrets({}),
        ShellLimits(allowed_programs=allowed, **limits),  # type: ignore[arg-type]
    )


def run(executor: ShellExecutor, text: str) -> Outcome:
    return executor.run(Command("shell", "run", {"command": text}))


def printed(outcome: Outcome) -> str:
    """What the program printed; fails the test if it did not run to its end."""
    assert outcome.ok, outcome.output
    return str(json.loads(outcome.output)["output"])


# ---- option-attached paths: refused before anything runs ----------------------------------

ATTACHED_PATHS = [
    "date -f{outside}/victim.txt",
    "date -f/etc/hostname",
    "date -f/proc/self/environ",
    "date -f/proc/{worker}/environ",
    "sort -o{outside}/victim.txt",
    "sort -uo{outside}/victim.txt",
    "sort --output=link/victim.txt",
    "sort -olink/victim.txt",
    "cat link/victim.txt",
    "cp -t{outside} f",
    "cp -tlink f",
    "cp --target-directory=link f",
]


@pytest.mark.parametrize("template", ATTACHED_PATHS)
def test_a_path_attached_to_an_option_outside_the_work_directory_is_refused(
    workdir: Path, victim: Victim, template: str
) -> None:
    command = template.format(outside=victim.path.parent, worker=os.getpid())
    outcome = run(shell(workdir), command)
    assert outcome.error is not None, outcome.output
    assert outcome.error.code == "SANDBOX_VIOLATION"
    assert command.split()[1] in outcome.error.message  # names the argument
    assert victim.untouched()
    assert sorted(p.name for p in victim.path.parent.iterdir()) == ["victim.txt"]


# ---- the jail: what a started program can reach --------------------------------------------


def test_a_program_cannot_write_outside_the_work_directory(workdir: Path, victim: Victim) -> None:
    # The path hides inside Python code, where no argument check can see it.
    code = f"open({str(victim.path)!r}, 'w').write('owned')"
    outcome = run(shell(workdir, "python3"), f'python3 -c "{code}"')
    assert "No such file or directory" in printed(outcome)
    assert victim.untouched()


def test_a_program_cannot_read_another_sessions_files(tmp_path: Path, workdir: Path) -> None:
    other = tmp_path / "other-session"
    other.mkdir()
    (other / "secret.txt").write_text("the other tenant's data")
    code = f"print(open({str(other / 'secret.txt')!r}).read())"
    output = printed(run(shell(workdir, "python3"), f'python3 -c "{code}"'))
    assert "the other tenant's data" not in output
    assert "No such file or directory" in output


def test_a_program_cannot_read_the_workers_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_SECRET_X", WORKER_SECRET)
    code = (
        "import os; print(dict(os.environ)); "
        f"paths = ['/proc/{os.getpid()}/environ', '/proc/1/environ', '/proc/self/environ']; "
        "[print(p, open(p, 'rb').read()) if os.access(p, os.R_OK) else print(p, 'unreadable') "
        "for p in paths]"
    )
    output = printed(run(shell(workdir, "python3"), f'python3 -c "{code}"'))
    assert f"/proc/{os.getpid()}/environ unreadable" in output  # no such process in the jail
    assert WORKER_SECRET not in output


def test_a_program_sees_no_process_outside_its_jail(workdir: Path) -> None:
    code = "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    visible = json.loads(printed(run(shell(workdir, "python3"), f'python3 -c "{code}"')))
    assert os.getpid() not in visible
    assert visible == [1, 2]  # bubblewrap's own pid 1, and the program


def test_a_program_has_no_network_not_even_the_hosts_loopback(workdir: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            "import socket; "
            f"socket.create_connection(('127.0.0.1', {port}), timeout=5); "
            "print('connected')"
        )
        outcome = run(shell(workdir, "python3"), f'python3 -c "{code}"')
        assert "connected" not in printed(outcome).splitlines()
        # The jail's 127.0.0.1 is a loopback of its own, where nothing listens.
        assert "ConnectionRefusedError" in printed(outcome)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_a_program_runs_as_uid_65534(workdir: Path) -> None:
    assert printed(run(shell(workdir, "id"), "id -u")).strip() == "65534"


def test_the_host_sees_the_program_as_an_unprivileged_uid(workdir: Path) -> None:
    """Not root mapped into a user namespace: the uid as the host's /proc shows it."""
    seconds = f"{3000 + os.getpid() % 1000}.25"  # an argv no other process has
    executor = shell(workdir, "sleep", timeout_s=120)
    worker = threading.Thread(target=run, args=(executor, f"sleep {seconds}"))
    worker.start()
    try:
        status = _status(_wait_for_process(["sleep", seconds]))
    finally:
        for pid in _processes(["sleep", seconds]):
            os.kill(pid, signal.SIGKILL)
        worker.join(timeout=60)
    if os.geteuid() == 0:
        assert set(status["Uid"].split()) == set(status["Gid"].split()) == {"65534"}
        assert status["Groups"] == ""
    else:  # a worker that is not root can only lend its own uid
        assert set(status["Uid"].split()) == {str(os.geteuid())}


def _processes(argv: list[str]) -> Iterator[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    yield int(entry.name)
            except OSError:
                continue  # it ended while we looked


def _wait_for_process(argv: list[str]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = next(_processes(argv), None)
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{argv} never started")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


# ---- no bubblewrap, no command ---------------------------------------------------------------


def test_without_bubblewrap_nothing_runs(workdir: Path) -> None:
    executor = shell(workdir, bwrap_path=str(workdir / "no-such-bwrap"))
    outcome = run(executor, "touch ran")
    assert outcome.error is not None
    assert outcome.error.code == "SANDBOX_UNAVAILABLE"
    assert "apt-get install bubblewrap" in outcome.error.message
    assert not (workdir / "ran").exists()


def test_a_bubblewrap_that_cannot_build_the_jail_runs_nothing(workdir: Path) -> None:
    executor = shell(workdir, bwrap_path="/usr/bin/false")
    outcome = run(executor, "touch ran")
    assert outcome.error is not None
    assert outcome.error.code == "SANDBOX_UNAVAILABLE"
    assert not (workdir / "ran").exists()


def test_a_flood_of_output_is_kept_only_up_to_the_cap(workdir: Path) -> None:
    flood = MAX_KEPT_OUTPUT_BYTES * 8

    outcome = run(shell(workdir, "printf"), f"printf %0{flood}d 0")

    assert outcome.ok, outcome.output
    assert json.loads(outcome.output)["output_size"] == MAX_KEPT_OUTPUT_BYTES


@pytest.mark.parametrize(
    "command",
    [
        "sort --compress-program=sh notes.txt",
        "sort --compress-program sh notes.txt",
        "cp -s notes.txt made-link",
        "cp -as notes.txt made-link",
        "cp --symbolic-link notes.txt made-link",
    ],
)
def test_an_allowed_program_cannot_be_told_to_run_or_link_another(
    workdir: Path, command: str
) -> None:
    (workdir / "notes.txt").write_text("b\na\n")

    outcome = run(shell(workdir, "sort", "cp"), command)

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "SANDBOX_VIOLATION"
    assert not (workdir / "made-link").is_symlink()
