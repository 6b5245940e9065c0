"""Workflow files: the YAML a person writes to describe a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import httpx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from domain.errors import InvalidWorkflow
from domain.expressions import MAX_EXPRESSION
from domain.extraction import Extraction, ExtractionRefused
from domain.limits import LIMITS, STEP_LIMITS
from domain.loops import DEFAULT_MAX_ITERATIONS, MAX_ITERATIONS, VARIABLE, Loop, header_of
from domain.session import MAX_STEP_TEXT, MAX_STEPS, StepSpec
from domain.step_policy import POLICY_FIELDS, StepPolicy
from domain.webhook import DEFAULT_WEBHOOK_EVENTS, WebhookEvent
from engine.executors.kinds import DEFAULT_EXECUTOR, ExecutorName
from engine.executors.mcp_config import McpServer
from engine.workflows import errors as workflow_errors
from engine.workflows.inputs import MAX_INPUTS, NAME, InputSpec


def _step_override(name: str) -> Any:
    """A step's own value of one of the limits (`domain.limits.STEP_LIMITS`), bounded below as
    the limit it stands for is; unset, the step runs with the workflow's config."""
    step_limit = STEP_LIMITS[name]
    return Field(default=None, ge=step_limit.ge, strict=True, description=step_limit.description)


class StepPolicyFields(BaseModel):
    """A step's own policy, written beside its text: over the workflow's config for this step
    only (the tenant's maximums bound it as they bound the config)."""

    retries: int | None = _step_override("retries")
    retry_backoff_ms: int | None = _step_override("retry_backoff_ms")
    timeout_ms: int | None = _step_override("timeout_ms")
    max_turns: int | None = _step_override("max_turns")
    on_failure: Literal["fail", "continue"] | None = Field(
        default=None,
        description="what the step's failure does: fails the session (fail, the default), or "
        "is recorded and the session goes on to the next step (continue)",
    )

    def step_policy(self) -> StepPolicy:
        return StepPolicy.from_dict(self.model_dump(include=set(POLICY_FIELDS)))


class Conditional(BaseModel):
    """`if:` on a step or a loop: it runs only if the expression is true when it comes up
    (see `domain.expressions`); otherwise it is skipped, and recorded so."""

    if_: str | None = Field(
        default=None,
        alias="if",
        max_length=MAX_EXPRESSION,
        description="run the step only if this is true when it comes up, e.g. "
        '`vars.count > 0 and inputs.env == "prod"`; else it is skipped',
    )


class LoopFields(BaseModel):
    """A loop, `for each NAME in EXPRESSION:` with its steps: run once per item of the list
    the expression gives when the loop comes up (`{{NAME}}`, `{{NAME.field}}` in its
    steps). A step is either text or a loop (see `one_or_the_other`)."""

    for_each: str | None = Field(
        default=None,
        max_length=MAX_EXPRESSION,
        pattern=rf"^\s*{VARIABLE}\s+in\s+\S",
        description="a loop: `NAME in EXPRESSION`, the loop variable and the list it goes over "
        "(a file may write the step as `for each NAME in EXPRESSION: [steps]`)",
    )
    steps: list[StepEntry] | None = Field(
        default=None, min_length=1, max_length=MAX_STEPS, description="a loop's steps"
    )
    max_iterations: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ITERATIONS,
        strict=True,
        description=f"a loop's bound on its items (default {DEFAULT_MAX_ITERATIONS}): past it "
        "the loop fails with LOOP_LIMIT_EXCEEDED",
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _plain_strings_are_steps(cls, steps: Any) -> Any:
        return steps_as_entries(steps)

    def loop(self, body: Sequence[StepSpec] | None = None) -> Loop | None:
        """The loop it is, with its own steps, or `body` (its steps with their templates
        expanded: see `engine.workflows.templates`)."""
        if self.for_each is None or self.steps is None:
            return None
        var, over = self.for_each.strip().split(None, 1)
        written = [step.spec() for step in self.steps] if body is None else body
        bound = self.max_iterations or DEFAULT_MAX_ITERATIONS
        steps = tuple(step.to_dict() for step in written)
        return Loop(var, over.removeprefix("in").strip(), steps, bound)


MAX_USE = 500
"""A template's name or path, as `use:` writes it."""


class UseFields(BaseModel):
    """A template: `use: login` with `with: {user: ada}` stands for another workflow's steps,
    its inputs given by `with`, put in its place when a session is created (see
    `engine.workflows.templates`)."""

    use: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_USE,
        pattern=r"^\S(?:.*\S)?$",
        description="a template: a registered workflow of the tenant's (`login`, `login@2`), or "
        "for `stepline run FILE` a workflow file beside it (`login` for login.yaml, or a "
        "relative path); its steps are put here when the session is created",
    )
    with_: dict[str, Any] | None = Field(
        default=None,
        alias="with",
        max_length=MAX_INPUTS,
        description="a template's input values, checked against the inputs it declares; they "
        "may use this workflow's own, `{{inputs.NAME}}`",
    )


