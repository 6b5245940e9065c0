"""`stepline workflows`: push, list, show, diff and roll back a tenant's registered workflows,
from the database (as --tenant) or through a server (--api, --key), as `stepline schedules`
does; and what `stepline run NAME[@N]` runs when its argument names no file."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from api.cli.options import ApiKey, ApiUrl, AsJson
from domain.dev_mode import DEV_TENANT

if TYPE_CHECKING:
    from api.http.schemas import WorkflowSummary, WorkflowVersionView, WorkflowView
    from domain.workflow import Reference, Version
    from engine.bootstrap import Runtime
    from engine.store.app import SessionRequest
    from engine.workflows.file import WorkflowFile
    from engine.workflows.templates import TemplateSource

workflows_cli = typer.Typer(
    help="The tenant's workflow registry: each push of a changed workflow file a new, "
    "immutable version; run one with `stepline run NAME[@N]`. From the database (as "
    "--tenant), or through a server with --api and --key.",
    no_args_is_help=True,
)

Tenant = Annotated[
    str | None,
    typer.Option(
        help=f"the tenant whose registry this is (database only; default {DEV_TENANT}); "
        "through a server the key decides",
        show_default=False,
    ),
]
Name = Annotated[str, typer.Argument(help="the workflow's name", show_default=False)]


class WorkflowSource(Protocol):
    def push(self, document: dict[str, Any]) -> tuple[WorkflowVersionView, bool]: ...

    def listed(self) -> list[WorkflowSummary]: ...

    def shown(self, name: str) -> WorkflowView: ...

    def version(self, name: str, number: int) -> WorkflowVersionView: ...

    def rollback(self, name: str, to_version: int) -> WorkflowView: ...


class DatabaseWorkflows:
    """Through the application, as the API's routes do, with `actor` on the events."""

    def __init__(self, runtime: Runtime, tenant: str, actor: str) -> None:
        self.runtime = runtime
        self.tenant = tenant
        self.actor = actor

    def _catch_up(self) -> None:
        self.runtime.projector.catch_up(["workflow_registry"])

    def push(self, document: dict[str, Any]) -> tuple[WorkflowVersionView, bool]:
        from api.http.workflows import pushed  # noqa: PLC0415
        from engine.workflows.registry import WorkflowDocument  # noqa: PLC0415

        spec = WorkflowDocument.model_validate(document)
        return pushed(self.runtime, spec, self.tenant, self.actor, self._catch_up)

    def listed(self) -> list[WorkflowSummary]:
        from api.http.workflows import workflow_page  # noqa: PLC0415

        self._catch_up()
        return workflow_page(self.runtime, self.tenant, 200, None).items

    def shown(self, name: str) -> WorkflowView:
        from api.http.workflows import workflow_view  # noqa: PLC0415

        return workflow_view(self.runtime, self.tenant, name, self._catch_up)

    def version(self, name: str, number: int) -> WorkflowVersionView:
        from api.http.workflows import version_view  # noqa: PLC0415

        return version_view(self.runtime, self.tenant, name, number, self._catch_up)

    def rollback(self, name: str, to_version: int) -> WorkflowView:
        from api.http.workflows import rolled_back  # noqa: PLC0415

        return rolled_back(self.runtime, self.tenant, name, to_version, self.actor, self._catch_up)


def _server(api_url: str, key: str | None) -> WorkflowSource:
    from urllib.parse import quote  # noqa: PLC0415

    from api.cli.session_sources import ApiSessions  # noqa: PLC0415
    from api.http.schemas import WorkflowPage, WorkflowVersionView, WorkflowView  # noqa: PLC0415

    class ApiWorkflows(ApiSessions):
        """The same through a server's HTTP API."""

        def push(self, document: dict[str, Any]) -> tuple[WorkflowVersionView, bool]:
            answer = self._answer("POST", "/v1/workflows", json=document)
            return WorkflowVersionView.model_validate(answer.json()), answer.status_code == 201

        def listed(self) -> list[WorkflowSummary]:
            page = self._json("GET", "/v1/workflows", params={"limit": 200})
            return WorkflowPage.model_validate(page).items

        def shown(self, name: str) -> WorkflowView:
            return WorkflowView.model_validate(self._json("GET", f"/v1/workflows/{quote(name)}"))

        def version(self, name: str, number: int) -> WorkflowVersionView:
            answer = self._json("GET", f"/v1/workflows/{quote(name)}/versions/{number}")
            return WorkflowVersionView.model_validate(answer)

        def rollback(self, name: str, to_version: int) -> WorkflowView:
            path = f"/v1/workflows/{quote(name)}/rollback"
            answer = self._json("POST", path, json={"to_version": to_version})
            return WorkflowView.model_validate(answer)

    return ApiWorkflows(api_url, key)


