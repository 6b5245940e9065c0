"""The `stepline` command line: what each command takes and says it does.

Only the declarations live here; `api.cli_commands` (the runtime, the web and model stacks)
is imported when a command runs, so `stepline --help` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "todo.yaml"

cli = typer.Typer(help="Stepline: event-sourced automation workflows.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
projections_cli = typer.Typer(help="Read models: status and rebuild.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")

AsJson = Annotated[bool, typer.Option("--json", help="print as JSON")]
DEFAULT_TENANT = "default"  # the API's dev-mode tenant (api.auth.DEV_TENANT; a test keeps them one)
Tenant = Annotated[
    str,
    typer.Option(
        help="the tenant the session belongs to; the default is the one a dev-mode "
        "`stepline serve` shows, so what you run locally appears there",
    ),
]


@cli.command()
def run(
    workflow: Annotated[Path, typer.Argument(help="the workflow file (YAML)")],
    base_url: Annotated[str | None, typer.Option(help="override the file's base_url")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the final session as JSON")
    ] = False,
    tenant: Tenant = DEFAULT_TENANT,
) -> None:
    """Run a workflow file to the end, showing each step live. Exit code 0 only if it completed."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.run(workflow, base_url, as_json, tenant)


@cli.command()
def demo(
    workflow: Annotated[Path, typer.Option(help="workflow file to run")] = EXAMPLE,
    as_json: Annotated[bool, typer.Option("--json", help="print the history as JSON")] = False,
    tenant: Tenant = DEFAULT_TENANT,
) -> None:
    """Start the example web app, run the example workflow against it, print the history."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.demo(workflow, as_json, tenant)


@cli.command()
def history(
    session_id: Annotated[UUID, typer.Argument(help="the session's id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the history as JSON")] = False,
) -> None:
    """Print every event of a session, in order."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.history(session_id, as_json)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, help="sessions driven here at once; 0 = API only (default: the setting)"
        ),
    ] = None,
) -> None:
    """Serve the HTTP API, the projections and a session worker in one process."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.serve(host, port, workers)


@cli.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="sessions driven at once (default STEPLINE_MAX_CONCURRENT_SESSIONS)"
        ),
    ] = None,
) -> None:
    """Run a session worker (and the TTL sweep) until SIGTERM or Ctrl-C, which hand every
    session back at its next safe point."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.worker(concurrency)


@cli.command("workers")
def workers_list(as_json: AsJson = False) -> None:
    """The live workers, the sessions each drives and the age of each lease."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.workers_list(as_json)


@keys_cli.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="the key's name: the actor on its events")],
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")],
) -> None:
    """Make a new API key; prints the key once and the entry for STEPLINE_API_KEYS."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.keys_new(name, tenant)


@projections_cli.command("status")
def projections_status() -> None:
    """Each view's position in the log and how far behind it is."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.projections_status()


@projections_cli.command("rebuild")
def projections_rebuild(
    names: Annotated[list[str] | None, typer.Argument(help="views to rebuild; all if none")] = None,
) -> None:
    """Empty views and replay the whole log into them, showing progress."""
    from api import cli_commands  # noqa: PLC0415

    cli_commands.projections_rebuild(names)


def main() -> None:
    cli()
