"""Each tenant's secrets, in PostgreSQL, encrypted at rest and bound to where they may go.

A value is sealed with AES-GCM under the master key (STEPLINE_MASTER_KEY), with a fresh random
nonce on every write and the tenant and name as associated data: a row copied to another
tenant, or renamed, no longer opens. The table holds no value in clear, and nothing read from
it ever returns one except `secrets_of`, which the task loop calls to fill in placeholders.

Without a master key the store refuses writes (MASTER_KEY_MISSING); in dev mode (no API keys
configured) it makes its own key instead, `master.key` (0600) under the data directory, on the
first write (to keep those secrets once API keys are configured, set STEPLINE_MASTER_KEY to
the file's content). Make a key with `stepline secrets key`, or:
    python -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"
A key cannot be changed in place: secrets stored under one key open only with that key.

A secret's kind is `value` (sent as `{{secrets.NAME}}`) or `totp` (a base32 TOTP seed, checked
and normalised when stored, whose current code `{{totp.NAME}}` is sent; see engine.secrets).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import ConnectionPool

from domain.errors import DomainError
from engine.logs import LOGGER_NAME
from engine.secrets import (
    MIN_REDACTED_LENGTH,
    NAME,
    NO_ORIGIN,
    Secret,
    SecretNotFound,
    normalized_origin,
    normalized_seed,
)
from engine.settings import Settings

log = logging.getLogger(LOGGER_NAME)

KEY_FILE = "master.key"
MAX_VALUE_CHARS = 65_536
MAX_ORIGINS = 50
NONCE_BYTES = 12
KEY_BYTES = 32
VALUE = "value"
TOTP_SEED = "totp"
KINDS = (VALUE, TOTP_SEED)


class MasterKeyMissing(DomainError):
    code = "MASTER_KEY_MISSING"


@dataclass(frozen=True)
class StoredSecret:
    """What may be shown of a stored secret: everything but its value."""

    name: str
    origins: tuple[str, ...]
    """Empty: the origin of the base URL of the workflow that uses it."""
    created_at: datetime
    updated_at: datetime
    kind: str = VALUE

    @property
    def totp(self) -> bool:
        return self.kind == TOTP_SEED


def new_master_key() -> str:
    """32 random bytes in URL-safe base64: a value for STEPLINE_MASTER_KEY."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


