"""What the `stepline` commands do. `api/cli/main.py` declares them and imports this module only
when a command runs, so `stepline --help` starts without the web and model stacks."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any
from uuid import UUID

import typer
from eventsourcing.persistence import PersistenceError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.check import print_check
from api.cli.examples import EXAMPLES
from api.cli.junit import write_junit
from api.cli.live import (
    INTERRUPTIONS,
    Run,
    final_report,
    print_outcome,
    run_with_progress,
)
from api.cli.session_sources import DatabaseSessions
from api.cli.sessions import resolved
from api.cli.support import (
    ExitCode,
    cli_actor,
    console,
    errors,
    fail,
    load_settings,
    runtime_or_exit,
)
from api.cli.workflows import chosen_workflow, names_a_file
from api.http.auth import new_key
from api.http.event_views import event_view
from api.http.server import UnsafeBinding, check_binding, create_app, run_worker
from api.http.server import serve as serve_app
from domain.errors import DomainError, InvalidInput, SessionNotFound, StandardError
from domain.session import StepSpec, WorkflowSession
from engine.bootstrap import Runtime
from engine.live.leadership import current_leader, process_identity
from engine.live.projector import READ_YOUR_WRITES_S, UnknownView
from engine.loop.replay import fork_request, replay_request
from engine.store.app import SessionRequest, Stepline
from engine.store.database import DatabaseUnavailable
from engine.workflows.check import check_workflow
from engine.workflows.file import WorkflowFile, load_workflow
from engine.workflows.inputs import parsed_value
from engine.workflows.registry import RegisteredTemplates
from engine.workflows.templates import FileTemplates, Root, expanded, file_key
from projections import session_progress
from projections.audit_log import describe


def _print_history(app: Stepline, session_id: UUID, as_json: bool) -> None:
    events = app.history(session_id)
    if as_json:
        rows = [event_view(e).model_dump(mode="json") for e in events]
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"Session {session_id}")
    for column in ("v", "time", "event", "actor", "what happened"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            str(e.originator_version),
            e.timestamp.strftime("%H:%M:%S.%f")[:-3],
            type(e).__name__,
            getattr(e, "actor", ""),
            describe(e),
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


def load_example_target() -> Any:
    """examples/target_app.py, the small web app the demo runs against."""
    spec = importlib.util.spec_from_file_location(
        "stepline_example_target", EXAMPLES / "target_app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_file(
    runtime: Runtime,
    workflow: Path,
    base_url: str | None,
    as_json: bool,
    tenant: str,
    inputs: dict[str, Any] | None = None,
) -> Run:
    request = chosen_workflow(runtime, workflow, tenant).request(base_url, inputs or {})
    return _run_request(runtime, request, as_json, tenant)


def _run_request(runtime: Runtime, request: SessionRequest, as_json: bool, tenant: str) -> Run:
    # A candidate for the views' lead, so they stay live meanwhile even with no other process.
    stop_leading = runtime.projector.start_leading(process_identity("run"))
    try:
        ran = run_with_progress(runtime, request, errors, tenant)
        runtime.projector.wait_until(runtime.projector.head(), timeout=READ_YOUR_WRITES_S)
    finally:
        stop_leading()
    if as_json:
        console.print_json(json.dumps(final_report(ran.session), default=str))
    else:
        print_outcome(ran, errors)
    return ran


def input_values(given: list[str]) -> dict[str, Any]:
    """`--input NAME=VALUE`s as values (see `parsed_value`); a malformed one ends with code 2."""
    values: dict[str, Any] = {}
    for item in given:
        name, equals, text = item.partition("=")
        if not equals or not name:
            message = f"--input {item!r}: write NAME=VALUE"
            raise fail(StandardError.of("INPUT_INVALID", message, {"input": name}))
        values[name] = parsed_value(text)
    return values


def run(
    workflow: Path,
    base_url: str | None,
    as_json: bool,
    tenant: str,
    inputs: dict[str, Any],
    junit: Path | None,
    *,
    learn: bool = True,
) -> None:
    if names_a_file(workflow):
        _workflow_or_exit(workflow)  # before the database: a file's mistakes need none
    if junit is not None:
        _check_writable(junit)
    with _interruptible(), runtime_or_exit(quiet=True) as runtime:
        request = chosen_workflow(runtime, workflow, tenant).request(base_url, inputs)
        if not learn:
            request = replace(request, config={**request.config, "learn": False})
        ran = _run_request(runtime, request, as_json, tenant)
        if junit is not None:
            _write_report(runtime, ran, junit)
    raise typer.Exit(code=ran.exit_code)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C or SIGTERM before the session exists: nothing ran, and the command ends as an
    interrupted run does (once it exists, `run_with_progress` hands it back and says so)."""
    try:
        yield
    except INTERRUPTIONS:
        raise typer.Exit(code=ExitCode.INTERRUPTED) from None


