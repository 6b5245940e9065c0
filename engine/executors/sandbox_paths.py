"""The second line of defence: no argument may name a file outside the work directory.

The jail (`engine.executors.sandbox`) already hides everything else; this check refuses a
command before anything runs, with a message naming the argument, so that a workflow learns
why. A file can hide in an argument in several ways, and each candidate is checked:

- the whole argument: `../x`, `/etc/hostname`, `~/.bashrc`;
- a value after `=`: `--output=../x`, `--file=/x`, `if=/x`;
- a value attached to a short option or a cluster of them: `-f/etc/hostname`, `-o../x`,
  `-t/tmp/dir`, `-uo/x` (any tail that follows the dash and one or more option letters).

Each candidate is resolved against the work directory, following symlinks, and must stay
inside it. `~` is refused: some programs expand it themselves. The check errs towards refusing
(`grep -e/x/ f` is refused too), never towards letting a path through.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path


def outside_arguments(argv: Sequence[str], workdir: Path) -> list[str]:
    """The arguments of `argv` (after the program) that name a path outside `workdir`."""
    root = os.path.realpath(workdir)
    return [
        argument
        for argument in argv[1:]
        if any(_escapes(candidate, root) for candidate in path_candidates(argument))
    ]


def path_candidates(argument: str) -> Iterator[str]:
    """Every string in `argument` that a program might open as a file."""
    yield argument
    for at, character in enumerate(argument):
        if character == "=":
            yield argument[at + 1 :]
    if argument.startswith("-") and not argument.startswith("--"):
        # A cluster is option letters, then perhaps a value: `-uo/x` holds `o/x` and `/x`.
        for at in range(2, len(argument)):
            if not argument[at - 1].isalnum():
                break
            yield argument[at:]


def _escapes(candidate: str, root: str) -> bool:
    if candidate.startswith("~"):
        return True
    resolved = os.path.realpath(os.path.join(root, candidate))
    return resolved != root and not resolved.startswith(root.rstrip("/") + "/")
