"""`stepline schedules`: create, list, pause, resume and delete a tenant's schedules, from the
database (as --tenant) or through a server (--api, --key), as `stepline sessions` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol
from uuid import UUID

import typer

from api.cli.options import ApiKey, ApiUrl, AsJson
from domain.dev_mode import DEV_TENANT

if TYPE_CHECKING:
    from api.http.schemas import CreateSchedule, CreateSession, ScheduleView, UpdateSchedule
    from engine.bootstrap import Runtime

schedules_cli = typer.Typer(
    help="Workflows run at given times (cron or every), each firing a session; from the "
    "database (as --tenant), or through a server with --api and --key.",
    no_args_is_help=True,
)

Tenant = Annotated[
    str | None,
    typer.Option(
        help=f"the tenant whose schedules these are (database only; default {DEV_TENANT}); "
        "through a server the key decides",
        show_default=False,
    ),
]
ScheduleId = Annotated[
    str,
    typer.Argument(
        help="the schedule's id, or its first characters (4 or more)", show_default=False
    ),
]


class ScheduleSource(Protocol):
    def create(self, body: CreateSchedule) -> ScheduleView: ...

    def listed(self) -> list[ScheduleView]: ...

    def update(self, schedule_id: UUID, body: UpdateSchedule) -> ScheduleView: ...

    def delete(self, schedule_id: UUID) -> None: ...


class DatabaseSchedules:
    """Through the application, as the API's routes do, with `actor` on the events."""

    def __init__(self, runtime: Runtime, tenant: str, actor: str) -> None:
        self.runtime = runtime
        self.tenant = tenant
        self.actor = actor

    def _catch_up(self) -> None:
        self.runtime.projector.catch_up(["schedule_index"])

    def _view(self, schedule_id: UUID) -> ScheduleView:
        from api.http.schedules import indexed  # noqa: PLC0415

        return indexed(self.runtime, schedule_id, self._catch_up)

    def create(self, body: CreateSchedule) -> ScheduleView:
        from api.http.schedules import new_schedule  # noqa: PLC0415

        return self._view(new_schedule(self.runtime, body, self.tenant, self.actor).id)

    def listed(self) -> list[ScheduleView]:
        from api.http.schedules import schedule_view  # noqa: PLC0415
        from projections.schedule_index import list_schedules  # noqa: PLC0415

        self._catch_up()
        with self.runtime.projector.pool.connection() as conn:
            return [schedule_view(row) for row in list_schedules(conn, self.tenant, limit=200)]

    def update(self, schedule_id: UUID, body: UpdateSchedule) -> ScheduleView:
        from api.http.schedules import change_schedule  # noqa: PLC0415

        change_schedule(self.runtime, schedule_id, body, self.tenant, self.actor)
        return self._view(schedule_id)

    def delete(self, schedule_id: UUID) -> None:
        from api.http.schedules import delete_schedule  # noqa: PLC0415

        delete_schedule(self.runtime, schedule_id, self.tenant, self.actor)


def _server(api_url: str, key: str | None) -> ScheduleSource:
    from api.cli.session_sources import ApiSessions  # noqa: PLC0415
    from api.http.schemas import SchedulePage, ScheduleView  # noqa: PLC0415

    class ApiSchedules(ApiSessions):
        """The same through a server's HTTP API."""

        def create(self, body: CreateSchedule) -> ScheduleView:
            answer = self._json("POST", "/v1/schedules", json=body.model_dump(mode="json"))
            return ScheduleView.model_validate(answer)

        def listed(self) -> list[ScheduleView]:
            page = self._json("GET", "/v1/schedules", params={"limit": 200})
            return SchedulePage.model_validate(page).items

        def update(self, schedule_id: UUID, body: UpdateSchedule) -> ScheduleView:
            given = body.model_dump(mode="json", exclude_unset=True)
            answer = self._json("PATCH", f"/v1/schedules/{schedule_id}", json=given)
            return ScheduleView.model_validate(answer)

        def delete(self, schedule_id: UUID) -> None:
            self._json("DELETE", f"/v1/schedules/{schedule_id}")

    return ApiSchedules(api_url, key)


@contextmanager
def opened(api_url: str | None, key: str | None, tenant: str | None) -> Iterator[ScheduleSource]:
    """The server at `api_url` with `key`, or else the database as `tenant` (see
    `opened_either`)."""
    from api.cli.sessions import opened_either  # noqa: PLC0415

    with opened_either(api_url, key, tenant, _server, DatabaseSchedules) as source:
        yield source


def resolved(source: ScheduleSource, given: str) -> UUID:
    """The schedule `given` names: its id, or the start of one (4 characters or more)."""
    from api.cli.support import fail  # noqa: PLC0415
    from domain.errors import StandardError  # noqa: PLC0415

    try:
        return UUID(given)
    except ValueError:
        pass
    found = [s.schedule_id for s in source.listed() if str(s.schedule_id).startswith(given)]
    if len(given) < 4 or len(found) != 1:
        why = "more than one schedule's" if len(found) > 1 else "no schedule's"
        raise fail(
            StandardError.of(
                "SCHEDULE_NOT_FOUND",
                f"{why} id starts with {given!r}",
                suggested_action="Give the id (or 4+ of its first characters) as "
                "`stepline schedules list` prints it",
            )
        )
    return found[0]


