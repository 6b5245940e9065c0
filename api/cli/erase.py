"""`stepline sessions erase`, `stepline tenants erase` and the master key's rotation: against
the database, as the operator (`cli:<login>` is the actor on the `Erased` events)."""

from __future__ import annotations

import base64
from pathlib import Path
from uuid import UUID

import psycopg
import typer

from api.cli.support import cli_actor, console, errors, runtime_or_exit
from engine.privacy.data_keys import retire, rotate
from engine.tenancy import secret_rotation
from engine.tenancy.secret_store import KEY_BYTES


def erase_session(session_id: UUID, reason: str) -> None:
    with runtime_or_exit(quiet=True) as runtime:
        erased = runtime.erasure().erase(session_id, reason, cli_actor())
    cancelled = " (cancelled first)" if erased.cancelled else ""
    console.print(f"Erased session {session_id}{cancelled}")
    if not erased.shredded:
        errors.print("It was stored in clear (no data key): its log still reads")


def erase_tenant(tenant: str, reason: str) -> None:
    with runtime_or_exit(quiet=True) as runtime:
        erased = runtime.erasure().erase_tenant(tenant, reason, cli_actor())
    console.print(
        f"Erased tenant {tenant}: {len(erased)} sessions, and its stored secrets. What remains: "
        "the sessions' tombstones, the audit of the erasure and the tenant's policy events"
    )


def read_key_file(path: Path) -> bytes:
    try:
        key = base64.urlsafe_b64decode(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise typer.BadParameter(f"{path}: {error}") from None
    if len(key) != KEY_BYTES:
        raise typer.BadParameter(f"{path} does not hold a 32-byte key in base64")
    return key


def rotate_master(new_key_file: Path) -> None:
    new = read_key_file(new_key_file)
    with runtime_or_exit(quiet=True) as runtime:
        old = runtime.settings.master_key_bytes()
        if old is None:
            raise typer.BadParameter("STEPLINE_MASTER_KEY (the current key) is not set")
        with psycopg.connect(runtime.database_url, autocommit=True) as conn, conn.transaction():
            rotation = rotate(conn, old, new)
            secrets_sealed, secrets_not_opened = secret_rotation.rotate(conn, old, new)
    console.print(f"Wrapped {rotation.wrapped} data keys under the new master key")
    console.print(f"Sealed {secrets_sealed} tenant secrets under the new master key too")
    if rotation.left_under_other_keys:
        errors.print(f"{rotation.left_under_other_keys} data keys are under another key")
    if secrets_not_opened:
        errors.print(f"{secrets_not_opened} tenant secrets open under neither key")


def retire_master() -> None:
    with runtime_or_exit(quiet=True) as runtime:
        current = runtime.settings.master_key_bytes()
        if current is None:
            raise typer.BadParameter("STEPLINE_MASTER_KEY (the new key) is not set")
        with psycopg.connect(runtime.database_url, autocommit=True) as conn, conn.transaction():
            try:
                deleted = retire(conn, current)
                resealed = secret_rotation.retire(conn, current)
            except ValueError as error:
                raise typer.BadParameter(str(error)) from None
    console.print(f"Deleted {deleted} wraps under older master keys")
    console.print(f"Kept {resealed} tenant secrets under the current master key alone")
