"""The `stepline` command line: what each command takes and says it does.

Only the declarations live here; `api.cli.commands` (the runtime, the web and model stacks)
is imported when a command runs, so `stepline --help` answers at once.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

import typer

from api.cli.audit import audit_cli, db_cli
from api.cli.examples import EXAMPLE
from api.cli.learned import learned_cli
from api.cli.options import ApiKey, ApiUrl, AsJson
from api.cli.schedules import schedules_cli
from api.cli.secrets import secrets_cli
from api.cli.signals import ended_in_order_by_signals
from api.cli.workflows import workflows_cli
from domain.dev_mode import DEV_TENANT

cli = typer.Typer(help="Stepline: event-sourced automation workflows.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
projections_cli = typer.Typer(help="Read models: status and rebuild.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")
sessions_cli = typer.Typer(
    help="List, inspect, follow and control sessions: from the database (as --tenant), or "
    "through a server with --api and --key.",
    no_args_is_help=True,
)
cli.add_typer(sessions_cli, name="sessions")
tenants_cli = typer.Typer(
    help="Tenant policies (the operator's): executors, shell programs, egress, limits. A "
    "workflow may only narrow its tenant's policy.",
    no_args_is_help=True,
)
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(secrets_cli, name="secrets")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(db_cli, name="db")
cli.add_typer(schedules_cli, name="schedules")
cli.add_typer(learned_cli, name="learned")
cli.add_typer(workflows_cli, name="workflows")

Tenant = Annotated[
    str,
    typer.Option(
        help="the tenant the session belongs to; the default is the one a dev-mode "
        "`stepline serve` shows, so what you run locally appears there",
    ),
]


# Beside --api and --key (api.cli.options), what every `stepline sessions` command takes.
SessionsTenant = Annotated[
    str | None,
    typer.Option(
        help=f"the tenant whose sessions to see (database only; default {DEV_TENANT}); "
        "through a server the key decides",
        show_default=False,
    ),
]
ID_HELP = "the session's id, or enough of its first characters (4 or more) to tell it apart"
SessionId = Annotated[str, typer.Argument(help=ID_HELP, show_default=False)]
ReasonOption = Annotated[str, typer.Option(help="why: recorded on the event, shown in the audit")]


@cli.command()
def run(
    workflow: Annotated[
        Path,
        typer.Argument(
            help="the workflow file (YAML); or, when no file has that path, NAME[@N]: a "
            "workflow the tenant registered (`stepline workflows`), its current version "
            "without @N"
        ),
    ],
    base_url: Annotated[str | None, typer.Option(help="override the file's base_url")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the final session (or the check) as JSON")
    ] = False,
    tenant: Tenant = DEV_TENANT,
    given: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="NAME=VALUE: a value for one of the workflow's inputs (repeat); JSON if it "
            "reads as JSON (3, true, [1, 2]), else text",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="only check it, creating no session: each step's definition, variables used "
            "before any step saves them, the tenant's secrets, the definitions module, the base "
            "URL. Exit code 0 only if all is well, else 2",
        ),
    ] = False,
    junit: Annotated[
        Path | None,
        typer.Option(
            help="write a JUnit XML report there when the run ends, whatever its outcome: one "
            "test case a step, for a CI system to read",
            dir_okay=False,
        ),
    ] = None,
    no_learn: Annotated[
        bool,
        typer.Option(
            "--no-learn",
            help="AI steps neither use nor teach learned actions (the action cache) in this "
            "run; the workflow's config.learn: false does so for every run",
        ),
    ] = False,
) -> None:
    """Run a workflow file to the end, showing each step live. Exit code 0: it completed; 1: it
    failed, was cancelled or expired (or stopped at a pause or a wait); 2: bad input, nothing
    was run (an invalid file, a missing secret); 3: interrupted (Ctrl-C, SIGTERM), the session
    handed back unfinished."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    inputs = cli_commands.input_values(given or [])
    if check:
        cli_commands.check(workflow, base_url, as_json, tenant, inputs)
    else:
        cli_commands.run(workflow, base_url, as_json, tenant, inputs, junit, learn=not no_learn)