def _workflow_or_exit(path: Path) -> WorkflowFile:
    try:
        return load_workflow(path)
    except DomainError as error:
        raise fail(error.to_standard_error()) from None


def _check_writable(report: Path) -> None:
    """Refuse, before anything runs, a report path the run could not write at its end."""
    folder = report.parent
    problem = None
    if not folder.is_dir():
        problem = f"{folder} is not a directory"
    elif report.is_dir():
        problem = f"{report} is a directory"
    elif not os.access(report if report.exists() else folder, os.W_OK):
        problem = f"{report if report.exists() else folder} is not writable by this user"
    if problem is not None:
        raise fail(
            StandardError.of(
                "VALIDATION_FAILED",
                f"cannot write the JUnit report to {report}: {problem}",
                suggested_action="Give --junit a file in a directory that exists and that "
                "this user can write",
                details={"field": "--junit"},
            )
        )


def _write_report(runtime: Runtime, ran: Run, report: Path) -> None:
    """The session's JUnit report, from its events up to where the run left it."""
    events = runtime.app.history(ran.session.id, limit=ran.session.version)
    try:
        write_junit(report, events)
    except OSError as error:
        errors.print(f"[red]the JUnit report was not written to {report}: {error.strerror}[/]")
        return
    errors.print(f"[dim]JUnit report: {report}[/]", highlight=False)


def check(
    workflow: Path, base_url: str | None, as_json: bool, tenant: str, inputs: dict[str, Any]
) -> None:
    if names_a_file(workflow):
        _workflow_or_exit(workflow)  # before the database: a file's mistakes need none
    with runtime_or_exit(quiet=True) as runtime:
        chosen = chosen_workflow(runtime, workflow, tenant)
        try:
            request = chosen.request(base_url, inputs)
            refused = []
        except InvalidInput as error:  # reported with the rest; its steps checked as written
            request = chosen.as_written(base_url)
            refused = [f"{error.code}: {error.message}"]
        report = check_workflow(runtime.loop, request, tenant)
        report = replace(report, problems=[*refused, *report.problems])
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        print_check(report)
    raise typer.Exit(code=ExitCode.COMPLETED if report.ok else ExitCode.BAD_INPUT)


def demo(workflow: Path, as_json: bool, tenant: str) -> None:
    os.environ.setdefault("STEPLINE_SECRET_DEMO_PASSWORD", "correct-horse")
    target = load_example_target()
    with (
        _interruptible(),
        runtime_or_exit(quiet=True) as runtime,
        target.serving(password=os.environ["STEPLINE_SECRET_DEMO_PASSWORD"]) as base_url,
    ):
        where = "embedded PostgreSQL" if runtime.embedded else "PostgreSQL"
        errors.print(f"[dim]event store: {where}; example app: {base_url}[/]")
        ran = _run_file(runtime, workflow, base_url, as_json=False, tenant=tenant)
        _print_history(runtime.app, ran.session.id, as_json)
        _print_progress(runtime, ran.session.id)
    raise typer.Exit(code=ran.exit_code)


def _source(runtime: Runtime, given: str, tenant: str) -> WorkflowSession:
    """The tenant's session named by its id or the start of it; another tenant's is not found."""
    session_id = resolved(DatabaseSessions(runtime, tenant, actor=cli_actor()), given)
    source = runtime.app.get_session(session_id)
    if source.tenant != tenant:
        raise SessionNotFound(f"no session {session_id}", session_id=str(session_id))
    return source


def replay(given: str, strict: bool, base_url: str | None, as_json: bool, tenant: str) -> None:
    with _interruptible(), runtime_or_exit(quiet=True) as runtime:
        source = _source(runtime, given, tenant)
        request = replay_request(source, strict=strict, base_url=base_url)
        ran = _run_request(runtime, request, as_json, tenant)
        if not as_json:
            _print_replay(runtime.app, ran.session)
    raise typer.Exit(code=ran.exit_code)


def _print_replay(app: Stepline, session: WorkflowSession) -> None:
    history = app.history(session.id)
    replayed = [e for e in history if isinstance(e, WorkflowSession.StepReplayed)]
    diverged = [e for e in history if isinstance(e, WorkflowSession.ReplayDiverged)]
    turns = sum(e.turns_saved for e in replayed)
    errors.print(
        f"replay {session.id}: {len(replayed)} steps replayed without the model "
        f"({turns} model turns saved), {session.tokens_used} tokens used"
    )
    for event in diverged:
        errors.print(
            f"[yellow]diverged[/] in step {event.step_index} at {event.executor}.{event.name}: "
            f"expected {event.expected}, got {event.got}"
        )


