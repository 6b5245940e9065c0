"""Each session's data key: 256 random bits that seal its events, kept wrapped under the master
key (the key-encryption key, STEPLINE_MASTER_KEY) and destroyed to erase the session.

`session_keys` has a row per session that has a key (its tenant, when it was made, when it was
erased); `session_key_wraps` holds the key itself, sealed with AES-GCM under a master key and
bound to the session, one row per master key it is wrapped under (named by a fingerprint of
that key). Rotation wraps every data key under the new master key beside the old wrap, so
processes holding either key keep working; retiring the old key deletes its wraps. Erasure
deletes every wrap: the events sealed with the key can no longer be opened by anyone.

Unwrapped keys are cached per process (a bounded map): a sealed event is opened without a
query once its session's key is known.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from threading import Lock
from typing import Any, Protocol
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import Connection

from domain.errors import DomainError
from engine.tenancy.secret_store import KEY_BYTES, MasterKey, MasterKeyMissing, opened, sealed

CACHED_KEYS = 10_000


class Connections(Protocol):
    """Where the key tables are: the event store's own connections."""

    def transaction(self, *, commit: bool = False) -> Any: ...


class KeyNotAvailable(DomainError):
    """A session's events are sealed under a data key this process cannot unwrap."""

    code = "DATA_KEY_NOT_AVAILABLE"


@dataclass(frozen=True)
class Erased:
    """A session whose data key was destroyed: its sealed fields are gone for good."""

    session_id: UUID


@dataclass(frozen=True)
class InClear:
    """A session made without a data key (no master key then, or before sealing)."""

    session_id: UUID


DataKey = AESGCM | Erased | InClear


def fingerprint(master: bytes) -> str:
    """A name for a master key that does not reveal it (16 hex digits)."""
    return hashlib.sha256(b"stepline.kek.v1" + master).hexdigest()[:16]


def _bound_to(session_id: UUID) -> bytes:
    """A wrap copied to another session's row does not open."""
    return b"stepline.data_key.v1:" + session_id.bytes


@dataclass(frozen=True)
class Rotation:
    wrapped: int
    """Data keys wrapped under the new master key by this rotation."""
    left_under_other_keys: int
    """Data keys wrapped under neither the old nor the new key (not rotated)."""


class DataKeys:
    """Make, find, rotate and destroy sessions' data keys."""

    def __init__(self, connections: Connections, master: MasterKey) -> None:
        self.connections = connections
        self.master = master
        self._cache: OrderedDict[UUID, DataKey] = OrderedDict()
        self._lock = Lock()

    def enabled(self) -> bool:
        """Whether sessions get data keys: only when there is a master key to wrap them."""
        return self._master(create=True) is not None

    # ---- making and finding ------------------------------------------------------------

    def create(self, session_id: UUID, tenant: str) -> AESGCM:
        """A new data key for a new session, wrapped and stored before its first event."""
        master = self._master(create=True)
        if master is None:
            raise MasterKeyMissing("no master key: sessions' data keys cannot be wrapped")
        key = os.urandom(KEY_BYTES)
        nonce, wrapped = sealed(AESGCM(master), key, _bound_to(session_id))
        with self.connections.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO session_keys (session_id, tenant, created_at) VALUES (%s, %s, now())",
                (session_id, tenant),
            )
            cursor.execute(
                "INSERT INTO session_key_wraps (session_id, kek, nonce, wrapped) "
                "VALUES (%s, %s, %s, %s)",
                (session_id, fingerprint(master), nonce, wrapped),
            )
        cipher = AESGCM(key)
        self._remember(session_id, cipher)
        return cipher

    def of(self, session_id: UUID) -> DataKey:
        """The session's data key, Erased, or InClear; KeyNotAvailable if it is wrapped only
        under a master key this process does not hold (or has none)."""
        with self._lock:
            known = self._cache.get(session_id)
        if known is not None:
            return known
        found = self._load(session_id)
        self._remember(session_id, found)
        return found

    def forget(self, session_id: UUID) -> None:
        """Drop the cached key (the session was erased, by this process or another)."""
        with self._lock:
            self._cache[session_id] = Erased(session_id)

    def _load(self, session_id: UUID) -> DataKey:
        master = self._master(create=False)
        kek = fingerprint(master) if master is not None else ""
        with self.connections.transaction() as cursor:
            row = cursor.execute(
                "SELECT k.erased_at, w.nonce, w.wrapped FROM session_keys k "
                "LEFT JOIN session_key_wraps w ON w.session_id = k.session_id AND w.kek = %s "
                "WHERE k.session_id = %s",
                (kek, session_id),
            ).fetchone()
        if row is None:
            return InClear(session_id)
        if row["erased_at"] is not None:
            return Erased(session_id)
        if row["wrapped"] is None or master is None:
            raise KeyNotAvailable(
                f"the data key of session {session_id} is not wrapped under this process's "
                "master key",
                suggested_action="Give this process the master key the session's data key is "
                "wrapped under (see `stepline secrets rotate-master`)",
                session_id=str(session_id),
            )
        key = opened(AESGCM(master), row["nonce"], row["wrapped"], _bound_to(session_id))
        if key is None:
            raise KeyNotAvailable(
                f"the data key of session {session_id} does not open",
                session_id=str(session_id),
            )
        return AESGCM(key)

    def _remember(self, session_id: UUID, key: DataKey) -> None:
        with self._lock:
            self._cache[session_id] = key
            self._cache.move_to_end(session_id)
            while len(self._cache) > CACHED_KEYS:
                self._cache.popitem(last=False)

    def _master(self, *, create: bool) -> bytes | None:
        return self.master.key_bytes(create=create)

    # ---- destroying ---------------------------------------------------------------------

    def destroy(self, conn: Connection[Any], session_id: UUID) -> bool:
        """Delete every wrap of the session's key and mark it erased; False if it had none."""
        conn.execute("DELETE FROM session_key_wraps WHERE session_id = %s", (session_id,))
        marked = conn.execute(
            "UPDATE session_keys SET erased_at = coalesce(erased_at, now()) WHERE session_id = %s",
            (session_id,),
        ).rowcount
        self.forget(session_id)
        return bool(marked)


