"""`stepline run --check`: what a workflow would meet if it ran now, found without running it.

Per step: the definition it matches (or whether the AI decides, and whether there is one),
the placeholders nothing will have filled, the secrets its tenant has not stored. For the
workflow: its tenant's policy, its definitions module, and whether its base URL answers. No
session is created and nothing is written to the event store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from uuid import uuid4

from domain.errors import InvalidWorkflow
from domain.tenant import Policy
from engine.executors import FILLED_BY_EXECUTORS, VARIABLES, Command
from engine.executors.kinds import ExecutorSetup, http_executor
from engine.loop.limits import admitted as within_policy
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.store.app import SessionRequest
from engine.workflows.admission import definitions_of
from engine.workflows.file import StepEntry
from engine.workflows.plan import (
    Placeholder,
    PlannedStep,
    plan,
    planned_step,
    saved_by,
    unfillable,
)


@dataclass(frozen=True)
class StepCheck:
    index: int
    text: str
    runs_as: str
    """The commands its definition builds, or who decides them."""
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BaseUrlCheck:
    url: str | None
    answered: bool
    said: str
    """The status it answered with, or why it did not answer."""


@dataclass(frozen=True)
class WorkflowCheck:
    name: str
    tenant: str
    problems: list[str]
    """Of the workflow as a whole: its policy, its definitions module."""
    steps: list[StepCheck]
    base_url: BaseUrlCheck

    @property
    def problem_count(self) -> int:
        unreachable = 0 if self.base_url.answered else 1
        return len(self.problems) + sum(len(step.problems) for step in self.steps) + unreachable

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_workflow(loop: TaskLoop, request: SessionRequest, tenant: str) -> WorkflowCheck:
    """Everything `admitted` would refuse, and what would fail once it ran, as a report."""
    problems: list[str] = []
    policy = loop.policy_of(tenant)
    try:
        within_policy(request, loop.settings, policy)
    except InvalidWorkflow as refused:
        problems.append(f"{refused.code}: {refused.message}")
    try:
        definitions = definitions_of(loop, request)
    except InvalidWorkflow as unloadable:
        problems.append(unloadable.message)
        definitions = loop.definitions.base
    base_url = probe(loop, request.config.get("base_url"), policy)
    steps = _step_checks(loop, plan(definitions, request.steps), tenant)
    return WorkflowCheck(request.name, tenant, problems, steps, base_url)


def _step_checks(loop: TaskLoop, planned: list[PlannedStep], tenant: str) -> list[StepCheck]:
    stored = loop.secret_names(tenant)
    problems: dict[int, list[str]] = {step.index: [] for step in planned}
    for step, placeholder in unfillable(planned):
        problems[step.index].append(_unfillable_said(planned, step, placeholder))
    for step in planned:
        if step.problem is not None:
            problems[step.index].insert(0, f"its definition cannot be used: {step.problem}")
        if step.decided_by_ai and loop.ai is None:
            problems[step.index].insert(
                0, "no definition matches and no AI provider is set (STEPLINE_AI_MODEL)"
            )
        problems[step.index] += [
            f"{placeholder} is not stored for tenant {tenant}"
            for placeholder in step.placeholders()
            if placeholder.namespace in FILLED_BY_EXECUTORS and placeholder.name not in stored
        ]
    return [
        StepCheck(step.index, step.spec.text, runs_as(step, loop), problems[step.index])
        for step in planned
    ]


def _unfillable_said(
    planned: list[PlannedStep], step: PlannedStep, placeholder: Placeholder
) -> str:
    if placeholder.namespace == "inputs":  # left as written: the inputs did not fit
        return f"{placeholder}: no value to write in (see the workflow's problems)"
    if placeholder.namespace != VARIABLES:
        return (
            f"{placeholder}: there is no {placeholder.namespace!r} namespace (only vars, "
            "inputs, secrets and totp)"
        )
    later = [i for i in saved_by(planned, placeholder.name) if i >= step.index]
    if later:
        return f"{placeholder} is used before step {later[0]} saves it"
    return f"{placeholder} is used, but no step saves {placeholder.name}"


def runs_as(step: PlannedStep, loop: TaskLoop) -> str:
    """How a planned step will run, as a person reads it: its commands, or who decides them
    (also the workflow editor's label of each step)."""
    if step.problem is not None:
        return "a definition (unusable)"
    if step.commands is None:
        return "the AI decides" if loop.ai is not None else "the AI decides (none is set)"
    return "; ".join(_described(command) for command in step.all_commands())


RunsAs = Literal["definition", "ai", "unusable", "loop", "template"]
"""A step definition matches it, the AI decides, a definition matches but cannot be used, a
loop, a template (`use`)."""


@dataclass(frozen=True)
class StepLabel:
    """How one step of a workflow document will run: the workflow editor's label of it."""

    index: int
    kind: RunsAs
    runs_as: str


def labelled_steps(loop: TaskLoop, steps: Sequence[StepEntry]) -> list[StepLabel]:
    """Each step as `stepline run --check` labels it, planned with the built-in definitions
    (a registered workflow has no module of its own); a loop and a template are labelled as
    such, their own steps being planned where a session is made."""
    return [_labelled(loop, index, step) for index, step in enumerate(steps)]


def _labelled(loop: TaskLoop, index: int, step: StepEntry) -> StepLabel:
    if step.use is not None:
        return StepLabel(index, "template", f"the steps of the template {step.use}")
    if step.for_each is not None:  # its steps may use templates, which only a session expands
        var, over = step.for_each.strip().split(None, 1)
        header = f"for each {var} {over}"
        return StepLabel(index, "loop", f"a loop: {header}")
    spec = step.spec()
    planned = planned_step(loop.definitions.base, index, spec)
    kind: RunsAs = "definition"
    if planned.problem is not None:
        kind = "unusable"
    elif planned.decided_by_ai:
        kind = "ai"
    return StepLabel(index, kind, runs_as(planned, loop))


def _described(command: Command) -> str:
    args = " ".join(
        value if isinstance(value, str) else json.dumps(value)
        for value in command.args.values()
        if value is not None
    )
    return f"{command.executor}.{command.name} {args}".strip()


def probe(loop: TaskLoop, base_url: str | None, policy: Policy) -> BaseUrlCheck:
    """A GET of the base URL, as the session's HTTP executor would send it (the tenant's
    egress policy, the configured timeouts)."""
    if not base_url:
        return BaseUrlCheck(None, True, "none set: requests need absolute URLs")
    config = {"base_url": base_url, "http_errors": "record"}
    executor = http_executor(ExecutorSetup(uuid4(), config, loop.settings, Secrets(), policy))
    try:
        outcome = executor.run(Command("http", "request", {"method": "GET", "url": base_url}))
    finally:
        executor.close()
    if outcome.error is not None:
        return BaseUrlCheck(base_url, False, f"{outcome.error.code}: {outcome.error.message}")
    return BaseUrlCheck(base_url, True, f"answered {json.loads(outcome.output)['status']}")