def fork(given: str, from_step: int, workflow: Path | None, as_json: bool, tenant: str) -> None:
    with _interruptible(), runtime_or_exit(quiet=True) as runtime:
        source = _source(runtime, given, tenant)
        steps = None
        if workflow is not None:
            steps = _fork_steps(runtime, source, workflow, tenant)[from_step:]
        request = fork_request(
            source, runtime.app.history(source.id), from_step=from_step, steps=steps
        )
        gone = runtime.executor_states.gone_for_fork(source.id, from_step)
        if gone is not None:
            errors.print(f"[yellow]{gone}[/]", highlight=False, soft_wrap=True)
        ran = _run_request(runtime, request, as_json, tenant)
    raise typer.Exit(code=ran.exit_code)


def _fork_steps(
    runtime: Runtime, source: WorkflowSession, workflow: Path, tenant: str
) -> list[StepSpec]:
    """The file's steps, its templates expanded with the source's input values (they are
    written into the new steps too)."""
    spec = load_workflow(workflow)
    templates = FileTemplates(workflow.parent, RegisteredTemplates(runtime.app, tenant))
    values = source.config.get("inputs") or {}
    return expanded(spec.steps, templates, values, Root(workflow.name, file_key(workflow)))


def history(given: str, as_json: bool, tenant: str) -> None:
    with runtime_or_exit() as runtime:
        _print_history(runtime.app, _source(runtime, given, tenant).id, as_json)


def serve(
    host: str,
    port: int,
    workers: int | None,
    worker_processes: int | None,
    metrics_at: tuple[str, int] | None = None,
) -> None:
    settings = load_settings()
    if worker_processes is None:
        worker_processes = settings.worker_processes
    try:
        check_binding(settings, host)
    except UnsafeBinding as error:
        raise fail(StandardError.of("CONFIGURATION_INVALID", str(error))) from None
    try:
        app = create_app(settings, workers=workers, worker_processes=worker_processes)
        serve_app(app, settings, host, port, metrics_at, announce=_print_addresses)
    except (PersistenceError, DatabaseUnavailable) as error:
        raise fail(StandardError.of("DATABASE_UNAVAILABLE", str(error))) from None


def _print_addresses(base_url: str) -> None:
    console.print(
        f"Stepline is serving on {base_url}\n"
        f"  dashboard  {base_url}/ui\n"
        f"  API docs   {base_url}/docs",
        highlight=False,
        soft_wrap=True,
    )


def worker(concurrency: int | None) -> None:
    with runtime_or_exit() as runtime:
        run_worker(runtime, concurrency or runtime.settings.max_concurrent_sessions)


def workers_list(as_json: bool) -> None:
    with runtime_or_exit() as runtime:
        live = runtime.leases.live_workers()
        held = runtime.leases.held()
    if as_json:
        rows = [
            {
                **asdict(w),
                "sessions": [asdict(lease) for lease in held if lease.owner == w.worker_id],
            }
            for w in live
        ]
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="Workers")
    table.add_column("worker", overflow="fold")
    for column in ("role", "slots", "sessions", "oldest lease", "last seen", "takeovers"):
        table.add_column(column)
    for w in live:
        mine = [lease for lease in held if lease.owner == w.worker_id]
        oldest = f"{max(lease.age_s for lease in mine):.1f} s" if mine else "-"
        table.add_row(
            w.worker_id,
            w.role,
            str(w.concurrency),
            str(w.sessions),
            oldest,
            w.seen_at.strftime("%H:%M:%S"),
            str(w.takeovers),
        )
    console.print(table)


def keys_new(name: str, tenant: str) -> None:
    key, sha256 = new_key()
    console.print(f"key (give it to the client; it is not stored): {key}", soft_wrap=True)
    entry = json.dumps({name: {"tenant": tenant, "sha256": sha256}})
    console.print(f"STEPLINE_API_KEYS entry: {entry}", soft_wrap=True)


def projections_status() -> None:
    with runtime_or_exit() as runtime:
        table = Table(title="Projections")
        for column in ("view", "position", "log head", "lag"):
            table.add_column(column, justify="right" if column != "view" else "left")
        for view in runtime.projector.status():
            table.add_row(view.name, str(view.position), str(view.head), str(view.lag))
        console.print(table)
        with runtime.projector.pool.connection() as conn:
            leader = current_leader(conn)
        if leader is None:
            console.print("leader: none (no serve, worker or run is up: reads catch up themselves)")
        else:
            console.print(f"leader: {leader.holder}, since {leader.since:%Y-%m-%d %H:%M:%S %Z}")


def projections_rebuild(names: list[str] | None) -> None:
    with runtime_or_exit() as runtime:
        projector = runtime.projector
        try:
            selected = projector.select(names)
        except UnknownView as error:
            advice = "Name views that `stepline projections status` lists"
            raise fail(
                StandardError.of("VALIDATION_FAILED", str(error), suggested_action=advice)
            ) from None
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
