"""What each step of a workflow will do, as far as its step definitions tell before it runs:
the commands it builds, the placeholders it uses, the variables it saves.

Read at creation (the secrets a workflow needs), by `stepline run --check` (everything), and
by the task loop (which steps could have saved a variable that is not set; whether a
request's error status is judged by the check after it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from domain.errors import StandardError
from domain.session import StepSpec
from engine.executors import FILLED_BY_EXECUTORS, PLACEHOLDER, SECRETS, VARIABLES, Command
from engine.loop.definitions import DefinitionError, Definitions
from engine.secrets import TOTP, strings_in


@dataclass(frozen=True)
class Placeholder:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{{{{{self.namespace}.{self.name}}}}}"


@dataclass(frozen=True)
class PlannedStep:
    index: int
    spec: StepSpec
    commands: tuple[Command, ...] | None
    """None when no definition matches the step: the AI decides."""
    checks: tuple[Command, ...] | None = None
    """The commands of the step's `expect`, when a definition matches it."""
    problem: str | None = None
    """Why a definition that matches cannot be used (its JSON, say)."""
    bound: frozenset[str] = frozenset()
    """The loop variables in scope (a loop's own step: `{{todo.title}}` is written in from
    its item when the loop comes up)."""

    @property
    def decided_by_ai(self) -> bool:
        return self.commands is None and self.problem is None

    def all_commands(self) -> tuple[Command, ...]:
        return (self.commands or ()) + (self.checks or ())

    def placeholders(self) -> list[Placeholder]:
        """Every `{{namespace.name}}` in its text, its expect and its commands, once each."""
        texts = [self.spec.text, self.spec.expect or ""]
        texts += [text for command in self.all_commands() for text in strings_in(command.args)]
        found = (
            Placeholder(match.group(1), match.group(2))
            for text in texts
            for match in PLACEHOLDER.finditer(text)
        )
        return list(dict.fromkeys(found))

    def saves(self) -> set[str]:
        """The variables its commands save, and its extracted data's (`save_as`)."""
        saved = {name for command in self.all_commands() if (name := command.saves)}
        return saved | ({self.spec.save_as} if self.spec.save_as else set())

    @property
    def checks_status(self) -> bool:
        """Whether its own expect is an `expect status`."""
        return any(command.name == "expect_status" for command in self.checks or ())

    @property
    def is_status_check(self) -> bool:
        """Whether the step itself is an `expect status`."""
        commands = self.commands or ()
        return bool(commands) and all(command.name == "expect_status" for command in commands)


def planned_step(definitions: Definitions, index: int, spec: StepSpec) -> PlannedStep:
    if spec.extract is not None:  # its data comes from the model or its selectors
        return PlannedStep(index, spec, None)
    try:
        commands = definitions.match(spec.text)
        checks = definitions.match(spec.expect) if spec.expect and commands else None
    except DefinitionError as error:
        return PlannedStep(index, spec, None, problem=str(error))
    return PlannedStep(
        index,
        spec,
        None if commands is None else tuple(commands),
        None if checks is None else tuple(checks),
    )


def plan(definitions: Definitions, steps: Sequence[StepSpec]) -> list[PlannedStep]:
    """Each step planned; a loop as a step with no command (it only makes its iterations),
    followed by its own steps, planned once, under its index."""
    planned: list[PlannedStep] = []
    for index, spec in enumerate(steps):
        planned += _planned(definitions, index, spec, frozenset(spec.bound_names()))
    return planned


def _planned(
    definitions: Definitions, index: int, spec: StepSpec, bound: frozenset[str]
) -> list[PlannedStep]:
    if spec.loop is None:
        return [replace(planned_step(definitions, index, spec), bound=bound)]
    inner = bound | {spec.loop.var}
    body = [StepSpec.from_dict(step) for step in spec.loop.steps]
    return [PlannedStep(index, spec, (), bound=bound)] + [
        planned for step in body for planned in _planned(definitions, index, step, inner)
    ]


def used(planned: Sequence[PlannedStep], namespace: str) -> dict[str, list[int]]:
    """Each name of `namespace` the steps use, and the steps using it."""
    users: dict[str, list[int]] = {}
    for step in planned:
        for placeholder in step.placeholders():
            if placeholder.namespace == namespace:
                users.setdefault(placeholder.name, []).append(step.index)
    return users


def secrets_used(planned: Sequence[PlannedStep]) -> dict[str, list[int]]:
    """Each stored secret the steps use, as a value (`{{secrets.NAME}}`) or as a TOTP seed
    (`{{totp.NAME}}`), and the steps using it."""
    users = used(planned, SECRETS)
    for name, steps in used(planned, TOTP).items():
        users.setdefault(name, []).extend(steps)
    return users


def saved_by(planned: Sequence[PlannedStep], name: str) -> list[int]:
    """The steps that save variable `name`."""
    return [step.index for step in planned if name in step.saves()]


def unfillable(planned: Sequence[PlannedStep]) -> Iterator[tuple[PlannedStep, Placeholder]]:
    """Each placeholder a step uses that nothing will have filled when it runs: a variable no
    earlier step saves, or a namespace there is none of."""
    saved: set[str] = set()
    for step in planned:
        for placeholder in step.placeholders():
            if placeholder.namespace in FILLED_BY_EXECUTORS or placeholder.namespace in step.bound:
                continue
            if placeholder.namespace != VARIABLES or placeholder.name not in saved:
                yield step, placeholder
        saved |= step.saves()


def unset_explained(
    error: StandardError, definitions: Definitions, steps: Sequence[StepSpec], index: int
) -> StandardError:
    """A VARIABLE_NOT_SET error of step `index`, with the steps that could have saved it."""
    if error.details.get("namespace") != VARIABLES:
        return error
    name = str(error.details.get("name"))
    savers = saved_by(plan(definitions, steps), name)
    return StandardError.of(
        error.code,
        f"{error.message}; {_savers_said(savers, name, index, steps)}",
        {**error.details, "saved_by": savers},
    )


def _savers_said(savers: list[int], name: str, index: int, steps: Sequence[StepSpec]) -> str:
    if not savers:
        return f"no step of this workflow saves {name}"
    said = ", ".join(f"step {i} ({steps[i].text!r})" for i in savers)
    if all(i > index for i in savers):
        return f"{said} saves it, but only after step {index}"
    return f"{said} saves it, but did not before step {index}"