def rotate(conn: Connection[Any], old: bytes, new: bytes) -> Rotation:
    """Wrap every data key wrapped under `old` under `new` too (the old wraps stay until
    `retire`); safe to run again, with sessions running."""
    old_kek, new_kek = fingerprint(old), fingerprint(new)
    rows = conn.execute(
        "SELECT w.session_id, w.nonce, w.wrapped FROM session_key_wraps w WHERE w.kek = %s "
        "AND NOT EXISTS (SELECT 1 FROM session_key_wraps n WHERE n.session_id = w.session_id "
        "AND n.kek = %s)",
        (old_kek, new_kek),
    ).fetchall()
    old_cipher, new_cipher = AESGCM(old), AESGCM(new)
    wrapped = 0
    for session_id, nonce, old_wrap in rows:
        key = opened(old_cipher, nonce, old_wrap, _bound_to(session_id))
        if key is None:
            continue
        new_nonce, new_wrap = sealed(new_cipher, key, _bound_to(session_id))
        conn.execute(
            "INSERT INTO session_key_wraps (session_id, kek, nonce, wrapped) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (session_id, new_kek, new_nonce, new_wrap),
        )
        wrapped += 1
    return Rotation(wrapped, _not_under(conn, (old_kek, new_kek)))


def retire(conn: Connection[Any], keep: bytes) -> int:
    """Delete the wraps under every master key but `keep`; refused (ValueError) while some
    data key is not wrapped under `keep` (it would be lost). Returns the wraps deleted."""
    kek = fingerprint(keep)
    missing = _not_under(conn, (kek,))
    if missing:
        raise ValueError(
            f"{missing} data keys are not wrapped under the current master key yet: run "
            "`stepline secrets rotate-master` with the old key first"
        )
    return conn.execute("DELETE FROM session_key_wraps WHERE kek <> %s", (kek,)).rowcount


def _not_under(conn: Connection[Any], keks: tuple[str, ...]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM session_keys k WHERE k.erased_at IS NULL AND NOT EXISTS "
        "(SELECT 1 FROM session_key_wraps w WHERE w.session_id = k.session_id "
        "AND w.kek = ANY(%s))",
        (list(keks),),
    ).fetchone()
    return int(row[0]) if row else 0


def erased_at(conn: Connection[Any], session_id: UUID) -> datetime | None:
    row = conn.execute(
        "SELECT erased_at FROM session_keys WHERE session_id = %s", (session_id,)
    ).fetchone()
    return None if row is None else row[0]
