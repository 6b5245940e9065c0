"""Executor state kept outside the log, so that a session taken over carries on where it was,
and a fork of an ended session starts signed in as its source was.

Some state must survive a takeover but must not enter the append-only log: HTTP and browser
cookies are credentials, and the log is kept forever. It lives here, one row per session and
executor, sealed under the master key as the tenants' secrets are
(`engine.tenancy.secret_store`), and written when it changes. Once the session has ended it is
kept `STEPLINE_FORK_STATE_TTL_S` for its forks; then the TTL sweep forgets it: the sealed
value goes, and the row keeps when, so a fork can say plainly that its source's cookies are
gone. Without a master key (outside dev mode) nothing is kept: a session taken over, or a fork,
starts without cookies.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import Connection
from psycopg_pool import ConnectionPool

from domain.session import ENDED, values
from engine.logs import LOGGER_NAME
from engine.tenancy.secret_store import MasterKey, opened, sealed

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class ForgottenState:
    """An executor's state the sweep forgot, and when."""

    executor: str
    forgotten_at: datetime


def _bound_to(session_id: UUID, executor: str) -> bytes:
    """What a sealed state is bound to: copied to another session's row, it does not open."""
    return json.dumps(["stepline.executor_state.v1", str(session_id), executor]).encode()


class ExecutorStates:
    def __init__(self, pool: ConnectionPool, key: MasterKey, keep_after_end_s: int = 0) -> None:
        self.pool = pool
        self.key = key
        self.keep_after_end_s = keep_after_end_s
        self._said_no_key = False

    def save(self, session_id: UUID, executor: str, state: dict[str, Any]) -> None:
        cipher = self._cipher(create=True)
        if cipher is None:
            return
        nonce, ciphertext = sealed(
            cipher, json.dumps(state).encode(), _bound_to(session_id, executor)
        )
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO executor_state (session_id, executor, nonce, sealed, updated_at) "
                "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (session_id, executor) "
                "DO UPDATE SET nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed, "
                "updated_at = now(), forgotten_at = NULL",
                (session_id, executor, nonce, ciphertext),
            )

    def load(self, session_id: UUID) -> dict[str, dict[str, Any]]:
        """The session's kept state per executor (none that the sweep forgot)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT executor, nonce, sealed FROM executor_state "
                "WHERE session_id = %s AND sealed IS NOT NULL",
                (session_id,),
            ).fetchall()
        cipher = self._cipher(create=False) if rows else None
        if cipher is None:
            return {}
        kept = {}
        for executor, nonce, ciphertext in rows:
            plain = opened(cipher, nonce, ciphertext, _bound_to(session_id, executor))
            if plain is None:
                log.warning("Executor state of session %s does not open", session_id)
                continue
            kept[executor] = json.loads(plain)
        return kept

    def forgotten(self, session_id: UUID) -> list[ForgottenState]:
        """The session's executor state the sweep has forgotten since the session ended."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT executor, forgotten_at FROM executor_state "
                "WHERE session_id = %s AND forgotten_at IS NOT NULL ORDER BY executor",
                (session_id,),
            ).fetchall()
        return [ForgottenState(executor, at) for executor, at in rows]

    def gone_for_fork(self, source_id: UUID, from_step: int) -> str | None:
        """Said plainly: the source's cookies that a fork from `from_step` starts without,
        because the sweep forgot them after the source ended; None if there are none."""
        gone = self.forgotten(source_id) if from_step > 0 else []
        if not gone:
            return None
        kinds = " and ".join(state.executor for state in gone)
        when = max(state.forgotten_at for state in gone).astimezone(UTC)
        return (
            f"the source's {kinds} cookies are gone: deleted at {when:%Y-%m-%d %H:%M:%S} UTC, "
            f"after the source ended (an ended session's are kept STEPLINE_FORK_STATE_TTL_S, "
            f"{self.keep_after_end_s} s). The fork starts signed out: a step that needs the "
            "source's sign-in will fail; fork from the sign-in step instead"
        )

    def forget_ended(self) -> None:
        """Forget the state of sessions that ended more than `keep_after_end_s` ago."""
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE executor_state e SET nonce = NULL, sealed = NULL, forgotten_at = now() "
                "FROM session_index si WHERE si.session_id = e.session_id "
                "AND si.status = ANY(%s) AND e.sealed IS NOT NULL "
                "AND si.updated_at <= now() - make_interval(secs => %s)",
                (values(ENDED), self.keep_after_end_s),
            )

    def _cipher(self, *, create: bool) -> AESGCM | None:
        cipher = self.key.cipher(create=create)
        if cipher is None and not self._said_no_key:
            self._said_no_key = True
            log.warning(
                "No master key (STEPLINE_MASTER_KEY): cookies are not kept outside the process, "
                "so a session taken over by another worker, or a fork, starts without them"
            )
        return cipher


def seal_clear_state(conn: Connection[Any], cipher: AESGCM | None) -> None:
    """Seal what Stepline kept in clear before (schema version 2: a jsonb column `state`);
    without a master key, forget it. The schema's migration runs this once, then drops the
    column."""
    if cipher is not None:
        rows = conn.execute("SELECT session_id, executor, state FROM executor_state").fetchall()
        for session_id, executor, state in rows:
            plain, bound_to = json.dumps(state).encode(), _bound_to(session_id, executor)
            conn.execute(
                "UPDATE executor_state SET nonce = %s, sealed = %s "
                "WHERE session_id = %s AND executor = %s",
                (*sealed(cipher, plain, bound_to), session_id, executor),
            )
    conn.execute("UPDATE executor_state SET forgotten_at = now() WHERE sealed IS NULL")
