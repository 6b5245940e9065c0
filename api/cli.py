"""The `stepline` command line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.errors import DomainError, StandardError
from domain.session import WorkflowSession
from engine.app import Stepline
from engine.bootstrap import Runtime, open_runtime
from engine.database import DatabaseUnavailable
from engine.projector import UnknownView
from engine.settings import Settings
from engine.workflow_file import load_workflow
from projections import session_progress

cli = typer.Typer(help="Stepline: event-sourced automation workflows.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "login.yaml"


def _fail(error: StandardError) -> typer.Exit:
    errors.print(f"[bold red]{error.code}[/]: {error.message}")
    errors.print(f"[dim]{error.suggested_action}[/]")
    return typer.Exit(code=2)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        raise _fail(StandardError.of("CONFIGURATION_INVALID", message)) from None


def _event_data(event: WorkflowSession.Event) -> dict[str, Any]:
    hidden = {"originator_id", "originator_version", "timestamp", "originator_topic", "actor"}
    return {k: v for k, v in vars(event).items() if k not in hidden}


def _print_history(app: Stepline, session_id: UUID, as_json: bool) -> None:
    events = app.history(session_id)
    if as_json:
        rows = [
            {
                "version": e.originator_version,
                "type": type(e).__name__,
                "timestamp": e.timestamp.isoformat(),
                "actor": getattr(e, "actor", None),
                "data": _event_data(e),
            }
            for e in events
        ]
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=f"Session {session_id}")
    for column in ("v", "event", "time", "actor", "data"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            str(e.originator_version),
            type(e).__name__,
            e.timestamp.strftime("%H:%M:%S.%f")[:-3],
            getattr(e, "actor", ""),
            json.dumps(_event_data(e), default=str)[:160],
        )
    console.print(table)


def _print_progress(runtime: Runtime, session_id: UUID) -> None:
    with runtime.projector.pool.connection() as conn:
        progress = session_progress.find(conn, session_id)
    if progress is not None:
        errors.print(
            f"progress view: {progress.status}, {progress.completed_steps}/"
            f"{progress.total_steps} steps ({progress.percent:.0f}%)"
        )


def _drive_demo_session(app: Stepline, session_id: UUID) -> None:
    """Scripted transitions standing in for the task loop, which does this for real later."""
    session = app.get_session(session_id)
    for index, step in enumerate(session.steps):
        app.start_step(session_id, index)
        command_id = f"demo-{index}"
        app.issue_command(
            session_id,
            index,
            command_id=command_id,
            executor="demo",
            name="note",
            args={"step": step.text},
        )
        if index == 0:
            app.pause(session_id, reason="demo: pause while a command runs", actor="demo-user")
        app.finish_command(
            session_id,
            index,
            command_id=command_id,
            ok=True,
            output="scripted result (no executor ran)",
            duration_ms=0,
        )
        if index == 0:
            app.resume(session_id, reason="demo: carry on", actor="demo-user")
        app.complete_step(session_id, index, summary=f"scripted: {step.text}")
    app.complete_session(session_id)


@cli.command()
def demo(
    workflow: Annotated[Path, typer.Option(help="workflow file to run")] = EXAMPLE,
    as_json: Annotated[bool, typer.Option("--json", help="print the history as JSON")] = False,
) -> None:
    """Create a session from a workflow file, drive it through its lifecycle, print its history."""
    settings = _settings()
    try:
        spec = load_workflow(workflow)
        with open_runtime(settings) as runtime:
            where = "embedded PostgreSQL" if runtime.embedded else "PostgreSQL"
            errors.print(f"[dim]event store: {where}[/]")
            session_id = runtime.app.create_session(
                name=spec.name,
                steps=spec.step_specs(),
                tenant="demo",
                actor="demo-user",
                config=spec.session_config(),
                labels=spec.labels,
            )
            _drive_demo_session(runtime.app, session_id)
            _print_history(runtime.app, session_id, as_json)
            runtime.projector.catch_up()
            _print_progress(runtime, session_id)
    except DomainError as error:
        raise _fail(error.to_standard_error()) from None
    except (PersistenceError, DatabaseUnavailable) as error:
        raise _fail(StandardError.of("DATABASE_UNAVAILABLE", str(error))) from None


@cli.command()
def history(
    session_id: Annotated[UUID, typer.Argument(help="the session's id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the history as JSON")] = False,
) -> None:
    """Print every event of a session, in order."""
    settings = _settings()
    try:
        with open_runtime(settings) as runtime:
            _print_history(runtime.app, session_id, as_json)
    except DomainError as error:
        raise _fail(error.to_standard_error()) from None
    except (PersistenceError, DatabaseUnavailable) as error:
        raise _fail(StandardError.of("DATABASE_UNAVAILABLE", str(error))) from None


projections_cli = typer.Typer(help="Read models: status and rebuild.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")


@projections_cli.command("status")
def projections_status() -> None:
    """Each view's position in the log and how far behind it is."""
    with _runtime_or_exit() as runtime:
        table = Table(title="Projections")
        for column in ("view", "position", "log head", "lag"):
            table.add_column(column, justify="right" if column != "view" else "left")
        for view in runtime.projector.status():
            table.add_row(view.name, str(view.position), str(view.head), str(view.lag))
        console.print(table)


@projections_cli.command("rebuild")
def projections_rebuild(
    names: Annotated[list[str] | None, typer.Argument(help="views to rebuild; all if none")] = None,
) -> None:
    """Empty views and replay the whole log into them, showing progress."""
    with _runtime_or_exit() as runtime:
        projector = runtime.projector
        try:
            selected = projector.select(names)
        except UnknownView as error:
            raise _fail(StandardError.of("VALIDATION_FAILED", str(error))) from None
        with Progress(
            TextColumn("[bold]rebuild[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=errors,
        ) as progress:
            task = progress.add_task(", ".join(selected), total=projector.head())
            started = time.perf_counter()
            applied = projector.rebuild(
                selected,
                on_progress=lambda at, head: progress.update(task, completed=at, total=head),
            )
        elapsed = time.perf_counter() - started
        rate = applied / elapsed if elapsed else 0.0
        console.print(
            f"rebuilt {', '.join(selected)}: {applied} events in {elapsed:.1f} s "
            f"({rate:,.0f} events/s)"
        )


@contextmanager
def _runtime_or_exit() -> Iterator[Runtime]:
    settings = _settings()
    try:
        with open_runtime(settings) as runtime:
            yield runtime
    except DomainError as error:
        raise _fail(error.to_standard_error()) from None
    except (PersistenceError, DatabaseUnavailable) as error:
        raise _fail(StandardError.of("DATABASE_UNAVAILABLE", str(error))) from None


def main() -> None:
    cli()