def body_of_file(path: Path, name: str | None) -> CreateSession:
    """The workflow file as a POST /v1/sessions body: what a schedule records and fires."""
    from api.cli.support import fail  # noqa: PLC0415
    from api.http.schemas import CreateSession  # noqa: PLC0415
    from domain.errors import DomainError, StandardError  # noqa: PLC0415
    from engine.workflows.file import load_workflow  # noqa: PLC0415

    try:
        spec = load_workflow(path)
    except DomainError as error:
        raise fail(error.to_standard_error()) from None
    if spec.definitions:
        raise fail(
            StandardError.of(
                "VALIDATION_FAILED",
                f"{path} loads a definitions module; a schedule runs workflows as POST "
                "/v1/sessions takes them, with the built-in definitions",
                suggested_action="Remove `definitions:` from the file, or run it with "
                "`stepline run` from a cron of your own",
            )
        )
    return CreateSession.model_validate(
        {
            "name": name or spec.name,
            "steps": [step.model_dump(by_alias=True, exclude_none=True) for step in spec.steps],
            "executor": spec.executor,
            "base_url": spec.base_url,
            "config": spec.config,
            "labels": spec.labels,
            "webhook": spec.webhook,
        }
    )


# ---- printing -----------------------------------------------------------------------------


def _when(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def print_schedules(schedules: list[ScheduleView], as_json: bool) -> None:
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from api.cli.sessions import emit_json  # noqa: PLC0415
    from api.cli.support import console  # noqa: PLC0415

    if as_json:
        emit_json(schedules)
        return
    table = Table(title="Schedules, newest first")
    for column in ("id", "name", "when", "next firing", "last fired", "sessions", "state"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "state"))
    for s in schedules:
        when = f"cron {s.cron} ({s.timezone})" if s.cron else f"every {s.every}"
        state = "paused" if s.paused else "active"
        if s.last_error:
            state += f"\nlast refused: {s.last_error.get('code')}"
        table.add_row(
            str(s.schedule_id)[:8],
            Text(s.name),
            when,
            _when(s.next_firing_at),
            _when(s.last_fired_at),
            str(s.firings),
            state,
        )
    console.print(table)


# ---- the commands -------------------------------------------------------------------------


@schedules_cli.command("create")
def create(
    workflow: Annotated[Path, typer.Argument(help="the workflow file (YAML) each firing runs")],
    cron: Annotated[
        str | None, typer.Option(help='five fields, e.g. "*/5 * * * *"; or @hourly, @daily')
    ] = None,
    every: Annotated[str | None, typer.Option(help='a period: "30s", "5m", "2h", "1d"')] = None,
    name: Annotated[str | None, typer.Option(help="the schedule's name (the file's)")] = None,
    timezone: Annotated[str, typer.Option(help="the IANA zone cron is read in")] = "UTC",
    catch_up: Annotated[
        str,
        typer.Option(help="firings missed while nothing ran: none, one (fire once for all) or all"),
    ] = "one",
    paused: Annotated[bool, typer.Option("--paused", help="create it paused")] = False,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """Create a schedule: each firing runs the workflow file as a new session, admitted as
    any session is (the tenant's policy, its secrets)."""
    from api.cli.sessions import bad_option  # noqa: PLC0415
    from api.http.schemas import CreateSchedule  # noqa: PLC0415

    if catch_up not in ("none", "one", "all"):
        raise bad_option("--catch-up", f"{catch_up!r} is not none, one or all")
    body = body_of_file(workflow, None)
    assert body.name is not None  # a file's workflow is given inline
    asked = CreateSchedule(
        name=name or body.name,
        workflow=body,
        cron=cron,
        every=every,
        timezone=timezone,
        catch_up=catch_up,
        paused=paused,
    )
    with opened(api, key, tenant) as source:
        print_schedules([source.create(asked)], as_json)


@schedules_cli.command("list")
def list_all(
    as_json: AsJson = False, api: ApiUrl = None, key: ApiKey = None, tenant: Tenant = None
) -> None:
    """The tenant's schedules: when each fires next and what it last did."""
    with opened(api, key, tenant) as source:
        print_schedules(source.listed(), as_json)


def _update(
    given: str, paused: bool, as_json: bool, api: str | None, key: str | None, tenant: str | None
) -> None:
    from api.http.schemas import UpdateSchedule  # noqa: PLC0415

    with opened(api, key, tenant) as source:
        changed = source.update(resolved(source, given), UpdateSchedule(paused=paused))
        print_schedules([changed], as_json)


@schedules_cli.command("pause")
def pause(
    schedule_id: ScheduleId,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """Pause a schedule: it fires no more until resumed."""
    _update(schedule_id, True, as_json, api, key, tenant)


@schedules_cli.command("resume")
def resume(
    schedule_id: ScheduleId,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """Resume a paused schedule; firings missed while paused are not caught up."""
    _update(schedule_id, False, as_json, api, key, tenant)


@schedules_cli.command("delete")
def delete(
    schedule_id: ScheduleId, api: ApiUrl = None, key: ApiKey = None, tenant: Tenant = None
) -> None:
    """Delete a schedule (the sessions it created stay)."""
    from api.cli.support import console  # noqa: PLC0415

    with opened(api, key, tenant) as source:
        found = resolved(source, schedule_id)
        source.delete(found)
    console.print(f"Deleted schedule {found}")
