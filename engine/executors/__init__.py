"""Executors run commands against the outside world: HTTP services, processes, browsers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from domain.errors import DomainError, StandardError
from domain.payloads import ArtifactRef
from engine.secrets import TOTP, SecretUnusable, strings_in

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_]+)\s*\}\}")
"""Any `{{namespace.name}}`: `vars` are filled from what earlier steps saved, `secrets` and
`totp` (a seed's current code) by the executor for the command's destination, and any other
namespace is never sent as written."""
VARIABLES = "vars"
SECRETS = "secrets"
FILLED_BY_EXECUTORS = frozenset({SECRETS, TOTP})
SAVING_COMMANDS = frozenset({"save_json", "save_text", "signal"})
"""Commands that save a variable under their `name` argument, for a later `{{vars.name}}`
(`signal`: a wait for a signal, which saves the signal's body)."""


@dataclass(frozen=True)
class Command:
    executor: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    """Sent with side effects that support it (HTTP's `Idempotency-Key`); set by the task loop."""
    error_status_expected: bool = False
    """An HTTP request whose 4xx/5xx answer a check will judge (an `expect status` follows):
    the answer is its result, not its failure. Set by the task loop, never recorded."""

    @property
    def saves(self) -> str | None:
        """The variable this command saves, if it is one that does."""
        name = self.args.get("name")
        return str(name) if self.name in SAVING_COMMANDS and name else None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    output: str = ""
    error: StandardError | None = None
    artifacts: tuple[ArtifactRef, ...] = ()
    """Files the command stored (screenshots)."""

    @classmethod
    def of(cls, ok: bool, **output: Any) -> Outcome:
        return cls(ok, json.dumps(output, ensure_ascii=False, default=str))

    @classmethod
    def failed(cls, code: str, message: str, **details: Any) -> Outcome:
        return cls(False, message, StandardError.of(code, message, details))


class Executor(Protocol):
    kind: str
    checks: frozenset[str]
    """The commands that only look (`expect_status`): no side effect, so the task loop records
    each as one `Checked` event instead of an issued command and its result."""

    def run(self, command: Command) -> Outcome:
        """Run one command; never raises for a failure of the command itself."""
        ...

    def restore(self, command: Command, output: str) -> None:
        """Replay a finished command's recorded result into the executor's state (recovery)."""
        ...

    def state(self) -> dict[str, Any] | None:
        """State kept outside the log so that another owner can carry on (HTTP: cookies,
        which are credentials and so never recorded in an event); None if it has none."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what `state` gave, after a takeover."""
        ...

    def tools(self) -> list[dict[str, Any]]:
        """The commands offered to an AI model, as OpenAI tool definitions."""
        ...

    def briefing(self) -> str | None:
        """What the model should see before its first turn of a step (the browser: the page
        as it is now), or None."""
        ...

    def command_for_tool(self, name: str, arguments: dict[str, Any]) -> Command | None:
        """The command an AI tool call stands for, or None if the tool is not this one's."""
        ...

    def close(self, *, ended: bool = True) -> None:
        """The run is over; `ended` is False when the session may carry on later (a pause)."""
        ...


@dataclass(frozen=True)
class View:
    """What a model that can see is shown of where an executor is (the browser: its page):
    an image, held in memory until the turn that showed it is recorded (`kept`), so that a
    model call that fails leaves no stored file that no event refers to (erasure deletes the
    files events refer to); or no image, and why (`withheld`: it would show a secret)."""

    content: bytes = field(repr=False)
    media_type: str
    keep: Callable[[], ArtifactRef] | None = field(default=None, repr=False)
    """Stores the image as an artifact and gives its reference."""
    withheld: str | None = None

    @classmethod
    def withheld_because(cls, reason: str) -> View:
        return cls(b"", "", withheld=reason)

    def kept(self) -> list[ArtifactRef]:
        """The image stored, for the turn that showed it; nothing when none was shown."""
        return [self.keep()] if self.keep is not None and self.withheld is None else []


@runtime_checkable
class Showing(Protocol):
    """An executor with something to show a model that can see (`config.vision`)."""

    def view(self) -> View | None:
        """An image of where it is now, to be stored once shown (`View.kept`), or why none is
        shown; None when there is nothing to show (no page open) or it could not be taken
        within its bounds."""
        ...


class VariableNotSet(DomainError):
    """A placeholder nothing can fill: a `{{vars.name}}` no earlier command saved, or one of a
    namespace there is none of (`{{inputs.name}}`). The command is not run with it unfilled."""

    code = "VARIABLE_NOT_SET"

    def __init__(self, namespace: str, name: str, saved: list[str]) -> None:
        placeholder = f"{{{{{namespace}.{name}}}}}"
        super().__init__(
            f"{placeholder} is not set: {_why_unset(namespace, name, saved)}",
            placeholder=placeholder,
            namespace=namespace,
            name=name,
            saved=saved,
        )


def _why_unset(namespace: str, name: str, saved: list[str]) -> str:
    if namespace == VARIABLES:
        known = f"saved so far: {', '.join(saved)}" if saved else "nothing is saved yet"
        return f"no earlier step saved {name} ({known})"
    if namespace == "inputs":
        return (
            f"the workflow declares no input {name}: inputs are written into the steps when the "
            "session is created, from the workflow's `inputs`"
        )
    return (
        f"there is no {namespace!r} namespace: a step may use {{{{vars.NAME}}}} (saved by an "
        "earlier step), {{inputs.NAME}} (declared by the workflow), {{secrets.NAME}} and "
        "{{totp.NAME}} (the current code of a stored TOTP seed)"
    )


def with_variables(data: Any, variables: dict[str, Any]) -> Any:
    """`data` with `{{vars.name}}` filled in (strings, and the strings inside dicts and
    lists; a saved object or list as JSON); `{{secrets.NAME}}` and `{{totp.NAME}}` are left
    for the executor to fill for the destination. Raises VariableNotSet for a variable not
    saved or a namespace there is none of, so nothing is sent with a placeholder in it (a 404
    for `/todos/%7B%7Bvars.id%7D%7D` would pass for a result)."""
    if isinstance(data, str):

        def value(match: re.Match[str]) -> str:
            namespace, name = match.group(1), match.group(2)
            if namespace in FILLED_BY_EXECUTORS:
                return match.group(0)
            if namespace != VARIABLES or name not in variables:
                raise VariableNotSet(namespace, name, sorted(variables))
            saved = variables[name]
            return json.dumps(saved) if isinstance(saved, dict | list) else str(saved)

        return PLACEHOLDER.sub(value, data)
    if isinstance(data, dict):
        return {key: with_variables(value, variables) for key, value in data.items()}
    if isinstance(data, list):
        return [with_variables(value, variables) for value in data]
    return data


SAVED_PLACEHOLDER = (
    "it holds a {{namespace.name}} placeholder, which data read from outside never may: a "
    "later step sending it would have the placeholder filled in"
)


def holds_placeholder(data: Any) -> bool:
    """Whether any string in `data` holds a `{{namespace.name}}`. Data read from outside (a
    page, a model's reading of one, a signal's body) holding one is refused where it would be
    saved as a variable: the executor would fill a `{{secrets.NAME}}` in when a later step
    sends the variable, so a page could have a secret posted wherever that step posts."""
    return any(PLACEHOLDER.search(text) for text in strings_in(data))


def refused(error: SecretUnusable | VariableNotSet) -> Outcome:
    """The outcome of a command a secret or a variable could not be filled into: it ran
    nothing."""
    standard = error.to_standard_error()
    return Outcome(False, standard.message, standard)


def truncated(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters]"
