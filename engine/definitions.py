"""Step definitions: plain-language patterns that map a step to commands with no model call.

Built in, for HTTP: `GET /path`, `POST /path with {"json": true}` (also PUT, PATCH, DELETE),
`expect status 200` (or a class: `expect status 4xx`), `expect body contains "text"`,
`expect json items.0.id == 3`, `save json token as auth`; for the shell: ``run `pytest -q` ``,
`expect exit code 0`, `expect output contains "passed"`; for the browser: `open /login`,
`click "Sign in"`, `fill "Password" with "{{secrets.PASSWORD}}"`, `press Enter`,
`select "Red" in "Colour"`, `expect page contains "Welcome"`, `expect title contains "Todos"`,
`expect url contains "/todos"`, `save text of "Total" as total`, `take a screenshot`, `go back`.

Users add their own in a Python module named by the workflow file's `definitions:` key. The
module defines `register(definitions)` and calls `definitions.add(pattern, build)`; its
patterns are tried before the built-in ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.errors import InvalidWorkflow
from engine.executors import Command

Build = Callable[[re.Match[str]], list[Command]]


class DefinitionError(ValueError):
    """A step matched a definition but its arguments are unusable (e.g. bad JSON)."""


@dataclass(frozen=True)
class Definition:
    pattern: re.Pattern[str]
    build: Build


class Definitions:
    def __init__(self) -> None:
        self._definitions: list[Definition] = []

    def add(self, pattern: str, build: Build) -> None:
        """Register a pattern (matched against the whole step text, case-insensitively)."""
        self._definitions.insert(0, Definition(re.compile(pattern, re.IGNORECASE), build))

    def match(self, text: str) -> list[Command] | None:
        """The commands for a step, or None if no definition matches it."""
        for definition in self._definitions:
            found = definition.pattern.fullmatch(text.strip())
            if found:
                return definition.build(found)
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
                field="definitions",
            ) from None
        register = getattr(loaded, "register", None)
        if not callable(register):
            raise InvalidWorkflow(
                f"{module} must define register(definitions)", field="definitions"
            )
        try:
            register(self)
        except Exception as error:
            raise InvalidWorkflow(
                f"register(definitions) of {module} failed: {type(error).__name__}: {error}",
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


def _json_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DefinitionError(f"{text!r} is not valid JSON: {error.msg}") from None


def _value(text: str) -> Any:
    """`3`, `true`, `"x"` and `null` are JSON; anything else is taken as a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _request(match: re.Match[str]) -> list[Command]:
    body = _json_literal(match["body"]) if match["body"] else None
    args = {"method": match["method"].upper(), "url": match["url"], "body": body}
    return [Command("http", "request", args)]


def _expect_status(match: re.Match[str]) -> list[Command]:
    """`expect status 404`, or a class of statuses: `expect status 4xx`."""
    code = match["code"].lower()
    return [Command("http", "expect_status", {"code": code if code.endswith("xx") else int(code)})]


def builtin() -> Definitions:
    definitions = Definitions()
    add = definitions.add
    add(r"(?P<method>GET|POST|PUT|PATCH|DELETE) (?P<url>\S+)(?: with (?P<body>.+))?", _request)
    add(r"expect status (?P<code>\d{3}|[1-5]xx)", _expect_status)
    add(
        r'expect body contains "(?P<text>.*)"',
        lambda m: [Command("http", "expect_body_contains", {"text": m["text"]})],
    )
    add(
        r"expect json (?P<path>\S+) == (?P<value>.+)",
        lambda m: [
            Command("http", "expect_json", {"path": m["path"], "value": _value(m["value"])})
        ],
    )
    add(
        r"save json (?P<path>\S+) as (?P<name>[A-Za-z0-9_]+)",
        lambda m: [Command("http", "save_json", {"path": m["path"], "name": m["name"]})],
    )
    add(r"run `(?P<command>[^`]+)`", lambda m: [Command("shell", "run", {"command": m["command"]})])
    add(
        r"expect exit code (?P<code>-?\d+)",
        lambda m: [Command("shell", "expect_exit_code", {"code": int(m["code"])})],
    )
    add(
        r'expect output contains "(?P<text>.*)"',
        lambda m: [Command("shell", "expect_output_contains", {"text": m["text"]})],
    )
    _add_browser(definitions)
    return definitions


def _browser(command: str, **args: str) -> Build:
    """A definition for one browser command whose arguments are the pattern's groups."""
    return lambda match: [
        Command("browser", command, {key: match[group] for key, group in args.items()})
    ]


def _add_browser(definitions: Definitions) -> None:
    add = definitions.add
    add(r"open (?P<url>\S+)", _browser("navigate", url="url"))
    add(r'click "(?P<target>.+)"', _browser("click", target="target"))
    add(
        r'fill "(?P<target>.+?)" with "(?P<value>.*)"',
        _browser("fill", target="target", value="value"),
    )
    add(r"press (?P<key>\S+)", _browser("press", key="key"))
    add(
        r'select "(?P<option>.+?)" in "(?P<target>.+)"',
        _browser("select", target="target", option="option"),
    )
    for what in ("page", "title", "url"):
        add(
            rf'expect {what} contains "(?P<text>.*)"',
            _browser(f"expect_{what}_contains", text="text"),
        )
    add(
        r'save text of "(?P<target>.+?)" as (?P<label>[A-Za-z0-9_]+)',
        _browser("save_text", target="target", name="label"),
    )
    add(r"take a screenshot", _browser("screenshot"))
    add(r"go back", _browser("back"))