@contextmanager
def opened(api_url: str | None, key: str | None, tenant: str | None) -> Iterator[WorkflowSource]:
    """The server at `api_url` with `key`, or else the database as `tenant` (see
    `opened_either`)."""
    from api.cli.sessions import opened_either  # noqa: PLC0415

    with opened_either(api_url, key, tenant, _server, DatabaseWorkflows) as source:
        yield source


def reference_of(text: str) -> Reference:
    """`NAME` or `NAME@N`; exit code 2 if it is neither."""
    from api.cli.sessions import bad_option  # noqa: PLC0415
    from domain.workflow import Reference  # noqa: PLC0415

    reference = Reference.parse(text)
    if reference is None:
        raise bad_option(
            "NAME", f"{text!r} is not a workflow's name, nor NAME@N", "Write NAME or NAME@3"
        )
    return reference


def document_of_file(path: Path) -> dict[str, Any]:
    """The workflow file as the registry takes it, normalised; its errors name the line."""
    from api.cli.support import fail  # noqa: PLC0415
    from domain.errors import DomainError  # noqa: PLC0415
    from engine.workflows.file import parsed_workflow  # noqa: PLC0415
    from engine.workflows.registry import WorkflowDocument, normalised  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        from engine.workflows import errors as workflow_errors  # noqa: PLC0415

        raise fail(workflow_errors.unreadable(path, error).to_standard_error()) from None
    try:
        return normalised(parsed_workflow(path, text, WorkflowDocument))
    except DomainError as error:
        raise fail(error.to_standard_error()) from None


def as_yaml(document: dict[str, Any]) -> str:
    """The document as a workflow file, its fields in the file's order."""
    import yaml  # noqa: PLC0415

    from engine.workflows.registry import normalised, validated  # noqa: PLC0415

    return yaml.safe_dump(
        normalised(validated(document)), sort_keys=False, allow_unicode=True, width=100
    )


# ---- `stepline run NAME[@N]` --------------------------------------------------------------


@dataclass(frozen=True)
class ChosenWorkflow:
    """What `stepline run` runs: a workflow file, or a registered version."""

    spec: WorkflowFile
    templates: TemplateSource
    """Where its `use:` are found: beside the file, then the tenant's registry."""
    location: Path | None = None
    """The file's (its definitions module is found beside it)."""
    version: Version | None = None
    """The registered version's."""

    def as_written(
        self, base_url: str | None, values: Mapping[str, Any] | None = None
    ) -> SessionRequest:
        """Its session with `{{inputs.NAME}}` as written (a version's recorded in its config),
        its templates expanded with the input `values` (none: checked, not expanded)."""
        from api.cli.live import as_written  # noqa: PLC0415
        from engine.workflows.registry import as_written as registered  # noqa: PLC0415

        if self.version is not None:
            return registered(self.version, self.templates, values, base_url)[1]
        return as_written(self.spec, self.location, self.templates, values, base_url)

    def request(self, base_url: str | None, inputs: dict[str, Any]) -> SessionRequest:
        """Its session, with the input values written in (its templates' `with` first)."""
        from engine.workflows.inputs import resolved, with_inputs  # noqa: PLC0415

        values = resolved(self.spec.inputs, inputs)
        return with_inputs(self.as_written(base_url, values), self.spec.inputs, inputs)


def names_a_file(argument: Path) -> bool:
    """Whether `stepline run`'s argument is a workflow file's path: one that exists, or that
    cannot be `NAME[@N]` (it holds a `/`, or ends in `.yaml` or `.yml`)."""
    from domain.workflow import Reference  # noqa: PLC0415

    return (
        argument.exists()
        or argument.suffix in (".yaml", ".yml")
        or Reference.parse(str(argument)) is None
    )


def chosen_workflow(runtime: Runtime, argument: Path, tenant: str) -> ChosenWorkflow:
    """The file `argument` names (see `names_a_file`); or else that version of the tenant's
    registered workflow, `NAME[@N]` (its current one without `@N`)."""
    from domain.errors import WorkflowNotFound  # noqa: PLC0415
    from domain.workflow import Reference  # noqa: PLC0415
    from engine.workflows.file import load_workflow  # noqa: PLC0415
    from engine.workflows.registry import RegisteredTemplates, resolved, validated  # noqa: PLC0415
    from engine.workflows.templates import FileTemplates  # noqa: PLC0415

    registered = RegisteredTemplates(runtime.app, tenant)
    reference = Reference.parse(str(argument))
    if names_a_file(argument) or reference is None:
        beside = FileTemplates(argument.parent, registered)
        return ChosenWorkflow(load_workflow(argument), beside, location=argument)
    try:
        version = resolved(runtime.app, tenant, reference)
    except WorkflowNotFound as error:
        raise WorkflowNotFound(
            f"there is no file {argument}, and {error.message}",
            suggested_action="Give the path of a workflow file, or the name of one tenant "
            f"{tenant} registered (`stepline workflows list --tenant {tenant}`)",
            **error.details,
        ) from None
    return ChosenWorkflow(validated(version.document), registered, version=version)


