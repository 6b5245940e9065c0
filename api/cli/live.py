"""Running a workflow file from the terminal: live progress per step, then the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from api.cli.signals import EndedBySignal
from api.cli.support import ExitCode, cli_actor
from domain.session import SessionStatus, StepStatus, WorkflowSession
from engine.bootstrap import Runtime
from engine.logs import LOGGER_NAME
from engine.store.app import SessionRequest
from engine.workflows.admission import admitted
from engine.workflows.file import WorkflowFile
from engine.workflows.templates import (
    Root,
    TemplateSource,
    expanded,
    file_key,
    unknown_values,
)

ICONS = {
    StepStatus.PENDING: "[dim]·[/]",
    StepStatus.RUNNING: "[yellow]▶[/]",
    StepStatus.COMPLETED: "[green]✓[/]",
    StepStatus.FAILED: "[red]✗[/]",
    StepStatus.SKIPPED: "[dim]↷[/]",
}
INTERRUPTIONS = (KeyboardInterrupt, EndedBySignal)
"""Ctrl-C, SIGTERM and SIGHUP (see `api.cli.signals`): the run stops, the session goes on."""


@dataclass(frozen=True)
class Run:
    """How a run ended: its session as the run left it, and whether it was interrupted."""

    session: WorkflowSession
    interrupted: bool = False

    @property
    def handed_back(self) -> bool:
        """Interrupted with the session still to be driven: a worker carries on with it."""
        return self.interrupted and self.session.status.is_runnable

    @property
    def exit_code(self) -> ExitCode:
        if self.session.status is SessionStatus.COMPLETED:
            return ExitCode.COMPLETED
        if self.handed_back:
            return ExitCode.INTERRUPTED
        return ExitCode.NOT_COMPLETED


def as_written(
    spec: WorkflowFile,
    location: Path | None,
    templates: TemplateSource,
    values: Mapping[str, Any] | None = None,
    base_url: str | None = None,
) -> SessionRequest:
    """The file's session with its `{{inputs.NAME}}` as written, its templates expanded with
    the run's input `values` (not given: not known yet, see `engine.workflows.templates`)."""
    given = spec.session_config(location)
    if base_url is not None:
        given["base_url"] = base_url
    root = Root(spec.name) if location is None else Root(location.name, file_key(location))
    known = unknown_values(spec.inputs) if values is None else values
    return SessionRequest(
        name=spec.name,
        steps=expanded(spec.steps, templates, known, root),
        config=given,
        labels=spec.labels,
    )


def _describe(step_index: int, session: WorkflowSession) -> str:
    step = session.steps[step_index]
    note = ""
    if step.status is StepStatus.FAILED and step.error:  # its message: see `print_outcome`
        note = f" [red]{step.error.get('code')}[/]"
    elif step.attempts > 1:
        note = f" [dim](attempt {step.attempts})[/]"
    return f"{ICONS[step.status]} {step_index}. {step.text}{note}"


def run_with_progress(
    runtime: Runtime, request: SessionRequest, console: Console, tenant: str
) -> Run:
    """Create the session (if admitted: see `engine.workflows.admission`) and drive it here,
    under its lease, while showing each step's state. Ctrl-C (or SIGTERM) stops it at the next
    safe point and hands the lease back: a worker carries on."""
    request = admitted(runtime.loop, request, tenant)  # before anything is recorded or sent
    worker = runtime.worker(concurrency=1, role="run")
    worker.start(claiming=False)
    session: WorkflowSession | None = None
    try:
        # From before the session exists: its first step may fail before the display starts.
        with _shown_live():
            session, future = worker.create(request, tenant=tenant, actor=cli_actor(), here=True)
            console.print(f"session [bold]{session.id}[/]: {session.name}")
            assert future is not None  # a worker just started has a free slot
            return Run(_show_until_done(runtime, session, future, console))
    except INTERRUPTIONS:
        if session is None:
            raise
        console.print("[yellow]stopping at the next safe point; a worker can carry on[/]")
        stopped = session.id
    finally:
        worker.stop(wait=True)
    return Run(runtime.app.get_session(stopped), interrupted=True)


