"""The README runs as written: its fenced blocks marked runnable are run in order, as a new
user pastes them, against the example app at the address the README gives (127.0.0.1:8765).

A marker is an HTML comment on the line before a fence, which GitHub does not show:

    <!-- runnable -->                   a `sh` block is run by bash (`set -euo pipefail`); a
                                        `yaml` block is a workflow, run by `stepline run`; each
                                        must exit 0 (a workflow: its session completed)
    <!-- file: NAME -->                 the block is saved as NAME before any block runs (a
                                        definitions module, a workflow a later block runs)
    <!-- runnable; file: NAME -->       both
    <!-- runnable; needs: stepline serve -->
                                        run while `stepline serve` answers at its default address

Blocks run in a directory of their own that holds the repository's files (as a fresh clone
does: `examples/…`), with the venv's `stepline` and `python` first on PATH, the test database
as STEPLINE_DATABASE_URL and no other STEPLINE_* setting than the blocks make: a variable a
block sets stays set for the blocks after it, as in one terminal. Long-running commands
(`stepline serve`, `sessions watch`) are never runnable blocks themselves.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import example_target
from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
TARGET_PORT = 8765  # the README's base_url
SERVE_PORT = 8000  # `stepline serve`'s default, which the README's API examples use
BLOCK_TIMEOUT_S = 300

KNOWN_MARKS = ("runnable", "needs: stepline serve")
MARKER = re.compile(r"^<!--\s*(?P<marker>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<language>\w*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    text: str
    runnable: bool
    file: str | None
    needs_serve: bool

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.language})"


def marked_blocks(markdown: str) -> list[Block]:
    """The fenced blocks with a marker on the line before them, in the order they appear."""
    lines = markdown.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        fence = FENCE.match(line)
        marker = MARKER.match(lines[number - 1]) if number > 0 else None
        if fence is None or marker is None or not fence["language"]:
            continue
        end = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
        parts = [part.strip() for part in marker["marker"].split(";")]
        named = [part.removeprefix("file:").strip() for part in parts if part.startswith("file:")]
        unknown = [p for p in parts if p not in KNOWN_MARKS and not p.startswith("file:")]
        assert not unknown, f"README.md line {number}: unknown marker {unknown}"
        blocks.append(
            Block(
                line=number + 1,
                language=fence["language"],
                text="\n".join(lines[number + 1 : end]) + "\n",
                runnable="runnable" in parts,
                file=named[0] if named else None,
                needs_serve="needs: stepline serve" in parts,
            )
        )
    return blocks


class Terminal:
    """Where the blocks run: one directory, one environment carried from block to block."""

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
        self.env = {
            **clean,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "STEPLINE_DATABASE_URL": database_url,
            "STEPLINE_DATA_DIR": str(directory / ".stepline"),
        }
        self.env.pop("DEMO_PASSWORD", None)

    def run(self, block: Block) -> None:
        if block.language == "yaml":
            workflow = block.file or f"readme-line-{block.line}.yaml"
            (self.directory / workflow).write_text(block.text)
            self._check(block, self._run(["stepline", "run", workflow]))
        elif block.language == "sh":
            self._run_shell(block)
        else:
            raise AssertionError(f"{block}: only sh and yaml blocks can be runnable")

    def _run_shell(self, block: Block) -> None:
        exported = self.directory / ".exported"
        # -a: a variable a block sets is there for the next, as in one terminal
        script = f"set -aeuo pipefail\n{block.text}\nenv -0 > {exported}\n"
        self._check(block, self._run(["bash", "-c", script]))
        pairs = (item.partition("=") for item in exported.read_text().split("\0") if item)
        self.env = {name: value for name, _, value in pairs}

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )

    @staticmethod
    def _check(block: Block, done: subprocess.CompletedProcess[str]) -> None:
        assert done.returncode == 0, (
            f"{block} exited {done.returncode}:\n{block.text}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )

    @contextmanager
    def serving(self) -> Iterator[None]:
        """`stepline serve` as the README starts it, until the block has run."""
        log = self.directory / "serve.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                ["stepline", "serve"],
                cwd=self.directory,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            answering = f"serving on http://127.0.0.1:{SERVE_PORT}"
            wait_for(
                lambda: answering in log.read_text() or server.poll() is not None,
                60,
                "stepline serve",
            )
            assert server.poll() is None, f"stepline serve stopped:\n{log.read_text()}"
            yield
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


def fresh_clone(directory: Path) -> None:
    """The repository's files, as a new user's clone has them (links, not copies)."""
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (directory / entry.name).symlink_to(entry)


def assert_free(port: int) -> None:
    with socket.socket() as probe:
        # As servers bind: a listener makes the port unusable, a closed one's TIME_WAIT does not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"127.0.0.1:{port} is in use, and the README's examples use it")


@pytest.fixture
def example_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """examples/target_app.py where the README says it is, with its default password."""
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    assert_free(TARGET_PORT)
    with example_target().serving(port=TARGET_PORT) as base_url:
        yield base_url


def test_the_readme_marks_a_workflow_and_the_definitions_it_names() -> None:
    blocks = marked_blocks(README.read_text())

    files = {block.file for block in blocks}
    workflows = [b for b in blocks if b.runnable and b.language == "yaml"]
    assert workflows, "no workflow in the README is marked runnable"
    assert [b for b in blocks if b.runnable and b.language == "sh"], "no runnable sh block"
    for workflow in workflows:
        named = re.search(r"^definitions:\s*(\S+)", workflow.text, re.MULTILINE)
        assert named is None or named[1] in files, f"{workflow}: {named[1]} is in no block"


def test_the_readmes_runnable_blocks_run_as_written(
    example_app: str, fresh_database_url: str, tmp_path: Path
) -> None:
    blocks = marked_blocks(README.read_text())
    fresh_clone(tmp_path)
    terminal = Terminal(tmp_path, fresh_database_url)
    for block in blocks:
        if block.file is not None:
            (tmp_path / block.file).write_text(block.text)

    ran = []
    for block in (b for b in blocks if b.runnable):
        if block.needs_serve:
            assert_free(SERVE_PORT)
            with terminal.serving():
                terminal.run(block)
        else:
            terminal.run(block)
        ran.append(block.line)

    assert ran, "no block of the README is marked runnable"
