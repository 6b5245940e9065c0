"""What `stepline sessions` does: list, show, follow and control sessions, from the database
or through a server (`api.session_sources`), printed as tables or as JSON."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from uuid import UUID

import typer
from pydantic_core import to_json
from rich.live import Live
from rich.table import Table

from api.cli_support import cli_actor, console, errors, fail, runtime_or_exit
from api.event_views import EventView
from api.reads import BadCursor, decode_cursor
from api.schemas import SessionPage, SessionSummary, SessionView, StepView
from api.session_sources import (
    ApiSessions,
    Command,
    DatabaseSessions,
    Query,
    ServerProblem,
    SessionSource,
)
from domain.dev_mode import DEV_TENANT
from domain.errors import StandardError
from domain.session import SessionStatus

LIVE_STATUSES = ("running", "pending", "paused")
STATUSES = tuple(status.value for status in SessionStatus)


@contextmanager
def opened(api_url: str | None, key: str | None, tenant: str | None) -> Iterator[SessionSource]:
    """The server at `api_url` with `key`, or else the database as `tenant`; a problem either
    way ends the command with its code, message and advice (exit code 2)."""
    if api_url:
        if tenant is not None:
            raise bad_option(
                "--tenant", "cannot be used with --api: the key decides the tenant", "Drop --tenant"
            )
        server = ApiSessions(api_url, key)
        try:
            yield server
        except ServerProblem as problem:
            raise fail(problem.error) from None
        finally:
            server.close()
        return
    with runtime_or_exit(quiet=True) as runtime:
        yield DatabaseSessions(runtime, tenant or DEV_TENANT, actor=cli_actor())


def query_of(status: str | None, labels: list[str] | None, limit: int, cursor: str | None) -> Query:
    if status is not None and status not in STATUSES:
        raise bad_option("--status", f"{status!r} is not one of {', '.join(STATUSES)}")
    wanted = {}
    for item in labels or []:
        name, separator, value = item.partition("=")
        if not separator or not name:
            raise bad_option("--label", f"{item!r} is not key=value")
        wanted[name] = value
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except BadCursor as error:
            raise bad_option("--cursor", str(error), "Pass the cursor a list printed") from None
    return Query(status=status, labels=wanted, limit=limit, cursor=cursor)


def bad_option(option: str, problem: str, advice: str | None = None) -> typer.Exit:
    error = StandardError.of("VALIDATION_FAILED", f"{option} {problem}")
    return fail(replace(error, suggested_action=advice or f"Fix {option} (see --help)"))


# ---- printing -----------------------------------------------------------------------------


def emit_json(value: object, indent: int | None = 2) -> None:
    """Plain JSON on stdout (no colours, no wrapping), for scripts."""
    sys.stdout.write(to_json(value, indent=indent).decode() + "\n")
    sys.stdout.flush()


def _clock(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _took(started: datetime | None, finished: datetime | None) -> str:
    if started is None:
        return "-"
    end = finished or datetime.now(started.tzinfo)
    seconds = (end - started).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _bar(percent: float, width: int = 12) -> str:
    filled = round(width * percent / 100)
    return "█" * filled + "░" * (width - filled) + f" {percent:.0f}%"


def sessions_table(items: list[SessionSummary], title: str) -> Table:
    table = Table(title=title)
    table.add_column("session", no_wrap=True, min_width=36)
    table.add_column("name", overflow="fold")
    table.add_column("status")
    table.add_column("progress", no_wrap=True)
    for column in ("labels", "started", "took"):
        table.add_column(column, overflow="fold")
    for s in items:
        table.add_row(
            str(s.session_id),
            s.name,
            s.status,
            f"{_bar(s.percent)} {s.completed_steps}/{s.step_count}",
            " ".join(f"{k}={v}" for k, v in s.labels.items()),
            _clock(s.started_at),
            _took(s.started_at, s.finished_at),
        )
    return table


def print_page(page: SessionPage) -> None:
    console.print(sessions_table(page.items, "Sessions, newest first"))
    if page.next_cursor:
        errors.print(f"[dim]more: --cursor {page.next_cursor}[/]")


def print_session(session: SessionView, steps: list[StepView]) -> None:
    console.print(f"[bold]{session.name}[/]  {session.session_id}")
    console.print(
        f"{session.status}  {_bar(session.percent)}  {session.completed_steps}/"
        f"{session.total_steps} steps  started {_clock(session.started_at)}  "
        f"took {_took(session.started_at, session.finished_at)}"
    )
    table = Table(title="Steps")
    for column in ("#", "step", "status", "attempts", "ms", "summary or error"):
        table.add_column(column, overflow="fold")
    for step in steps:
        outcome = f"{step.error_code}: {step.error_message}" if step.error_code else step.summary
        table.add_row(
            str(step.step_index),
            step.text,
            step.status,
            str(step.attempts),
            "-" if step.duration_ms is None else str(step.duration_ms),
            outcome or "",
        )
    console.print(table)


def print_event(view: EventView) -> None:
    at = view.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3]
    console.print(
        f"v{view.version:<4} {at}  {view.type:<16} {view.actor or '':<10} {view.description}",
        highlight=False,
        soft_wrap=True,
    )


# ---- the commands -------------------------------------------------------------------------


def list_sessions(source: SessionSource, query: Query, as_json: bool) -> None:
    page = source.page(query)
    if as_json:
        emit_json(page)
    else:
        print_page(page)


def show(source: SessionSource, session_id: UUID, as_json: bool) -> None:
    session, steps = source.session(session_id), source.steps(session_id)
    if as_json:
        emit_json({"session": session, "steps": steps})
    else:
        print_session(session, steps)


def events(source: SessionSource, session_id: UUID, follow: bool, as_json: bool) -> None:
    """Each event on a line (JSON Lines with --json); with `follow`, until the session ends."""
    stream = source.follow(session_id) if follow else source.events(session_id)
    for view in stream:
        if as_json:
            emit_json(view, indent=None)
        else:
            print_event(view)


def command(
    source: SessionSource, session_id: UUID, verb: Command, reason: str, as_json: bool
) -> None:
    accepted = source.command(session_id, verb, reason)
    if as_json:
        emit_json(accepted)
    else:
        console.print(f"{accepted.session_id}: {accepted.status} (version {accepted.version})")


def _live_sessions(source: SessionSource) -> list[SessionSummary]:
    found = [
        item
        for status in LIVE_STATUSES
        for item in source.page(Query(status=status, limit=100)).items
    ]
    return sorted(found, key=lambda s: s.created_at, reverse=True)


def watch(source: SessionSource, interval_s: float) -> None:
    """A table of the sessions not yet ended, redrawn every `interval_s` until Ctrl-C."""

    def table() -> Table:
        title = f"Sessions not yet ended · {datetime.now().strftime('%H:%M:%S')} · Ctrl-C stops"
        return sessions_table(_live_sessions(source), title)

    try:
        with Live(table(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                live.update(table(), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(code=0) from None
