"""The workflow registry: each tenant's workflows by name, a new immutable version for each push
that changes one, and the sessions made from a version.

A document is the workflow file's shape (`WorkflowDocument`), normalised before it is pushed
(`normalised`: a field left at its default is left out, a step with no `expect` is its text),
so two pushes that mean the same are the same document, with the same content address (see
`domain.workflow`). A session made from a version records which (`config.workflow`: its name,
version and sha256) beside the steps as they were written in then, so a later push or rollback
never changes it, and its replays and forks, which copy its steps and config, keep it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError
from pydantic import Field, ValidationError, field_validator

from domain.errors import InvalidWorkflow, TemplateNotFound, WorkflowNotFound
from domain.session import MAX_NAME
from domain.workflow import NAME, Reference, Version, Workflow, is_name
from engine.store.app import SessionRequest, Stepline, decided
from engine.workflows.file import WebhookSpec, WorkflowFile, parsed_workflow
from engine.workflows.inputs import not_declared, used, with_inputs
from engine.workflows.inputs import resolved as input_values
from engine.workflows.templates import (
    Root,
    Template,
    TemplateSource,
    expanded,
    registered_key,
    unknown_values,
)


class WorkflowDocument(WorkflowFile):
    """A workflow as the registry keeps it: the workflow file's shape, under a name a reference
    can name, and run with the built-in step definitions only."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        json_schema_extra={"pattern": NAME},  # checked by _a_registered_name, which says why
        description="what it is registered as: letters, digits and _, with spaces and "
        ". , : ( ) - inside (no @ or /)",
    )
    definitions: None = Field(
        default=None,
        description="not taken: a registered workflow runs with the built-in step definitions",
    )

    @field_validator("name")
    @classmethod
    def _a_registered_name(cls, name: str) -> str:
        if not is_name(name):
            raise ValueError(
                "a registered workflow's name is letters, digits and _, with spaces and "
                ". , : ( ) - inside (no @, no /, nothing around it)"
            )
        return name

    @field_validator("definitions", mode="before")
    @classmethod
    def _no_module(cls, module: Any) -> None:
        if module is not None:
            raise ValueError(
                "a registered workflow runs with the built-in step definitions: a module would "
                "be code run by whoever runs the workflow (a server, too); remove definitions"
            )


def normalised(document: WorkflowDocument) -> dict[str, Any]:
    """The document as it is pushed and addressed: the fields left at their defaults left
    out, each step with no `expect` as its text, its fields named as a file writes them
    (`if`, `with`)."""
    data = document.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    data["steps"] = [step["text"] if step.keys() == {"text"} else step for step in data["steps"]]
    return data


def validated(document: Mapping[str, Any]) -> WorkflowDocument:
    """A recorded document, read again; one that this version of Stepline no longer takes is
    refused with the reason."""
    try:
        return WorkflowDocument.model_validate(document)
    except ValidationError as error:
        raise InvalidWorkflow(
            f"the registered workflow {document.get('name')!r} is no longer valid: {error}"
        ) from None


def document_of_yaml(text: str) -> WorkflowDocument:
    """A document sent as YAML, with the errors of a workflow file (line, column, field), the
    request's body standing for the file."""
    return parsed_workflow(Path("body"), text, WorkflowDocument)


# ---- the registry's commands --------------------------------------------------------------

T = TypeVar("T")


def registered(app: Stepline, tenant: str, name: str) -> Workflow:
    """The tenant's workflow of that name; WorkflowNotFound if it has none. The id is derived
    from the tenant and the name, so another tenant's workflow is never found."""
    workflow: object = None
    if is_name(name):
        with contextlib.suppress(AggregateNotFoundError):
            workflow = app.repository.get(Workflow.create_id(tenant, name))
    if not isinstance(workflow, Workflow) or workflow.tenant != tenant:
        raise WorkflowNotFound(f"no workflow named {name!r} is registered", workflow=name)
    return workflow


def push(
    app: Stepline, document: WorkflowDocument, *, tenant: str, actor: str
) -> tuple[Version, bool]:
    """Record the document as its workflow's next version (the workflow created with its
    first); the version current afterwards, and whether it is new (False: the document is
    the current version's, and nothing was recorded)."""
    check_runnable(app, document, tenant, actor)
    pushed = normalised(document)

    def load() -> Workflow:
        try:
            return registered(app, tenant, document.name)
        except WorkflowNotFound:
            return Workflow.create(tenant=tenant, name=document.name, actor=actor)

    return _decided(app, load, lambda workflow: workflow.push(pushed, actor))