class ExtractFields(BaseModel):
    """`extract:` the data a step completes with, in a declared shape, and `save_as:` the
    variable it is saved as (see `domain.extraction`)."""

    extract: dict[str, Any] | None = Field(
        default=None,
        description="the data the step completes with: a JSON Schema, or {field: type, ...} "
        "(string, number, integer, boolean, array, object, [type]); for the browser, "
        "{rows: CSS, fields: {name: CSS}, schema: {...}} reads a table with no model",
    )
    save_as: str | None = Field(
        default=None,
        pattern=NAME,
        description="the variable the extracted data is saved as: {{vars.NAME}} after it",
    )

    @field_validator("extract")
    @classmethod
    def _a_usable_extract(cls, given: dict[str, Any] | None) -> dict[str, Any] | None:
        if given is not None:
            try:
                Extraction.written(given)
            except ExtractionRefused as refused:
                raise ValueError(str(refused)) from None
        return given

    def extracting(self, step: StepSpec) -> StepSpec:
        if self.extract is None and self.save_as is None:
            return step
        extraction = None if self.extract is None else Extraction.written(self.extract)
        return replace(step, extract=extraction, save_as=self.save_as)


class StepForms(StepPolicyFields, Conditional, LoopFields, UseFields, ExtractFields):
    """What a step may be besides its text: its policy and condition, a loop, a template, the
    data it extracts."""

    def spec(self) -> StepSpec:
        """The step as the domain takes it (each step model knows its text and expect)."""
        raise NotImplementedError

    def step_spec(
        self, text: str | None, expect: str | None, policy: StepPolicy, condition: str | None
    ) -> StepSpec:
        """The step: the loop it is, else its text (`one_or_the_other` said which). A
        template has no step of its own until it is expanded, where a session is made."""
        if self.use is not None:
            raise InvalidWorkflow(
                f"use: {self.use} is a template, expanded only where a session is created",
                suggested_action="Give the steps themselves here, or create a session of the "
                "workflow (stepline run, POST /v1/sessions), which expands its templates",
                field="use",
            )
        loop = self.loop()
        if loop is not None:
            return StepSpec(loop.header, None, policy, condition, loop)
        assert text is not None
        return self.extracting(StepSpec(text, expect, policy, condition))


def one_or_the_other(text: str | None, expect: str | None, step: StepForms) -> None:
    """A step is its text (with its expect), a loop (with its steps), or a template (with
    its values), never two of them."""
    if step.use is not None or step.with_ is not None:
        a_template_alone(text, expect, step)
        return
    if step.for_each is not None and expect is not None:
        raise ValueError("a loop has no expect: give its steps theirs")
    if step.for_each is not None and (step.extract, step.save_as) != (None, None):
        raise ValueError("a loop extracts nothing: give extract and save_as to its steps")
    if step.save_as is not None and step.extract is None:
        raise ValueError("save_as but no extract: only extracted data is saved")
    if text is None and step.for_each is None:
        raise ValueError("a step needs text, for_each with steps (a loop), or use (a template)")
    if text is not None and (step.for_each, step.steps, step.max_iterations) != (None,) * 3:
        raise ValueError("a step is text or a loop (for_each with steps), not both")
    if step.for_each is not None and step.steps is None:
        raise ValueError("a loop (for_each) needs its steps")
    if step.for_each is None and (step.steps is not None or step.max_iterations is not None):
        raise ValueError("steps and max_iterations belong to a loop: give for_each too")


def a_template_alone(text: str | None, expect: str | None, step: StepForms) -> None:
    """A template is `use` and its `with`, nothing else: its steps carry their own expect,
    condition and policy, and one given here would be unclear (the first step's, or each?)."""
    if step.use is None:
        raise ValueError("with gives a template its values: give use too")
    given = [
        name
        for name, value in (
            ("text", text),
            ("expect", expect),
            ("if", step.if_),
            ("for_each", step.for_each),
            ("steps", step.steps),
            ("max_iterations", step.max_iterations),
            ("extract", step.extract),
            ("save_as", step.save_as),
            *((name, getattr(step, name)) for name in POLICY_FIELDS),
        )
        if value is not None
    ]
    if given:
        raise ValueError(
            f"a template step (use) takes only with, not {', '.join(given)}: give the "
            "template's own steps their text, expect, if and policy"
        )


class StepEntry(StepForms):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = Field(default=None, min_length=1, max_length=MAX_STEP_TEXT)
    expect: str | None = Field(default=None, max_length=MAX_STEP_TEXT)

    @model_validator(mode="after")
    def _text_or_loop(self) -> StepEntry:
        one_or_the_other(self.text, self.expect, self)
        return self

    def spec(self) -> StepSpec:
        return self.step_spec(self.text, self.expect, self.step_policy(), self.if_)


