"""`stepline secrets`: a tenant's stored secrets, set (the value from stdin, never the command
line, which other users of the machine can see), listed without values, deleted; and `key`,
which prints a new master key for STEPLINE_MASTER_KEY."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from domain.dev_mode import DEV_TENANT

secrets_cli = typer.Typer(
    help="A tenant's secrets, stored encrypted in the database and bound to origins.",
    no_args_is_help=True,
)

SecretName = Annotated[
    str, typer.Argument(help="used in workflows as {{secrets.NAME}} ({{totp.NAME}} for a seed)")
]
TotpOption = Annotated[
    bool,
    typer.Option(
        "--totp",
        help="the value is a base32 TOTP seed: workflows send its current code, {{totp.NAME}}",
    ),
]
TenantOption = Annotated[str, typer.Option(help="the tenant the secret belongs to")]
Origins = Annotated[
    list[str] | None,
    typer.Option(
        "--origin",
        help="where it may be sent (scheme://host[:port], or `shell`); repeat for more; none: "
        "the origin of the base_url of the workflow that uses it",
    ),
]


def _value_from_stdin() -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt("Value", hide_input=True)
        return value
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


@secrets_cli.command("set")
def secrets_set(
    name: SecretName,
    tenant: TenantOption = DEV_TENANT,
    origin: Origins = None,
    totp: TotpOption = False,
) -> None:
    """Store (or replace) a secret, or with --totp a TOTP seed; its value is read from stdin."""
    from api.cli.support import console, runtime_or_exit  # noqa: PLC0415
    from engine.tenancy.secret_store import TOTP_SEED, VALUE  # noqa: PLC0415

    value = _value_from_stdin()
    with runtime_or_exit(quiet=True) as runtime:
        kind = TOTP_SEED if totp else VALUE
        stored = runtime.secret_store.put(tenant, name, value, origin or [], kind)
    where = ", ".join(stored.origins) or "the origin of the workflow's base_url"
    console.print(f"Stored secret {stored.name} for tenant {tenant}; it may be sent to {where}")


@secrets_cli.command("list")
def secrets_list(tenant: TenantOption = DEV_TENANT) -> None:
    """The tenant's secrets: names, origins and times (never values)."""
    from rich.table import Table  # noqa: PLC0415

    from api.cli.support import console, runtime_or_exit  # noqa: PLC0415

    with runtime_or_exit(quiet=True) as runtime:
        stored = runtime.secret_store.listed(tenant)
    table = Table("name", "kind", "origins", "updated")
    for secret in stored:
        origins = ", ".join(secret.origins) or "(the workflow's base_url)"
        updated = secret.updated_at.isoformat(timespec="seconds")
        table.add_row(secret.name, secret.kind, origins, updated)
    console.print(table)


@secrets_cli.command("delete")
def secrets_delete(name: SecretName, tenant: TenantOption = DEV_TENANT) -> None:
    """Delete a secret."""
    from api.cli.support import console, runtime_or_exit  # noqa: PLC0415

    with runtime_or_exit(quiet=True) as runtime:
        runtime.secret_store.delete(tenant, name)
    console.print(f"Deleted secret {name} of tenant {tenant}")


@secrets_cli.command("key")
def secrets_key() -> None:
    """Print a new master key, for STEPLINE_MASTER_KEY (keep it: stored secrets need it)."""
    from engine.tenancy.secret_store import new_master_key  # noqa: PLC0415

    print(new_master_key())  # the output is the key alone, for a shell to capture


@secrets_cli.command("rotate-master")
def secrets_rotate_master(
    new_key_file: Annotated[Path, typer.Argument(help="a file holding the new master key")],
) -> None:
    """Wrap every session's data key, and seal every tenant's secrets, under a new master key
    too (STEPLINE_MASTER_KEY is the current one); events are not touched. Safe with sessions
    running, and to run again."""
    from api.cli import erase as cli_erase  # noqa: PLC0415

    cli_erase.rotate_master(new_key_file)


@secrets_cli.command("retire-master")
def secrets_retire_master() -> None:
    """Once every process runs with the new STEPLINE_MASTER_KEY: delete the data keys' wraps
    and the secrets' seals under older master keys (refused while a data key or a secret is
    not under the new one)."""
    from api.cli import erase as cli_erase  # noqa: PLC0415

    cli_erase.retire_master()