@cli.command()
def demo(
    workflow: Annotated[Path, typer.Option(help="workflow file to run")] = EXAMPLE,
    as_json: Annotated[bool, typer.Option("--json", help="print the history as JSON")] = False,
    tenant: Tenant = DEV_TENANT,
) -> None:
    """Start the example web app, run the example workflow against it, print the history."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.demo(workflow, as_json, tenant)


@cli.command()
def replay(
    session_id: Annotated[str, typer.Argument(help=f"the session to replay: {ID_HELP}")],
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="fail a step whose result differs from the recorded one (REPLAY_DIVERGED) "
            "instead of carrying on live from there",
        ),
    ] = False,
    base_url: Annotated[str | None, typer.Option(help="replay against another target")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the final session as JSON")
    ] = False,
    tenant: Tenant = DEV_TENANT,
) -> None:
    """Run a recorded session again with no model call: each step issues the commands the
    source recorded and compares the results. Exit code 0 only if the replay completed."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.replay(session_id, strict, base_url, as_json, tenant)


@cli.command()
def fork(
    session_id: Annotated[str, typer.Argument(help=f"the session to fork: {ID_HELP}")],
    from_step: Annotated[
        int, typer.Option("--from-step", min=0, help="the first step to run (0-based)")
    ],
    workflow: Annotated[
        Path | None,
        typer.Option(help="a workflow file whose steps from --from-step on replace the source's"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the final session as JSON")
    ] = False,
    tenant: Tenant = DEV_TENANT,
) -> None:
    """Run a session again from one of its steps: the steps before it are taken as done, with
    their recorded results and saved variables. Exit code 0 only if the fork completed."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.fork(session_id, from_step, workflow, as_json, tenant)


@cli.command()
def history(
    session_id: SessionId,
    as_json: Annotated[bool, typer.Option("--json", help="print the history as JSON")] = False,
    tenant: Tenant = DEV_TENANT,
) -> None:
    """Print every event of a session, in order."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.history(session_id, as_json, tenant)


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
    worker_processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="processes those sessions are driven in, the slots shared out among them; "
            "0 = in this process (default: the setting)",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="also serve the full /health and /metrics, keyless, on this port (for the "
            "operator's scraper)",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="address the metrics port listens on")
    ] = "127.0.0.1",
) -> None:
    """Serve the HTTP API and the projections, and drive sessions in a worker process of its
    own (see --worker-processes)."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    metrics_at = None if metrics_port is None else (metrics_host, metrics_port)
    cli_commands.serve(host, port, workers, worker_processes, metrics_at)


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
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.worker(concurrency)


@cli.command("workers")
def workers_list(as_json: AsJson = False) -> None:
    """The live workers, the sessions each drives and the age of each lease."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.workers_list(as_json)