LoopFields.model_rebuild()  # its steps are StepEntry, defined after it
StepForms.model_rebuild()
StepEntry.model_rebuild()


Step = Annotated[
    StepEntry,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_STEP_TEXT},
                {
                    "type": "object",
                    "description": "{text, expect, if, retries, ...}; or a loop: "
                    '{for_each: "NAME in EXPRESSION", steps: [...], max_iterations, if}, which '
                    "a file may write as `for each NAME in EXPRESSION: [steps]`; or a "
                    "template: {use: NAME, with: {...}}",
                },
            ]
        }
    ),
]
"""A step as written: its text, or {text, expect, if, policy...}, or a loop, or a template
({use, with}) (text alone is read as {text}; `for each X in Y: [...]` as {for_each: "X in Y",
steps: [...]})."""


def steps_as_entries(steps: Any) -> Any:
    """Steps as the models take them: a plain string is {text}; a loop written with its
    header as the key, {for_each, steps} (see `loops_as_entries`)."""
    if not isinstance(steps, list):
        return steps
    return [{"text": step} if isinstance(step, str) else step for step in loops_as_entries(steps)]


def loops_as_entries(steps: Any) -> Any:
    """Steps with each loop written as YAML writes it most easily, its header as the key
    (`for each todo in vars.todos: [...]`, beside `max_iterations:`, `if:`), made
    {for_each: "todo in vars.todos", steps: [...]}; the rest as given."""
    if not isinstance(steps, list):
        return steps
    return [_loop_entry(step) if isinstance(step, dict) else step for step in steps]


def _loop_entry(step: dict[Any, Any]) -> dict[Any, Any]:
    headers = [key for key in step if isinstance(key, str) and header_of(key) is not None]
    if len(headers) != 1 or "for_each" in step or "steps" in step:
        return step
    var, over = header_of(headers[0]) or ("", "")
    rest = {key: value for key, value in step.items() if key != headers[0]}
    return {"for_each": f"{var} in {over}", "steps": step[headers[0]], **rest}


def _override(name: str) -> Any:
    """A workflow's own value for one of the task loop's limits, bounded as `domain.limits`
    declares it; unset, the session runs with the operator's default."""
    return Field(default=None, ge=LIMITS[name].ge)


class WorkflowConfig(BaseModel):
    """Per-workflow overrides of the task loop's limits (unset: the STEPLINE_* defaults)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_turns_per_step: int | None = _override("max_turns_per_step")
    step_timeout_ms: int | None = _override("step_timeout_ms")
    workflow_timeout_ms: int | None = _override("workflow_timeout_ms")
    max_consecutive_failures: int | None = _override("max_consecutive_failures")
    max_repeated_commands: int | None = _override("max_repeated_commands")
    token_budget: int | None = _override("token_budget")
    max_attempts: int | None = _override("max_attempts")
    retry_backoff_ms: int | None = _override("retry_backoff_ms")
    context_char_budget: int | None = _override("context_char_budget")
    shell_allow: list[str] | None = None
    screenshots: Literal["failures", "all"] | None = Field(
        default=None, description="browser screenshots: on failures (default), or of every command"
    )
    http_errors: Literal["fail", "record"] | None = Field(
        default=None,
        description="an HTTP request answered 4xx/5xx: fails its step unless an `expect status` "
        "judges it (fail, the default), or is recorded as a result (record)",
    )
    vision: bool | None = Field(
        default=None,
        description="an AI step on the browser is shown the page's screenshot with each turn "
        "(only for models that accept images); unset: STEPLINE_AI_VISION (default off)",
    )
    learn: bool | None = Field(
        default=None,
        description="false: AI steps neither use nor teach learned actions (the action cache); "
        "by default a step an earlier run's model completed is done again without the model",
    )
    approvals: Literal["none", "model"] | None = Field(
        default=None,
        description="model: an AI step may ask a person's approval (the request_approval tool) "
        "and wait for it; none (the default): only `wait for approval` steps wait for one",
    )
    mcp: McpServer | None = Field(
        default=None, description="the MCP tool server of `executor: mcp` and of `call` steps"
    )


class WebhookSpec(BaseModel):
    """Where to tell, signed with the tenant's webhook secret, that a session reached one of
    `events` (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(max_length=2_000, pattern=r"^https?://[^\s/]+[^\s]*$")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1, max_length=10
    )

    @field_validator("url")
    @classmethod
    def _is_a_url(cls, url: str) -> str:
        """A URL the sender can parse: a host IDNA refuses is a bad request, not a crash."""
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as error:
            raise ValueError(f"not a URL a webhook can be sent to: {error}") from None
        if not host:
            raise ValueError("the URL names no host")
        return url