def check_runnable(app: Stepline, document: WorkflowDocument, tenant: str, actor: str) -> None:
    """Refuse at its push, not at its first run, a document no session could be made of: what
    a session refuses (a step empty once trimmed, a label too long: checked on one built here
    and dropped), a step or base URL using an input the document does not declare, and a
    template (`use:`) that is not the tenant's, uses itself, or is given values it does not
    take. The document keeps its `use:` as written: each session expands them afresh."""
    templates = RegisteredTemplates(app, tenant)
    request = _request_of(document, templates, unknown_values(document.inputs))
    request.build(tenant, actor)
    undeclared = sorted(
        used(request.steps, request.config.get("base_url")) - document.inputs.keys()
    )
    if undeclared:
        raise not_declared(undeclared[0], document.inputs, "the workflow")


def roll_back(app: Stepline, *, tenant: str, name: str, to_version: int, actor: str) -> Workflow:
    """Make version `to_version` of the workflow current again (nothing if it is already)."""

    def decide(workflow: Workflow) -> Workflow:
        workflow.roll_back(to_version, actor)
        return workflow

    workflow, _ = _decided(app, lambda: registered(app, tenant, name), decide)
    return workflow


def _decided(
    app: Stepline, load: Callable[[], Workflow], decide: Callable[[Workflow], T]
) -> tuple[T, bool]:
    return decided(app, load, decide, "the workflow")


# ---- sessions of a registered version ---------------------------------------------------


def resolved(app: Stepline, tenant: str, reference: Reference) -> Version:
    """The version `reference` names (the current one without a number); WorkflowNotFound if
    there is no such workflow or version."""
    return registered(app, tenant, reference.name).version_numbered(reference.version)


def as_written(
    version: Version,
    templates: TemplateSource,
    values: Mapping[str, Any] | None = None,
    base_url: str | None = None,
) -> tuple[WorkflowDocument, SessionRequest]:
    """The version's document, and its session with its `{{inputs.NAME}}` as written, its
    templates expanded with the run's input `values` (not given: not known yet, see
    `engine.workflows.templates`), and the version recorded in its config (`workflow`: name,
    version, sha256)."""
    spec = validated(version.document)
    known = unknown_values(spec.inputs) if values is None else values
    request = _request_of(spec, templates, known)
    config = dict(request.config)
    if base_url is not None:
        config["base_url"] = base_url
    config["workflow"] = {"name": spec.name, "version": version.number, "sha256": version.sha256}
    return spec, replace(request, config=config)


def _request_of(
    spec: WorkflowDocument, templates: TemplateSource, values: Mapping[str, Any]
) -> SessionRequest:
    return SessionRequest(
        name=spec.name,
        steps=expanded(spec.steps, templates, values, Root(spec.name, registered_key(spec.name))),
        config=spec.session_config(),
        labels=dict(spec.labels),
    )


@dataclass(frozen=True)
class RegisteredRun:
    """A session of a registered version, as POST /v1/sessions asks for one."""

    reference: Reference
    values: Mapping[str, Any] = field(default_factory=dict)
    """The run's input values (`with`)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Over the document's labels."""
    webhook: WebhookSpec | None = None
    """Over the document's webhook."""
    default_webhook: WebhookSpec | None = None
    """For a document that names none (a batch's)."""


def registered_request(app: Stepline, tenant: str, run: RegisteredRun) -> SessionRequest:
    """The session `run` asks for: the version's, its inputs written in (InvalidInput naming
    one that does not fit), its labels and webhook as given."""
    version = resolved(app, tenant, run.reference)
    values = input_values(validated(version.document).inputs, run.values)
    spec, request = as_written(version, RegisteredTemplates(app, tenant), values)
    config = dict(request.config)
    hook = run.webhook or spec.webhook or run.default_webhook
    if hook is not None:
        config["webhook"] = hook.model_dump()
    labels = {**request.labels, **run.labels}
    return with_inputs(replace(request, config=config, labels=labels), spec.inputs, run.values)


class RegisteredTemplates:
    """Templates from the registry of the tenant creating the session, and from no other: a
    workflow of that name in another tenant's is not found. Each `use:` is looked up once per
    session made, and its steps' origin records the version used (`login@2`)."""

    def __init__(self, app: Stepline, tenant: str) -> None:
        self.app = app
        self.tenant = tenant
        self.found: dict[str, Template] = {}

    def template(self, use: str) -> Template:
        if use not in self.found:
            self.found[use] = self._looked_up(use)
        return self.found[use]

    def _looked_up(self, use: str) -> Template:
        reference = Reference.parse(use)
        if reference is None:
            reason = "a registered workflow is named as name, or name@3 for a version"
        else:
            try:
                version = resolved(self.app, self.tenant, reference)
            except WorkflowNotFound as error:
                reason = error.message
            else:
                label = f"{reference.name}@{version.number}"
                document = validated(version.document)
                return Template(registered_key(reference.name), label, document, self)
        raise TemplateNotFound(f"use: {use}: {reason}", field="use", template=use, reason=reason)