def _show_until_done(
    runtime: Runtime,
    session: WorkflowSession,
    future: Future[SessionStatus | None],
    console: Console,
) -> WorkflowSession:
    session_id = session.id
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks = [
            progress.add_task(_describe(i, session), total=1, start=False)
            for i in range(len(session.steps))
        ]
        while not future.done():
            session = runtime.app.get_session(session_id)
            _show(progress, tasks, session)
            time.sleep(0.1)
        session = runtime.app.get_session(session_id)
        _show(progress, tasks, session)
    future.result()
    return session


def _show(progress: Progress, tasks: list[TaskID], session: WorkflowSession) -> None:
    """Each step on its line; a loop that came up has put its iterations' steps after it,
    so there are more lines, each showing the step now at its index."""
    for index in range(len(tasks), len(session.steps)):
        tasks.append(progress.add_task(_describe(index, session), total=1, start=False))
    for index, task in enumerate(tasks):
        status = session.steps[index].status
        if status is not StepStatus.PENDING:
            progress.start_task(task)
        done = 0 if status in (StepStatus.PENDING, StepStatus.RUNNING) else 1
        progress.update(task, description=_describe(index, session), completed=done)


@contextmanager
def _shown_live() -> Iterator[None]:
    """While the display shows the session, its own log lines would say each failure again:
    they are left out (this process drives no other session), unless log lines were asked for
    (STEPLINE_LOG_LEVEL=INFO or DEBUG)."""
    logger = logging.getLogger(LOGGER_NAME)
    if logger.getEffectiveLevel() < logging.WARNING:
        yield
        return

    def not_about_a_session(record: logging.LogRecord) -> bool:
        return getattr(record, "session_id", None) is None

    logger.addFilter(not_about_a_session)
    try:
        yield
    finally:
        logger.removeFilter(not_about_a_session)


def print_outcome(ran: Run, console: Console) -> None:
    """How the session ended; a failure's code, message and what to do, said once."""
    session = ran.session
    colour = "green" if succeeded(session) else "red"
    error = session.error
    wait = session.waiting
    if ran.handed_back:
        console.print(
            f"[yellow]interrupted[/]: the session was handed back {session.status.value}; a "
            "worker (`stepline serve` or `stepline worker`) carries on with it"
        )
        return
    if session.status is SessionStatus.WAITING and wait is not None:
        until = f" until {wait.due_at:%Y-%m-%d %H:%M:%S}Z" if wait.due_at else ""
        console.print(
            f"[yellow]waiting[/] for {escape(wait.describe())}{until}: a worker (`stepline "
            f"serve` or `stepline worker`) carries on once it is answered or due"
        )
        return
    if error is None:
        console.print(f"[{colour}]{session.status.value}[/]: {escape(session.outcome or '')}")
        return
    message = escape(f"{error.get('code')}: {error.get('message')}")
    console.print(f"[{colour}]{session.status.value}[/]: {message}")
    if error.get("suggested_action"):
        console.print(f"[dim]{escape(error['suggested_action'])}[/]")


def final_report(session: WorkflowSession) -> dict[str, Any]:
    return {
        "session_id": str(session.id),
        "name": session.name,
        "status": session.status.value,
        "outcome": session.outcome,
        "error": session.error,
        "tokens_used": session.tokens_used,
        "waiting_for": session.waiting.describe() if session.waiting else None,
        "steps": [
            {
                "index": index,
                "text": step.text,
                "status": step.status.value,
                "attempts": step.attempts,
                "summary": step.summary,
                "error": step.error,
            }
            for index, step in enumerate(session.steps)
        ],
    }


def succeeded(session: WorkflowSession) -> bool:
    return session.status is SessionStatus.COMPLETED