@tenants_cli.command("set")
def tenants_set(
    tenant: Annotated[str, typer.Argument(help="the tenant (as in STEPLINE_API_KEYS)")],
    executors: Annotated[
        str | None, typer.Option(help="comma list of http, browser, shell", show_default=False)
    ] = None,
    shell_allow: Annotated[
        str | None,
        typer.Option(help="programs its shell steps may run, e.g. git,jq ('' for none)"),
    ] = None,
    egress_allow: Annotated[
        str | None,
        typer.Option(
            help="hosts, *.domains, host:port, addresses or networks it may reach beyond the "
            "public internet; a list restricts it to those; '*' allows everything"
        ),
    ] = None,
    max_running: Annotated[int | None, typer.Option(min=1, help="sessions at once")] = None,
    max_streams: Annotated[int | None, typer.Option(min=1, help="live streams at once")] = None,
    requests_per_minute: Annotated[
        int | None, typer.Option(min=1, help="API requests a key may make a minute")
    ] = None,
    maximum: Annotated[
        list[str] | None,
        typer.Option(
            "--max", help="NAME=N: the most a workflow may set a limit to (repeat; NAME= unsets)"
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option(help="a field to take back to the operator's default (repeat)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Change a tenant's policy; recorded as an event with you as its actor."""
    from api.cli import tenants as cli_tenants  # noqa: PLC0415

    options = {
        "executors": executors,
        "shell_allow": shell_allow,
        "egress_allow": egress_allow,
        "max_running": max_running,
        "max_streams": max_streams,
        "requests_per_minute": requests_per_minute,
        "unset": unset,
    }
    try:
        changes = cli_tenants.changes_from_options(options, maximum or [])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    cli_tenants.set_policy(tenant, changes, as_json)


@tenants_cli.command("erase")
def tenants_erase(
    tenant: Annotated[str, typer.Argument(help="the tenant")],
    reason: Annotated[str, typer.Option(help="why, for the audit")],
) -> None:
    """Erase every session of the tenant and its stored secrets; tombstones and the audit of
    the erasure remain."""
    from api.cli import erase as cli_erase  # noqa: PLC0415

    cli_erase.erase_tenant(tenant, reason)


@tenants_cli.command("show")
def tenants_show(
    tenant: Annotated[str, typer.Argument(help="the tenant")], as_json: AsJson = False
) -> None:
    """A tenant's policy as enforced now (the operator's defaults where it sets nothing)."""
    from api.cli import tenants as cli_tenants  # noqa: PLC0415

    cli_tenants.show_policy(tenant, as_json)


@tenants_cli.command("list")
def tenants_list(as_json: AsJson = False) -> None:
    """Tenants with a policy of their own or an API key, and their policies."""
    from api.cli import tenants as cli_tenants  # noqa: PLC0415

    cli_tenants.list_policies(as_json)


@keys_cli.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="the key's name: the actor on its events")],
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")],
) -> None:
    """Make a new API key; prints the key once and the entry for STEPLINE_API_KEYS."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.keys_new(name, tenant)


@keys_cli.command("webhook-secret")
def keys_webhook_secret(
    tenant: Annotated[str, typer.Option(help="the tenant whose webhooks it signs")] = DEV_TENANT,
) -> None:
    """Make (or replace) the tenant's webhook signing secret and print it, once: give it to
    the receiver, which verifies every delivery with it (Standard Webhooks)."""
    from api.cli.support import runtime_or_exit  # noqa: PLC0415

    with runtime_or_exit(quiet=True) as runtime:
        secret = runtime.secret_store.new_webhook_secret(tenant)
    print(secret)  # the output is the secret alone, for a shell to capture


@projections_cli.command("status")
def projections_status() -> None:
    """Each view's position in the log and how far behind it is."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.projections_status()


@projections_cli.command("rebuild")
def projections_rebuild(
    names: Annotated[list[str] | None, typer.Argument(help="views to rebuild; all if none")] = None,
) -> None:
    """Empty views and replay the whole log into them, showing progress."""
    from api.cli import commands as cli_commands  # noqa: PLC0415

    cli_commands.projections_rebuild(names)


@sessions_cli.command("list")
def sessions_list(
    status: Annotated[
        str | None,
        typer.Option(
            help="pending, running, paused, waiting, completed, failed, cancelled or expired"
        ),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="key=value; repeat to require several")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="sessions per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="the next page, as the last one said")] = None,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """Sessions, newest first, with their progress."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    query = cli_sessions.query_of(status, label, limit, cursor)
    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.list_sessions(source, query, as_json)


@sessions_cli.command("show")
def sessions_show(
    session_id: SessionId,
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """A session's state and each step's status, attempts, time and outcome."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.show(source, session_id, as_json)


@sessions_cli.command("events")
def sessions_events(
    session_id: SessionId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events until it ends")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON Lines")] = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """A session's events in order, one a line; with --follow, live like `tail -f`."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.events(source, session_id, follow, as_json)


@sessions_cli.command("report")
def sessions_report(
    session_id: SessionId,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="the file to write; - for stdout (default: stepline-<first 8 of the id>.html "
            "here)",
            show_default=False,
        ),
    ] = None,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """A session as one self-contained HTML file (steps, outcomes, durations, screenshots
    inlined, the audit trail), to attach to a ticket or a CI run."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.report(source, session_id, output)


def _control_command(verb: Literal["pause", "resume", "cancel"], summary: str) -> None:
    """Declare `stepline sessions <verb> ID [--reason]`: one command each, the same options."""

    def control(
        session_id: SessionId,
        reason: ReasonOption = "",
        as_json: AsJson = False,
        api: ApiUrl = None,
        key: ApiKey = None,
        tenant: SessionsTenant = None,
    ) -> None:
        from api.cli import sessions as cli_sessions  # noqa: PLC0415

        with cli_sessions.opened(api, key, tenant) as source:
            cli_sessions.command(source, session_id, verb, reason, as_json)

    control.__doc__ = summary
    sessions_cli.command(verb)(control)


_control_command("pause", "Pause a session at its next safe point.")
_control_command("resume", "Resume a paused session; a worker with a free slot carries on with it.")
_control_command("cancel", "Cancel a session that has not ended.")

CommentOption = Annotated[
    str, typer.Option(help="what you say: recorded on the event; a rejection fails with it")
]


@sessions_cli.command("approve")
def sessions_approve(
    session_id: SessionId,
    comment: CommentOption = "",
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """Approve what a waiting session asks: it goes on with its next step."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.decide(source, session_id, "approve", comment, as_json)


@sessions_cli.command("reject")
def sessions_reject(
    session_id: SessionId,
    comment: CommentOption = "",
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """Reject what a waiting session asks: its step fails with APPROVAL_REJECTED."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.decide(source, session_id, "reject", comment, as_json)


@sessions_cli.command("signal")
def sessions_signal(
    session_id: SessionId,
    name: Annotated[str, typer.Argument(help='the signal, as a step waits for it: "paid"')],
    data: Annotated[str, typer.Option(help="its body, as JSON: saved as {{vars.<name>}}")] = "null",
    as_json: AsJson = False,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """Send a session a signal; one sent before a step waits for it is kept until then."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    body = cli_sessions.json_option("--data", data)
    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.signal(source, session_id, name, body, as_json)


@sessions_cli.command("erase")
def sessions_erase(
    session_id: Annotated[UUID, typer.Argument(help="the session's full id")],
    reason: Annotated[str, typer.Option(help="why, for the audit")],
) -> None:
    """Erase a session (cancelled first if under way): its data key is destroyed, its views
    keep a tombstone, the erasure is audited. Against the database."""
    from api.cli import erase as cli_erase  # noqa: PLC0415

    cli_erase.erase_session(session_id, reason)


@sessions_cli.command("watch")
def sessions_watch(
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between redraws")] = 1.0,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
) -> None:
    """A live table of the sessions not yet ended, until Ctrl-C; off a terminal (piped, in a
    log), a line for each session that starts, moves on or ends."""
    from api.cli import sessions as cli_sessions  # noqa: PLC0415

    with cli_sessions.opened(api, key, tenant) as source:
        cli_sessions.watch(source, interval)


@cli.command("analytics")
def analytics(
    workflow: Annotated[
        str | None, typer.Option(help="one workflow: its versions and steps, flaky first")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="the first day (UTC) of runs counted"),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="the last day (UTC) of runs counted"),
    ] = None,
    api: ApiUrl = None,
    key: ApiKey = None,
    tenant: SessionsTenant = None,
    as_json: AsJson = False,
) -> None:
    """How the tenant's workflows run, as GET /v1/analytics: runs, failures by error code,
    retries, p50/p95 duration, tokens and cost per workflow version (or, with --workflow, per
    step, flaky first), and by day."""
    from api.cli import analytics as cli_analytics  # noqa: PLC0415

    with cli_analytics.opened(api, key, tenant) as source:
        cli_analytics.show(
            source,
            workflow,
            since.date() if since else None,
            until.date() if until else None,
            as_json,
        )


def main() -> None:
    with ended_in_order_by_signals():
        cli()
