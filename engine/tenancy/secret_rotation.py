"""The master key's rotation, for what is sealed under it directly: each tenant's secrets and
its webhook signing secret (sessions' data keys are wrapped, see engine.privacy.data_keys).

`stepline secrets rotate-master` (run on the old key) seals each again under the new key
beside its seal (`next_nonce`, `next_ciphertext`), so a process on either key opens it while
the new key rolls out (`opened_either`). `retire-master` (run on the new key) keeps the seal
that opens under it alone, and refuses, writing nothing, while one opens under neither: a
secret stored by a process still on the old key after the rotation ran (run it again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import Connection

from engine.tenancy.secret_store import opened_either, sealed, secret_bound_to
from engine.tenancy.secret_store import webhook_bound_to as webhook_secret_bound_to


@dataclass(frozen=True)
class SealedTable:
    name: str
    key_columns: tuple[str, ...]
    bound_to: Callable[..., bytes]
    """What a row's seal is bound to, from its key columns."""


SEALED_TABLES = (
    SealedTable("tenant_secrets", ("tenant", "name"), secret_bound_to),
    SealedTable("tenant_webhook_secrets", ("tenant",), webhook_secret_bound_to),
)


@dataclass(frozen=True)
class SealedRow:
    table: SealedTable
    key: tuple[Any, ...]
    seals: tuple[bytes | None, ...]
    """nonce, ciphertext, next_nonce, next_ciphertext."""

    @property
    def bound_to(self) -> bytes:
        return self.table.bound_to(*self.key)

    def where(self) -> str:
        return " AND ".join(f"{column} = %s" for column in self.table.key_columns)


def _rows(conn: Connection[Any]) -> Iterator[SealedRow]:
    for table in SEALED_TABLES:
        keys = ", ".join(table.key_columns)
        for row in conn.execute(
            f"SELECT {keys}, nonce, ciphertext, next_nonce, next_ciphertext FROM {table.name} "  # noqa: S608 - names from SEALED_TABLES
            "FOR UPDATE"
        ):
            width = len(table.key_columns)
            yield SealedRow(table, tuple(row[:width]), tuple(row[width:]))


def rotate(conn: Connection[Any], old: bytes, new: bytes) -> tuple[int, int]:
    """Seal every secret that opens under `old` under `new` too: (sealed, not opened). Safe to
    run again (one already under `new` is left), with sessions running."""
    old_cipher, new_cipher = AESGCM(old), AESGCM(new)
    done = not_opened = 0
    for row in list(_rows(conn)):
        if opened_either(new_cipher, row.seals, row.bound_to) is not None:
            continue
        plain = opened_either(old_cipher, row.seals, row.bound_to)
        if plain is None:
            not_opened += 1
            continue
        nonce, ciphertext = sealed(new_cipher, plain, row.bound_to)
        conn.execute(
            f"UPDATE {row.table.name} SET next_nonce = %s, next_ciphertext = %s "  # noqa: S608 - names from SEALED_TABLES
            f"WHERE {row.where()}",
            (nonce, ciphertext, *row.key),
        )
        done += 1
    return done, not_opened


def retire(conn: Connection[Any], keep: bytes) -> int:
    """Keep only the seal under `keep` of every secret: the rows changed. ValueError, with
    nothing written, while some secret does not open under `keep`."""
    cipher = AESGCM(keep)
    moves = []
    for row in list(_rows(conn)):
        if opened_either(cipher, row.seals[:2], row.bound_to) is not None:
            if row.seals[2] is not None:
                moves.append((row, row.seals[:2]))
        elif opened_either(cipher, row.seals[2:], row.bound_to) is not None:
            moves.append((row, row.seals[2:]))
        else:
            raise ValueError(
                f"a secret in {row.table.name} does not open under the current master key: "
                "run `stepline secrets rotate-master` with the old key first"
            )
    for row, (nonce, ciphertext) in moves:
        conn.execute(
            f"UPDATE {row.table.name} SET nonce = %s, ciphertext = %s, "  # noqa: S608 - names from SEALED_TABLES
            f"next_nonce = NULL, next_ciphertext = NULL WHERE {row.where()}",
            (nonce, ciphertext, *row.key),
        )
    return len(moves)