# ---- printing -----------------------------------------------------------------------------


def _when(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def print_workflows(workflows: list[WorkflowSummary], as_json: bool) -> None:
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from api.cli.sessions import emit_json  # noqa: PLC0415
    from api.cli.support import console  # noqa: PLC0415

    if as_json:
        emit_json(workflows)
        return
    table = Table(title="Workflows, newest first")
    for column in ("name", "current", "versions", "updated"):
        table.add_column(column, overflow="fold")
    for w in workflows:
        table.add_row(
            Text(w.name), str(w.current_version), str(w.version_count), _when(w.updated_at)
        )
    console.print(table)


def print_workflow(workflow: WorkflowView) -> None:
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from api.cli.support import console  # noqa: PLC0415

    table = Table(title=Text(f"{workflow.name}: version {workflow.current_version} is current"))
    for column in ("version", "sha256", "pushed", "by", ""):
        table.add_column(column, overflow="fold")
    for v in workflow.versions:
        table.add_row(
            str(v.version),
            v.sha256[:12],
            _when(v.pushed_at),
            Text(v.actor),
            "current" if v.current else "",
        )
    console.print(table)


# ---- the commands -------------------------------------------------------------------------


@workflows_cli.command("push")
def push(
    workflow: Annotated[Path, typer.Argument(help="the workflow file (YAML)", show_default=False)],
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """Push a workflow file: a new version of the workflow it names, unless it is the current
    version's (then nothing is recorded). A file with a definitions module is refused."""
    from api.cli.sessions import emit_json  # noqa: PLC0415
    from api.cli.support import console  # noqa: PLC0415

    document = document_of_file(workflow)
    with opened(api, key, tenant) as source:
        version, new = source.push(document)
    if as_json:
        emit_json(version)
        return
    said = "pushed" if new else "unchanged: the current version is"
    console.print(f"{said} {version.name}@{version.version} (sha256 {version.sha256[:12]})")


@workflows_cli.command("list")
def list_all(
    as_json: AsJson = False, api: ApiUrl = None, key: ApiKey = None, tenant: Tenant = None
) -> None:
    """The tenant's workflows: each one's current version and how many it has."""
    with opened(api, key, tenant) as source:
        print_workflows(source.listed(), as_json)


@workflows_cli.command("show")
def show(
    name: Annotated[
        str,
        typer.Argument(
            help="NAME: its versions; NAME@N: version N's document, as YAML", show_default=False
        ),
    ],
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """A workflow's versions (which is current, who pushed each, when), or one version's
    document."""
    from api.cli.sessions import emit_json  # noqa: PLC0415

    reference = reference_of(name)
    if reference.version is None:
        with opened(api, key, tenant) as source:
            workflow = source.shown(reference.name)
        if as_json:
            emit_json(workflow)
        else:
            print_workflow(workflow)
        return
    with opened(api, key, tenant) as source:
        version = source.version(reference.name, reference.version)
    if as_json:
        emit_json(version)
        return
    current = ", current" if version.current else ""
    sys.stdout.write(f"# {version.name}@{version.version} (sha256 {version.sha256}{current})\n")
    sys.stdout.write(as_yaml(version.document))


@workflows_cli.command("diff")
def diff(
    name: Name,
    first: Annotated[int, typer.Argument(help="a version (the older)", min=1)],
    second: Annotated[int, typer.Argument(help="another version (the newer)", min=1)],
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """A unified diff of two versions' documents, as YAML."""
    with opened(api, key, tenant) as source:
        versions = [source.version(name, number) for number in (first, second)]
    a, b = (as_yaml(version.document).splitlines(keepends=True) for version in versions)
    sys.stdout.write("".join(difflib.unified_diff(a, b, f"{name}@{first}", f"{name}@{second}")))


@workflows_cli.command("rollback")
def rollback(
    name: Name,
    to: Annotated[int, typer.Option("--to", help="the version to make current again", min=1)],
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """Make an earlier version current again (recorded as an event; nothing is deleted):
    `stepline run NAME` and new sessions of the name run it."""
    from api.cli.sessions import emit_json  # noqa: PLC0415

    with opened(api, key, tenant) as source:
        workflow = source.rollback(name, to)
    if as_json:
        emit_json(workflow)
    else:
        print_workflow(workflow)
