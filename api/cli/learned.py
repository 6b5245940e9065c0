"""`stepline learned`: list, show and forget a tenant's learned actions (the action cache),
from the database (as --tenant) or through a server (--api, --key), as GET and DELETE
/v1/learned-actions do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Protocol
from uuid import UUID

import typer

from api.cli.options import ApiKey, ApiUrl, AsJson
from domain.dev_mode import DEV_TENANT

if TYPE_CHECKING:
    from api.http.learned import LearnedActionDetail, LearnedActionPage
    from engine.bootstrap import Runtime

learned_cli = typer.Typer(
    help="What AI steps learned, to do again without the model (the action cache); from "
    "the database (as --tenant), or through a server with --api and --key.",
    no_args_is_help=True,
)

Tenant = Annotated[
    str | None,
    typer.Option(
        help=f"the tenant whose learned actions these are (database only; default "
        f"{DEV_TENANT}); through a server the key decides",
        show_default=False,
    ),
]
ActionId = Annotated[
    str,
    typer.Argument(help="the learned action's id, or its first characters (4 or more)"),
]
PAGE = 500


class LearnedSource(Protocol):
    def listed(self, with_old: bool) -> LearnedActionPage: ...

    def shown(self, action_id: UUID) -> LearnedActionDetail: ...

    def forget(self, action_id: UUID) -> None: ...


class DatabaseLearned:
    """The same functions as the API's routes, on the database, as `tenant`."""

    def __init__(self, runtime: Runtime, tenant: str, actor: str) -> None:
        self.runtime, self.tenant, self.actor = runtime, tenant, actor

    def _catch_up(self) -> None:
        self.runtime.projector.catch_up(["learned_actions"])

    def listed(self, with_old: bool) -> LearnedActionPage:
        from api.http.learned import learned_page  # noqa: PLC0415

        return learned_page(
            self.runtime, self.tenant, with_old=with_old, limit=PAGE, catch_up=self._catch_up
        )

    def shown(self, action_id: UUID) -> LearnedActionDetail:
        from api.http.learned import learned_detail  # noqa: PLC0415

        return learned_detail(self.runtime, self.tenant, action_id, self._catch_up)

    def forget(self, action_id: UUID) -> None:
        from api.http.learned import forget_learned  # noqa: PLC0415

        forget_learned(self.runtime, self.tenant, action_id, self.actor, self._catch_up)


def _server(api_url: str, key: str | None) -> LearnedSource:
    from api.cli.session_sources import ApiSessions  # noqa: PLC0415
    from api.http.learned import LearnedActionDetail, LearnedActionPage  # noqa: PLC0415

    class ApiLearned(ApiSessions):
        """The same through a server's HTTP API."""

        def listed(self, with_old: bool) -> LearnedActionPage:
            params = {"limit": PAGE, "all": str(with_old).lower()}
            answer = self._json("GET", "/v1/learned-actions", params=params)
            return LearnedActionPage.model_validate(answer)

        def shown(self, action_id: UUID) -> LearnedActionDetail:
            answer = self._json("GET", f"/v1/learned-actions/{action_id}")
            return LearnedActionDetail.model_validate(answer)

        def forget(self, action_id: UUID) -> None:
            self._json("DELETE", f"/v1/learned-actions/{action_id}")

    return ApiLearned(api_url, key)


@contextmanager
def opened(api_url: str | None, key: str | None, tenant: str | None) -> Iterator[LearnedSource]:
    """The server at `api_url` with `key`, or else the database as `tenant`."""
    from api.cli.sessions import opened_either  # noqa: PLC0415

    with opened_either(api_url, key, tenant, _server, DatabaseLearned) as source:
        yield source


def resolved(source: LearnedSource, given: str) -> UUID:
    """The action `given` names: its id, or the start of one (4 characters or more)."""
    from api.cli.support import fail  # noqa: PLC0415
    from domain.errors import StandardError  # noqa: PLC0415

    try:
        return UUID(given)
    except ValueError:
        pass
    ids = {item.id for item in source.listed(with_old=True).items}
    found = [i for i in ids if str(i).startswith(given)]
    if len(given) < 4 or len(found) != 1:
        why = "more than one learned action's" if len(found) > 1 else "no learned action's"
        raise fail(
            StandardError.of(
                "LEARNED_ACTION_NOT_FOUND",
                f"{why} id starts with {given!r}",
                suggested_action="Give the id (or 4+ of its first characters) as "
                "`stepline learned list` prints it",
            )
        )
    return found[0]


# ---- the commands -------------------------------------------------------------------------


@learned_cli.command("list")
def list_learned(
    all_versions: Annotated[
        bool, typer.Option("--all", help="every version, superseded and forgotten ones too")
    ] = False,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """The tenant's learned actions, newest first: the step, its commands, hits and misses."""
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from api.cli.sessions import emit_json  # noqa: PLC0415
    from api.cli.support import console  # noqa: PLC0415

    with opened(api, key, tenant) as source:
        page = source.listed(all_versions)
    if as_json:
        emit_json(page)
        return
    table = Table(title="Learned actions, newest first")
    for column in ("id", "v", "step", "workflow", "commands", "tokens", "hits", "misses", "state"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "v"))
    for item in page.items:
        state = "forgotten" if item.forgotten else "superseded" if item.superseded else "live"
        table.add_row(
            str(item.id)[:8],
            str(item.version),
            Text(item.step_text),
            Text(item.workflow),
            str(len(item.commands)),
            str(item.tokens),
            str(item.hits),
            str(item.misses),
            state,
        )
    console.print(table)


@learned_cli.command("show")
def show(
    action_id: ActionId,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: Tenant = None,
) -> None:
    """One learned action: every version, newest first, with the commands it does again."""
    from rich.markup import escape  # noqa: PLC0415

    from api.cli.sessions import emit_json  # noqa: PLC0415
    from api.cli.support import console  # noqa: PLC0415

    with opened(api, key, tenant) as source:
        detail = source.shown(resolved(source, action_id))
    if as_json:
        emit_json(detail)
        return
    for version in detail.versions:
        state = "forgotten" if version.forgotten else "superseded" if version.superseded else "live"
        console.print(
            f"[bold]{escape(version.step_text)}[/bold]  version {version.version} ({state}), "
            f"learned {version.learned_at:%Y-%m-%d %H:%M:%S} from session "
            f"{version.source_session_id}; {version.tokens} tokens, {version.seconds} s saved "
            f"a hit; {version.hits} hits, {version.misses} misses"
        )
        console.print(f"  starts at: {escape(version.start)}")
        for number, command in enumerate(version.commands, 1):
            console.print(
                f"  {number}. {command.executor}.{command.name} {escape(str(command.args))} "
                f"-> {command.expected}"
            )


@learned_cli.command("forget")
def forget(
    action_id: ActionId, api: ApiUrl = None, key: ApiKey = None, tenant: Tenant = None
) -> None:
    """Forget a learned action: the next run of its step asks the model, and learns anew."""
    from api.cli.support import console  # noqa: PLC0415

    with opened(api, key, tenant) as source:
        found = resolved(source, action_id)
        source.forget(found)
    console.print(f"Forgot learned action {found}")
