"""What `stepline sessions` does: list, show, follow and control sessions, from the database
or through a server (`api.cli.session_sources`), printed as tables or as JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import typer
from pydantic_core import to_json
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from api.cli.session_sources import (
    ApiSessions,
    Command,
    DatabaseSessions,
    Decision,
    Query,
    ServerProblem,
    SessionSource,
)
from api.cli.support import cli_actor, console, errors, fail, runtime_or_exit
from api.http.event_views import EventView
from api.http.reads import BadCursor, decode_cursor
from api.http.schemas import SessionPage, SessionSummary, SessionView, StepView
from api.http.session_report import report_filename
from domain.dev_mode import DEV_TENANT
from domain.errors import DomainError, SessionNotFound, StandardError
from domain.session import ENDED, SessionStatus
from domain.step_policy import StepPolicy
from engine.bootstrap import Runtime
from projections.session_index import MIN_ID_PREFIX, id_range

LIVE_STATUSES = tuple(status.value for status in SessionStatus if status not in ENDED)
STATUSES = tuple(status.value for status in SessionStatus)
SHORT_ID = 8
"""Characters of an id the tables print: enough to tell a tenant's sessions apart, and a
prefix every command takes."""
CANDIDATES_SHOWN = 10


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


Source = TypeVar("Source")


@contextmanager
def opened_either(
    api_url: str | None,
    key: str | None,
    tenant: str | None,
    server: Callable[[str, str | None], Source],
    database: Callable[[Runtime, str, str], Source],
) -> Iterator[Source]:
    """`server(api_url, key)`, or else `database(runtime, tenant, actor)`; a problem either
    way ends the command with its code, message and advice (exit code 2)."""
    if api_url:
        if tenant is not None:
            raise bad_option(
                "--tenant", "cannot be used with --api: the key decides the tenant", "Drop --tenant"
            )
        try:
            yield server(api_url, key)
        except ServerProblem as problem:
            raise fail(problem.error) from None
        return
    with runtime_or_exit(quiet=True) as runtime:
        try:
            yield database(runtime, tenant or DEV_TENANT, cli_actor())
        except DomainError as error:
            raise fail(error.to_standard_error()) from None


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


# ---- which session ------------------------------------------------------------------------


def resolved(source: SessionSource, given: str) -> UUID:
    """The session `given` names: its full id, or the start of it (as the tables print it)
    if no other session of the tenant's starts the same way."""
    try:
        return UUID(given)
    except ValueError:
        pass
    try:
        id_range(given)
    except ValueError as error:
        raise bad_option(
            "SESSION_ID",
            str(error),
            f"Give the session's id, or at least {MIN_ID_PREFIX} of its first characters "
            "as `stepline sessions list` prints them",
        ) from None
    found = source.page(Query(id_prefix=given, limit=CANDIDATES_SHOWN + 1)).items
    if not found:
        missing = SessionNotFound(f"no session's id starts with {given!r}", session_id=given)
        raise fail(missing.to_standard_error())
    if len(found) > 1:
        raise fail(ambiguous(given, found))
    return found[0].session_id


def ambiguous(prefix: str, candidates: list[SessionSummary]) -> StandardError:
    """SESSION_ID_AMBIGUOUS, listing the sessions whose ids start with `prefix`."""
    shown = candidates[:CANDIDATES_SHOWN]
    lines = [f"  {s.session_id}  {s.status:<9}  {_clock(s.created_at)}  {s.name}" for s in shown]
    if len(candidates) > CANDIDATES_SHOWN:
        lines.append("  … and more")
    return StandardError.of(
        "SESSION_ID_AMBIGUOUS",
        f"{prefix!r} is the start of more than one session's id:\n" + "\n".join(lines),
        {"prefix": prefix, "candidates": [str(s.session_id) for s in shown]},
    )


# ---- printing -----------------------------------------------------------------------------


def emit_json(value: object, indent: int | None = 2) -> None:
    """Plain JSON on stdout (no colours, no wrapping), for scripts."""
    sys.stdout.write(to_json(value, indent=indent).decode() + "\n")
    sys.stdout.flush()