class MasterKey:
    """The key secrets are sealed under: STEPLINE_MASTER_KEY, else (dev mode only) a key file
    made on first write."""

    def __init__(self, key: bytes | None, key_file: Path | None = None) -> None:
        self._key = key
        self._key_file = key_file

    @classmethod
    def of(cls, settings: Settings) -> MasterKey:
        key_file = Path(settings.data_dir) / KEY_FILE if settings.dev_mode else None
        return cls(settings.master_key_bytes(), key_file)

    def cipher(self, *, create: bool) -> AESGCM | None:
        """The cipher, or None when there is no key (and `create` may not or cannot make one)."""
        key = self.key_bytes(create=create)
        return None if key is None else AESGCM(key)

    def key_bytes(self, *, create: bool) -> bytes | None:
        """The key itself, or None as for `cipher`."""
        if self._key is None and self._key_file is not None:
            self._key = self._read_key_file() or (self._write_key_file() if create else None)
        return self._key

    def _read_key_file(self) -> bytes | None:
        assert self._key_file is not None
        try:
            key = base64.urlsafe_b64decode(self._key_file.read_text().strip())
        except FileNotFoundError:
            return None
        if len(key) != KEY_BYTES:
            raise MasterKeyMissing(f"{self._key_file} does not hold a 32-byte key")
        return key

    def _write_key_file(self) -> bytes:
        assert self._key_file is not None
        self._key_file.parent.mkdir(parents=True, exist_ok=True)
        key = os.urandom(KEY_BYTES)
        # O_EXCL: two processes making the key at once keep the one written first.
        try:
            fd = os.open(self._key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read_key_file() or key
        with os.fdopen(fd, "w") as file:
            file.write(base64.urlsafe_b64encode(key).decode())
        log.warning(
            "Dev mode: made a master key for stored secrets and kept cookies at %s", self._key_file
        )
        return key


WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, no secret
WEBHOOK_SECRET_BYTES = 32


def secret_bound_to(tenant: str, name: str) -> bytes:
    """What a sealed value is bound to: opened as another tenant's, or another name's, it fails."""
    return json.dumps(["stepline.secret.v1", tenant, name]).encode()


def checked_name(name: str) -> str:
    if not NAME.match(name):
        raise DomainError(
            f"{name!r} is not a secret name: 1 to 100 letters, digits or _", field="name"
        )
    return name


def checked_origins(origins: Iterable[str]) -> tuple[str, ...]:
    listed = list(origins)
    if len(listed) > MAX_ORIGINS:
        raise DomainError(f"at most {MAX_ORIGINS} origins per secret", field="origins")
    try:
        return tuple(dict.fromkeys(normalized_origin(origin) for origin in listed))
    except ValueError as error:
        raise DomainError(str(error), field="origins") from None


def checked_value(value: str) -> str:
    # Never repeat the value in these messages: they are answered, and may be logged.
    if len(value) < MIN_REDACTED_LENGTH:
        raise DomainError(
            f"a secret's value needs at least {MIN_REDACTED_LENGTH} characters: a shorter one "
            "could not be redacted from what is recorded",
            field="value",
        )
    if len(value) > MAX_VALUE_CHARS:
        raise DomainError(f"a secret's value may hold at most {MAX_VALUE_CHARS} characters")
    return value


def checked_kind_value(kind: str, value: str) -> str:
    """The value as it is stored for its kind: a seed checked as base32 and normalised."""
    if kind not in KINDS:
        raise DomainError(f"{kind!r} is not a kind of secret: {' or '.join(KINDS)}", field="kind")
    if kind == TOTP_SEED:
        try:
            value = normalized_seed(value)
        except ValueError as error:
            raise DomainError(str(error), field="value") from None
    return checked_value(value)


SEALED_COLUMNS = "name, origins, kind, nonce, ciphertext, next_nonce, next_ciphertext"
"""What `secrets_of` reads of each of a tenant's secrets, still sealed."""

SealedRow = tuple[str, list[str], str, bytes, bytes, bytes | None, bytes | None]


@dataclass(frozen=True)
class SealedSecrets:
    """A tenant's stored secrets (`SEALED_COLUMNS`) as one statement read them, still
    sealed: what `secrets_of` opens for that tenant, and for no other."""

    tenant: str
    rows: tuple[SealedRow, ...]


class SecretStore:
    def __init__(self, pool: ConnectionPool, key: MasterKey) -> None:
        self.pool = pool
        self.key = key

    def put(
        self, tenant: str, name: str, value: str, origins: Iterable[str], kind: str = VALUE
    ) -> StoredSecret:
        """Store (or replace) a tenant's secret, sealed under a fresh nonce; a `totp` one
        must be a base32 seed."""
        name, bound = checked_name(name), checked_origins(origins)
        value = checked_kind_value(kind, value)
        cipher = self._cipher_to_seal()
        nonce, ciphertext = sealed(cipher, value.encode(), secret_bound_to(tenant, name))
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO tenant_secrets "
                "(tenant, name, nonce, ciphertext, origins, created_at, updated_at, kind) "
                "VALUES (%s, %s, %s, %s, %s, now(), now(), %s) "
                "ON CONFLICT (tenant, name) DO UPDATE "
                "SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, "
                "next_nonce = NULL, next_ciphertext = NULL, "
                "origins = EXCLUDED.origins, kind = EXCLUDED.kind, updated_at = now() "
                "RETURNING name, origins, created_at, updated_at, kind",
                (tenant, name, nonce, ciphertext, list(bound), kind),
            ).fetchone()
        assert row is not None
        return _stored(row)

    def listed(self, tenant: str) -> list[StoredSecret]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT name, origins, created_at, updated_at, kind FROM tenant_secrets "
                "WHERE tenant = %s ORDER BY name",
                (tenant,),
            ).fetchall()
        return [_stored(row) for row in rows]

    def delete(self, tenant: str, name: str) -> None:
        """Forget a tenant's secret; SecretNotFound if it has none of that name."""
        with self.pool.connection() as conn:
            deleted = conn.execute(
                "DELETE FROM tenant_secrets WHERE tenant = %s AND name = %s", (tenant, name)
            ).rowcount
        if not deleted:
            raise SecretNotFound(name)

    def secrets_of(
        self, tenant: str, default_origin: str = NO_ORIGIN, read: SealedSecrets | None = None
    ) -> list[Secret]:
        """The tenant's secrets, opened; one stored without origins is bound to
        `default_origin` (the origin of the workflow's base URL). `read`: the tenant's rows as
        a statement of the run has just read them (the first lease's, see
        `Leases.acquire_first_and_read`), instead of reading them again; rows read for another
        tenant are never used."""
        if read is not None and read.tenant == tenant:
            rows = list(read.rows)
        else:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    f"SELECT {SEALED_COLUMNS} FROM tenant_secrets WHERE tenant = %s",  # noqa: S608
                    (tenant,),
                ).fetchall()
        if not rows:
            return []
        cipher = self.key.cipher(create=False)
        if cipher is None:
            log.warning("Tenant %s has stored secrets but no master key is set", tenant)
        found = []
        for name, origins, kind, *seals in rows:
            value = None if cipher is None else _opened(cipher, tenant, name, seals)
            if value is not None:
                bound = tuple(origins) or (default_origin,)
                found.append(Secret(name, value, bound, totp=kind == TOTP_SEED))
        return found

    # ---- the tenant's webhook signing secret ------------------------------------------

    def new_webhook_secret(self, tenant: str) -> str:
        """Make (or replace) the tenant's webhook signing secret, `whsec_` and 32 random bytes
        in base64 as the Standard Webhooks specification writes it; returned this once."""
        cipher = self._cipher_to_seal()
        secret = WEBHOOK_SECRET_PREFIX + base64.b64encode(os.urandom(WEBHOOK_SECRET_BYTES)).decode()
        nonce, ciphertext = sealed(cipher, secret.encode(), webhook_bound_to(tenant))
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO tenant_webhook_secrets (tenant, nonce, ciphertext, created_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (tenant) DO UPDATE SET "
                "nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, created_at = now(), "
                "next_nonce = NULL, next_ciphertext = NULL",
                (tenant, nonce, ciphertext),
            )
        return secret

    def has_webhook_secret(self, tenant: str) -> bool:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM tenant_webhook_secrets WHERE tenant = %s", (tenant,)
            ).fetchone()
        return row is not None

    def webhook_secret(self, tenant: str) -> str | None:
        """The tenant's webhook signing secret, opened; None if it has none (or it does not
        open with the master key)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT nonce, ciphertext, next_nonce, next_ciphertext "
                "FROM tenant_webhook_secrets WHERE tenant = %s",
                (tenant,),
            ).fetchone()
        cipher = self.key.cipher(create=False)
        if row is None or cipher is None:
            return None
        value = opened_either(cipher, row, webhook_bound_to(tenant))
        return None if value is None else value.decode()

    def _cipher_to_seal(self) -> AESGCM:
        cipher = self.key.cipher(create=True)
        if cipher is None:
            raise MasterKeyMissing(
                "no master key is configured, so secrets cannot be stored: set "
                "STEPLINE_MASTER_KEY (`stepline secrets key` prints a new one)"
            )
        return cipher


def webhook_bound_to(tenant: str) -> bytes:
    return json.dumps(["stepline.webhook-secret.v1", tenant]).encode()


def sealed(cipher: AESGCM, plain: bytes, bound_to: bytes) -> tuple[bytes, bytes]:
    """`plain` sealed under a fresh random nonce, bound to `bound_to`: (nonce, ciphertext)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, cipher.encrypt(nonce, plain, bound_to)