def session_config(
    config: WorkflowConfig,
    executor: str,
    base_url: str | None,
    webhook: WebhookSpec | None,
) -> dict[str, Any]:
    """What a session records as its config: the limits set, its executor and base URL, and
    its webhook if it has one (the workflow file's, the API's and a schedule's alike)."""
    recorded = {
        **config.model_dump(exclude_none=True),
        "executor": executor,
        "base_url": base_url,
    }
    if webhook is not None:
        recorded["webhook"] = webhook.model_dump()
    return recorded


InputName = Annotated[str, Field(pattern=NAME)]
"""How `{{inputs.NAME}}` names an input: a letter or `_`, then letters, digits, `_`."""


class WorkflowFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    executor: ExecutorName = DEFAULT_EXECUTOR
    base_url: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    definitions: str | None = Field(
        default=None, description="a module (dotted name or .py path) with register(definitions)"
    )
    inputs: dict[InputName, InputSpec] = Field(default_factory=dict, max_length=MAX_INPUTS)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    config: WorkflowConfig = Field(default_factory=WorkflowConfig)
    webhook: WebhookSpec | None = None

    @field_validator("steps", mode="before")
    @classmethod
    def _plain_strings_are_steps(cls, steps: Any) -> Any:
        return steps_as_entries(steps)

    def step_specs(self) -> list[StepSpec]:
        return [step.spec() for step in self.steps]

    def session_config(self, location: Path | None = None) -> dict[str, Any]:
        """What the session records: the file's config, its executor and base URL, and its
        definitions module (a .py path made absolute, so any runner can load it later)."""
        config = session_config(self.config, self.executor, self.base_url, self.webhook)
        if self.config.mcp is not None and location is not None:
            config["mcp"] = self.config.mcp.beside(location).model_dump(exclude_defaults=True)
        if self.definitions:
            module = self.definitions
            if module.endswith(".py") and location is not None:
                module = str((location.parent / module).resolve())
            config["definitions"] = module
        return config


def load_workflow(path: Path) -> WorkflowFile:
    """Parse and validate a workflow file, with errors that name the file, the line and the
    field, and say how to write what YAML misread (see `engine.workflows.errors`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise workflow_errors.unreadable(path, error) from None
    return parsed_workflow(path, text, WorkflowFile)


W = TypeVar("W", bound=WorkflowFile)


def parsed_workflow(path: Path, text: str, model: type[W]) -> W:
    """`text`, read from `path` (a file, or a request's body), as a `model`, with the errors
    `load_workflow` gives."""
    root, raw = _parsed(path, text)
    if _too_large(raw):
        raise InvalidWorkflow(
            f"{path} holds more than {MAX_VALUES:,} values or {MAX_CHARACTERS:,} characters once "
            "its YAML aliases are expanded",
            suggested_action="Write the workflow out without aliases (*name) that repeat large "
            "parts of it",
            file=str(path),
        )
    if (trap := workflow_errors.trap_in(path, text, root)) is not None:
        raise trap
    if not isinstance(raw, dict):
        raise InvalidWorkflow(
            f"{path} must hold a mapping with name and steps",
            suggested_action="Start the file with name: and steps: at the top level, as "
            "examples/todo.yaml does",
            file=str(path),
        )
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise workflow_errors.invalid_fields(path, root, error, model) from None


MAX_VALUES = 100_000
"""The most values (mappings, lists, keys, scalars) a workflow may hold: a few lines of YAML
aliases can stand for billions ("billion laughs"), and a request's body is YAML too."""


MAX_CHARACTERS = 2_000_000
"""The most characters its strings may hold together, its aliases expanded: one long string
repeated by aliases would be written out in full wherever the workflow is kept."""


def _too_large(data: Any) -> bool:
    """Whether `data`, its aliases expanded (a recursive one for ever), holds more than
    MAX_VALUES values or MAX_CHARACTERS characters; it stops counting there."""
    pending, counted, characters = [data], 0, 0
    while pending:
        value = pending.pop()
        counted += 1
        if counted > MAX_VALUES:
            return True
        if isinstance(value, str):
            characters += len(value)
            if characters > MAX_CHARACTERS:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _parsed(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    """The file's YAML as nodes (which know their lines) and as data, read once."""
    try:
        loader = yaml.SafeLoader(text)  # refuses a character YAML does not take (NUL)
        try:
            root = loader.get_single_node()
            return root, None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise workflow_errors.not_yaml(path, text, error) from None
    except RecursionError:
        raise InvalidWorkflow(
            f"{path} is nested too deeply to read",
            suggested_action="Write the workflow with its steps, config and inputs a few "
            "levels deep, as examples/todo.yaml is",
            file=str(path),
        ) from None