def _clock(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _since(at: datetime | None) -> str:
    """When, as short as it can be said: the time today, the date and time before."""
    if at is None:
        return "-"
    local = at.astimezone()
    same_day = local.date() == datetime.now(local.tzinfo).date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")


def _took(started: datetime | None, finished: datetime | None) -> str:
    if started is None:
        return "-"
    end = finished or datetime.now(started.tzinfo)
    seconds = (end - started).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _bar(percent: float, width: int = 12) -> str:
    filled = round(width * percent / 100)
    return "█" * filled + "░" * (width - filled) + f" {percent:.0f}%"


def _gone_past(session: SessionSummary) -> str:
    """The steps that failed in a session that did not fail with them: those it went on past
    (on_failure: continue), or one failing now that may be tried again. (A failed session's
    failure has a column of its own.)"""
    if not session.failed_steps or session.status == SessionStatus.FAILED.value:
        return ""
    return f", {session.failed_steps} failed"


def _why(error_code: str | None, error_message: str | None) -> str:
    return f"{error_code}: {error_message}" if error_code else ""


def sessions_table(items: list[SessionSummary], title: str) -> Table:
    """One row a session. Status and progress never wrap; the name, labels, times and the
    reason a session failed wrap or fold to fit the terminal."""
    table = Table(title=title)
    table.add_column("id", no_wrap=True, min_width=SHORT_ID)
    table.add_column("name", overflow="fold")
    table.add_column("status", no_wrap=True, min_width=len("completed"))
    table.add_column("progress", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", no_wrap=True)
    table.add_column("labels", overflow="fold")
    failures = any(s.error_code for s in items)
    if failures:
        table.add_column("why it failed", overflow="fold")
    for s in items:
        row: list[str | Text] = [
            str(s.session_id)[:SHORT_ID],
            Text(s.name),  # as written: a name or a label may hold [brackets]
            s.status,
            f"{s.completed_steps}/{s.step_count} {s.percent:.0f}%" + _gone_past(s),
            _since(s.started_at),
            _took(s.started_at, s.finished_at),
            Text(" ".join(f"{k}={v}" for k, v in s.labels.items())),
        ]
        why = Text(f"{s.error_code}:\n{s.error_message}" if s.error_code else "")
        table.add_row(*row, *([why] if failures else []))
    return table


def print_page(page: SessionPage) -> None:
    console.print(sessions_table(page.items, "Sessions, newest first"))
    if page.next_cursor:
        errors.print(f"[dim]more: --cursor {page.next_cursor}[/]")


def what_it_did(step: StepView) -> str:
    """Each command and check of the step's latest attempt; the model's summary of a step it
    drove (or of one a fork carried over from its source); the error of a step that failed."""
    lines = list(step.did)
    if step.summary and (step.turns or not step.did):
        lines.append(step.summary)
    if step.error_code:
        lines.append(_why(step.error_code, step.error_message))
    return "\n".join(lines)


def _step_text(step: StepView) -> Text:
    """The step as written, and under it its condition, the loop iteration it came from and
    its own policy, if it has them."""
    text = Text(step.text)
    origin = step.origin or {}
    if step.condition:
        text.append(f"\nif {step.condition}", style="dim")
    if "template" in origin:
        text.append(f"\nfrom template {origin['template']}", style="dim")
    if "loop" in origin:
        text.append(f"\n{origin['loop']}: {origin['iteration'] + 1} of {origin['of']}", style="dim")
    policy = StepPolicy.from_dict(step.policy).described()
    if policy:
        text.append(f"\n{policy}", style="dim")
    return text


def print_session(session: SessionView, steps: list[StepView]) -> None:
    console.print(f"[bold]{escape(session.name)}[/]  {session.session_id}", highlight=False)
    continued = (
        f", {session.continued_steps} failed and went on past" if session.continued_steps else ""
    )
    skipped = f", {session.skipped_steps} skipped" if session.skipped_steps else ""
    total = f"{session.total_steps}{'+' if session.steps_may_grow else ''}"  # loops ahead
    console.print(
        f"{session.status}  {_bar(session.percent)}  {session.completed_steps}/"
        f"{total} steps{continued}{skipped}  started {_clock(session.started_at)}  "
        f"took {_took(session.started_at, session.finished_at)}"
    )
    if session.waiting_for:
        until = f" until {_clock(session.due_at)}" if session.due_at else ""
        console.print(f"waiting for {session.waiting_for}{until}", markup=False)
    if session.error_code:
        console.print(
            f"[red]{session.status} because "
            f"{escape(_why(session.error_code, session.error_message))}[/]",
            highlight=False,
        )
    table = Table(title="Steps")
    for column in ("#", "step", "status", "attempts", "ms", "what it did"):
        table.add_column(column, overflow="fold", no_wrap=column == "status")
    for step in steps:
        table.add_row(
            str(step.step_index),
            _step_text(step),
            f"{step.status}, continued" if step.continued else step.status,
            str(step.attempts),
            "-" if step.duration_ms is None else str(step.duration_ms),
            Text(what_it_did(step)),
        )
    console.print(table)


def print_event(view: EventView) -> None:
    at = view.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3]
    console.print(
        f"v{view.version:<4} {at}  {view.type:<16} {view.actor or '':<10} {view.description}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# ---- the commands -------------------------------------------------------------------------


def list_sessions(source: SessionSource, query: Query, as_json: bool) -> None:
    page = source.page(query)
    if as_json:
        emit_json(page)
    else:
        print_page(page)


def show(source: SessionSource, given: str, as_json: bool) -> None:
    session_id = resolved(source, given)
    session, steps = source.session(session_id), source.steps(session_id)
    if as_json:
        emit_json({"session": session, "steps": steps})
    else:
        print_session(session, steps)


def events(source: SessionSource, given: str, follow: bool, as_json: bool) -> None:
    """Each event on a line (JSON Lines with --json); with `follow`, until the session ends."""
    session_id = resolved(source, given)
    stream = source.follow(session_id) if follow else source.events(session_id)
    for view in stream:
        if as_json:
            emit_json(view, indent=None)
        else:
            print_event(view)


def report(source: SessionSource, given: str, output: str | None) -> None:
    """Write the session's report to `output` (`-`: stdout; none: `stepline-<id8>.html`
    here), saying where."""
    session_id = resolved(source, given)
    html = source.report(session_id)
    if output == "-":
        sys.stdout.write(html)
        sys.stdout.flush()
        return
    path = Path(output or report_filename(session_id))
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as error:
        raise bad_option(
            "--output", f"{path}: {error.strerror}", "Give a file you can write"
        ) from None
    console.print(
        f"Wrote the report of session {session_id} to {path}", markup=False, highlight=False
    )


def command(source: SessionSource, given: str, verb: Command, reason: str, as_json: bool) -> None:
    accepted = source.command(resolved(source, given), verb, reason)
    if as_json:
        emit_json(accepted)
    else:
        console.print(f"{accepted.session_id}: {accepted.status} (version {accepted.version})")


def decide(
    source: SessionSource, given: str, decision: Decision, comment: str, as_json: bool
) -> None:
    accepted = source.decide(resolved(source, given), decision, comment)
    if as_json:
        emit_json(accepted)
    else:
        console.print(f"{accepted.session_id}: {accepted.status} (version {accepted.version})")


def json_option(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise bad_option(
            option, f"is not JSON: {error.msg}", f'Give JSON: {option} \'{{"ref": "PAY-1"}}\''
        ) from None


def signal(source: SessionSource, given: str, name: str, body: Any, as_json: bool) -> None:
    accepted = source.signal(resolved(source, given), name, body)
    if as_json:
        emit_json(accepted)
        return
    fate = "taken by the wait for it" if accepted.taken else "kept until a step waits for it"
    console.print(
        f"{accepted.session_id}: signal {accepted.name} {fate}; {accepted.status} "
        f"(version {accepted.version})",
        markup=False,
    )


def _live_sessions(source: SessionSource) -> list[SessionSummary]:
    found = [
        item
        for status in LIVE_STATUSES
        for item in source.page(Query(status=status, limit=100)).items
    ]
    return sorted(found, key=lambda s: s.created_at, reverse=True)


def watch(source: SessionSource, interval_s: float) -> None:
    """The sessions not yet ended, every `interval_s` until Ctrl-C: a table redrawn in place
    on a terminal; elsewhere (a pipe, a log) a line each time one starts, moves on or ends."""
    try:
        if console.is_terminal:
            _watch_table(source, interval_s)
        else:
            _watch_lines(source, interval_s)
    except KeyboardInterrupt:
        raise typer.Exit(code=0) from None


def _watch_table(source: SessionSource, interval_s: float) -> None:
    def table() -> Table:
        title = f"Sessions not yet ended · {datetime.now().strftime('%H:%M:%S')} · Ctrl-C stops"
        return sessions_table(_live_sessions(source), title)

    with Live(table(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval_s)
            live.update(table(), refresh=True)


def _watch_lines(source: SessionSource, interval_s: float) -> None:
    errors.print(f"[dim]sessions not yet ended, a line for each change, every {interval_s} s[/]")
    shown: dict[UUID, tuple[str, int]] = {}
    while True:
        live = {s.session_id: s for s in _live_sessions(source)}
        for session_id in shown.keys() - live.keys():
            ended = source.session(session_id)
            why = _why(ended.error_code, ended.error_message)
            steps = f"{ended.completed_steps}/{ended.total_steps}"
            _print_line(session_id, ended.name, ended.status, steps, why)
            del shown[session_id]
        for session_id, s in reversed(live.items()):  # the oldest first
            state = (s.status, s.completed_steps)
            if shown.get(session_id) != state:
                steps = f"{s.completed_steps}/{s.step_count}"
                _print_line(session_id, s.name, s.status, steps, "")
                shown[session_id] = state
        time.sleep(interval_s)


def _print_line(session_id: UUID, name: str, status: str, steps: str, why: str) -> None:
    at = datetime.now().strftime("%H:%M:%S")
    line = f"{at}  {str(session_id)[:SHORT_ID]}  {status:<9}  {steps:>7} steps  {name}"
    sys.stdout.write(f"{line}  {why}\n" if why else f"{line}\n")
    sys.stdout.flush()
