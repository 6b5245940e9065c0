"""Step definitions: plain-language patterns that map a step to commands with no model call.

This module is the machinery: a pattern, what it builds, the match, near misses, and users'
own modules. The built-in definitions are in `engine/loop/builtin_steps.py` (and those that
wait in `engine/loop/waits.py`).

Users add their own in a Python module named by the workflow file's `definitions:` key. The
module defines `register(definitions)` and calls `definitions.add(pattern, build)`; its
patterns are tried before the built-in ones.

A step no definition matches may be one written almost as one: `near_miss` says how to write
it (`did you mean "GET /login"?`, `targets are quoted: click "Sign in"`), so a person who
meant a definition is not left with "no AI provider is configured".
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from domain.errors import InvalidWorkflow
from engine.executors import Command

Build = Callable[[re.Match[str]], list[Command]]


CLOSE_ENOUGH = 0.6
"""How alike a step's first words and a definition's must be to suggest the definition's
(difflib's ratio: `GTE` and `GET` are 0.67, `PUT` and `GET` 0.33). A suggestion is only made
when the step, so corrected, matches the definition."""
LEADING_CHOICE = re.compile(r"\((?:\?P<\w+>|\?:)?(?P<choices>[\w ]+(?:\|[\w ]+)*)\)")
LEADING_WORDS = re.compile(r"[\w ]*")
QUOTED_GROUP = re.compile(r'(?P<mark>["`])\(\?P<(?P<name>\w+)>')
"""A group a definition wants in quotes (`click "Sign in"`) or backticks (``run `ls` ``)."""
SAID_QUOTED = {'"': "targets are quoted", "`": "commands are in backticks"}
SHORTEST_HEAD = 2
"""The fewest words a step must share with a definition's start to be shown its example:
one (`Open the login page`, `Put the milk away`) is as likely plain language for the model."""


class DefinitionError(ValueError):
    """A step matched a definition but its arguments are unusable (e.g. bad JSON)."""

    def __init__(self, message: str, suggested_action: str | None = None) -> None:
        super().__init__(message)
        self.suggested_action = suggested_action


@dataclass(frozen=True)
class Definition:
    pattern: re.Pattern[str]
    build: Build
    example: str | None = None
    heads: tuple[str, ...] = ()
    """The words every step it matches starts with (`expect status`), or the choice of
    them (`GET`, `POST`, ...): what a step's first words are compared with."""


@dataclass(frozen=True)
class NearMiss:
    """A step that no definition matches but one almost does, and how to write it."""

    hint: str
    """What is amiss, said after "no step definition matches it": `did you mean ...?`."""
    advice: str
    """What to do, said as an instruction."""
    written: str | None = None
    """The step written so that the definition matches it, when that can be done."""


class Definitions:
    def __init__(self) -> None:
        self._definitions: list[Definition] = []

    def add(self, pattern: str, build: Build, example: str | None = None) -> None:
        """Register a pattern (matched against the whole step text, case-insensitively);
        `example`, a step it matches, is shown to a person whose step almost matches it."""
        compiled = re.compile(pattern, re.IGNORECASE)
        definition = Definition(compiled, build, example, _heads(pattern))
        self._definitions.insert(0, definition)

    def __iter__(self) -> Iterator[Definition]:
        """The definitions, in the order they are tried."""
        return iter(self._definitions)

    def match(self, text: str) -> list[Command] | None:
        """The commands for a step, or None if no definition matches it."""
        step = text.strip()
        for definition in self._definitions:
            found = definition.pattern.fullmatch(step)
            if found:
                return definition.build(found)
        return None

    def near_miss(self, text: str) -> NearMiss | None:
        """How to write a step no definition matches so that one does: its targets quoted,
        a misspelt first word corrected, or, when it starts as one does, that definition's
        example. None when nothing comes close (a step for the AI model)."""
        step = text.strip()
        for definition in self._definitions:
            if (quoted := _quoted(definition, step)) is not None:
                said = SAID_QUOTED[_marks(definition)[0]]
                return NearMiss(f"{said}: {quoted}", f"Write it as {_quote(quoted)}", quoted)
        started = [(d, head) for d in self._definitions if (head := _head_of(d, step))]
        if started:  # its first words are spelt right: not a misspelling of another's
            definition, head = max(started, key=lambda found: len(found[1]))
            return _shown(definition) if len(head.split()) >= SHORTEST_HEAD else None
        for definition in self._definitions:
            if (respelt := _respelt(definition, step)) is not None:
                written = _quote(respelt)
                return NearMiss(f"did you mean {written}?", f"Write it as {written}", respelt)
        return None

    def copy(self) -> Definitions:
        copied = Definitions()
        copied._definitions = list(self._definitions)
        return copied

    def load(self, module: str, relative_to: Path | None = None) -> None:
        """Import a user module (a dotted name, or a .py path) and let it register."""
        try:
            loaded = _import(module, relative_to)
        except Exception as error:  # the user's own code: whatever it raises is theirs to fix
            raise InvalidWorkflow(
                f"cannot load step definitions from {module}: {type(error).__name__}: {error}",
                suggested_action="Name a .py file (relative to the workflow file) or a module "
                "Python can import, and fix the error it raises when imported",
                field="definitions",
            ) from None
        register = getattr(loaded, "register", None)
        if not callable(register):
            raise InvalidWorkflow(
                f"{module} must define register(definitions)",
                suggested_action=f"Add to {module}: def register(definitions): "
                "definitions.add(pattern, build)",
                field="definitions",
            )
        try:
            register(self)
        except Exception as error:
            raise InvalidWorkflow(
                f"register(definitions) of {module} failed: {type(error).__name__}: {error}",
                suggested_action=f"Fix register(definitions) in {module}: it raised the error "
                "the message names",
                field="definitions",
            ) from None


class DefinitionsCache:
    """The base definitions, and each workflow module's on top of them, loaded once."""

    def __init__(self, base: Definitions) -> None:
        self.base = base
        self._with_module: dict[str, Definitions] = {}
        self._lock = threading.Lock()

    def for_module(self, module: str | None) -> Definitions:
        if not module:
            return self.base
        with self._lock:
            if module not in self._with_module:
                extended = self.base.copy()
                extended.load(module)
                self._with_module[module] = extended
            return self._with_module[module]


def _import(module: str, relative_to: Path | None) -> Any:
    if not module.endswith(".py"):
        return importlib.import_module(module)
    path = Path(module)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    spec = importlib.util.spec_from_file_location(f"stepline_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module at {path}")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _heads(pattern: str) -> tuple[str, ...]:
    """The literal words a pattern starts with: `expect status` of `expect status (?P<..>)`,
    or each choice of a leading group of words (`GET`, `POST`, ...)."""
    choice = LEADING_CHOICE.match(pattern)
    if choice is not None:
        return tuple(word.strip() for word in choice["choices"].split("|"))
    words = LEADING_WORDS.match(pattern)
    head = words.group().strip() if words is not None else ""
    return (head,) if head else ()


def _marks(definition: Definition) -> list[str]:
    """The quote marks of the definition's quoted groups, in order."""
    return [found["mark"] for found in QUOTED_GROUP.finditer(definition.pattern.pattern)]


def _quoted(definition: Definition, step: str) -> str | None:
    """The step with its targets quoted, if the definition quotes them and then matches."""
    source = definition.pattern.pattern
    groups = {found["name"]: found["mark"] for found in QUOTED_GROUP.finditer(source)}
    if not groups:
        return None
    try:
        loose = re.fullmatch(source.replace('"', '"?').replace("`", "`?"), step, re.IGNORECASE)
    except re.error:  # a user's pattern whose quote carries a quantifier: `"{2}`
        return None
    if loose is None:
        return None
    pieces, at = [], 0
    for name, mark in sorted(groups.items(), key=lambda group: loose.start(group[0])):
        start, end = loose.span(name)
        if start < 0:  # an optional part the step leaves out
            continue
        pieces += [step[at:start].rstrip(mark), mark, step[start:end].strip(mark), mark]
        at = end + step.startswith(mark, end)
    written = "".join(pieces) + step[at:]
    return written if definition.pattern.fullmatch(written) else None


def _respelt(definition: Definition, step: str) -> str | None:
    """The step with its first words spelt as the definition's, if they are close to them
    and the step then matches (its targets quoted if need be)."""
    for head in definition.heads:
        count = len(head.split())
        words = step.split(maxsplit=count)
        typed = " ".join(words[:count]).lower()
        if len(words) < count or typed == head.lower():
            continue
        if SequenceMatcher(None, typed, head.lower()).ratio() < CLOSE_ENOUGH:
            continue
        written = " ".join([head, *words[count:]])
        if definition.pattern.fullmatch(written):
            return written
        if (quoted := _quoted(definition, written)) is not None:
            return quoted
    return None


def _head_of(definition: Definition, step: str) -> str | None:
    """The definition's first words, if the step starts with them (as whole words)."""
    lowered = step.lower()
    return next(
        (
            head
            for head in definition.heads
            if lowered == head.lower() or lowered.startswith(head.lower() + " ")
        ),
        None,
    )


def _shown(definition: Definition) -> NearMiss:
    """A step that starts as the definition does but does not fit it: its example."""
    shape = _quote(definition.example or definition.pattern.pattern)
    return NearMiss(
        f"the definition it starts like reads e.g. {shape}",
        f"Write it as that definition reads, e.g. {shape}",
    )


def _quote(step: str) -> str:
    """A step in quotes that are not its own: `"GET /login"`, `'click "Sign in"'`."""
    return f"'{step}'" if '"' in step else f'"{step}"'