def opened(cipher: AESGCM, nonce: bytes, ciphertext: bytes, bound_to: bytes) -> bytes | None:
    """What `sealed` sealed, or None if it does not open: another key, or bound elsewhere."""
    try:
        return cipher.decrypt(nonce, ciphertext, bound_to)
    except InvalidTag:
        return None


def opened_either(cipher: AESGCM, seals: Sequence[bytes | None], bound_to: bytes) -> bytes | None:
    """What the seal (nonce, ciphertext) or, during a rotation, the next seal (next_nonce,
    next_ciphertext) holds, whichever opens with `cipher`: a process still on the old master
    key opens the first, one on the new key the second (see engine.tenancy.secret_rotation)."""
    pairs = zip(seals[0::2], seals[1::2], strict=True)
    for nonce, ciphertext in pairs:
        if nonce is not None and ciphertext is not None:
            value = opened(cipher, nonce, ciphertext, bound_to)
            if value is not None:
                return value
    return None


def _opened(cipher: AESGCM, tenant: str, name: str, seals: Sequence[bytes | None]) -> str | None:
    value = opened_either(cipher, seals, secret_bound_to(tenant, name))
    if value is None:  # another key, or a row that is not this tenant's or this name's
        log.warning("Secret %s of tenant %s does not open with the master key", name, tenant)
        return None
    return value.decode()


def _stored(row: tuple[str, list[str], datetime, datetime, str]) -> StoredSecret:
    name, origins, created_at, updated_at, kind = row
    return StoredSecret(name, tuple(origins), created_at, updated_at, kind)
