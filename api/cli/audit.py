"""`stepline audit verify`: the log's hash chain recomputed here, from the rows; and `stepline
db grants`: the SQL of the application role that cannot rewrite the log."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported when a command runs, so `stepline --help` stays quick
    from engine.audit.chain_verify import KeptHead, Verification

audit_cli = typer.Typer(help="The log's hash chain: verify it.", no_args_is_help=True)
db_cli = typer.Typer(help="The database's roles.", no_args_is_help=True)
BREAKS_SHOWN = 10


@audit_cli.command("verify")
def audit_verify(
    from_position: Annotated[
        int,
        typer.Option(
            "--from",
            min=1,
            help="start here, from the stored hash of the row before (taken on trust): to "
            "check only what came after a verified position",
        ),
    ] = 1,
    head: Annotated[
        str | None,
        typer.Option(
            help="a head kept elsewhere, POSITION:HASH (or HASH) as `GET /v1/audit/head` and "
            "the `Audit head` log line give it: the log must still hold it",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Recompute the log's hash chain from its rows and report where it breaks: a removed,
    altered or re-ordered row, or a kept head the log no longer holds. The result is recorded
    for the dashboard. Exit code 0 if the chain holds, 1 if it breaks."""
    from engine.audit.chain_verify import KeptHead  # noqa: PLC0415

    try:
        kept = None if head is None else KeptHead.parse(head)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--head") from None
    report = _verified(from_position, kept)
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        _print_report(report)
    raise typer.Exit(code=0 if report.clean else 1)


def _verified(from_position: int, kept: KeptHead | None) -> Verification:
    """Walk the log with a progress bar on stderr; record what was found."""
    import psycopg  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from api.cli.support import cli_actor, errors, runtime_or_exit  # noqa: PLC0415
    from engine.audit.chain import read_head  # noqa: PLC0415
    from engine.audit.chain_verify import record, verify  # noqa: PLC0415

    with runtime_or_exit(quiet=True) as runtime, psycopg.connect(runtime.database_url) as conn:
        table = runtime.app.events_table
        last = read_head(conn, table).position
        conn.rollback()
        columns = (TextColumn("[bold]verify[/]"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=errors, transient=True) as progress:
            task = progress.add_task("chain", total=max(last - from_position + 1, 0))
            report = verify(
                conn,
                table,
                from_position,
                kept,
                on_progress=lambda at: progress.update(task, completed=at - from_position + 1),
            )
        with runtime.projector.pool.connection() as recording:
            record(recording, report, cli_actor())
    return report


def _print_report(report: Verification) -> None:
    from api.cli.support import console  # noqa: PLC0415

    span = f"positions {report.from_position} to {report.last_position}"
    rate = f"{report.elapsed_s:.1f} s, {report.events_per_s:,.0f} events/s"
    if report.chain_start is not None and report.unchained:
        console.print(
            f"Rows before position {report.chain_start} ({report.unchained}) were written before "
            "the chain existed (schema migration 3): the chain starts there and does not cover "
            "them."
        )
    if report.trusted_start is not None:
        console.print(
            f"Started from the stored hash of position {report.trusted_start}, not checked."
        )
    if not report.clean:
        console.print(
            f"[bold red]The chain breaks[/]: {report.break_count} break(s) in {span} ({rate}), "
            "in order:",
            soft_wrap=True,
        )
        for found in report.breaks[:BREAKS_SHOWN]:
            at = "-" if found.position is None else f"position {found.position}"
            console.print(f"  {at:>16}  {found.kind:9} {found.detail}", soft_wrap=True)
        return
    console.print(f"[green]The chain holds[/]: {report.events} events, {span} ({rate}).")
    if report.last_hash is not None:
        console.print(
            f"Head: {report.last_position}:{report.last_hash.hex()} (keep it elsewhere; "
            "check it later with --head)",
            soft_wrap=True,
        )


@db_cli.command("grants")
def db_grants(
    role: Annotated[str, typer.Option(help="the application role's name")] = "stepline_app",
) -> None:
    """Print the SQL that makes the application role (STEPLINE_DATABASE_URL's user): all it
    needs, but the log only read and appended to, never updated, deleted or truncated. Run it
    as the owner of the tables (STEPLINE_MIGRATION_DATABASE_URL's user), e.g. piped to psql."""
    from engine.store.schema import application_grants  # noqa: PLC0415

    try:
        print(application_grants(role), end="")  # the output is the SQL alone, for psql
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--role") from None
