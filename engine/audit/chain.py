"""The hash chain over the log: each event row carries a SHA-256 of the row before it and of
its own content, so altering, removing or re-ordering a row breaks the chain from there on,
and a head kept elsewhere stops matching a log rewritten before it.

The encoding, defined here once: the append function computes it in SQL (`link_sql`, in the
transaction that writes the row), the verifier in Python (`link`). Every field is fixed-width
or length-prefixed and the stored bytes come last, so no two rows encode alike:

    hash = SHA-256( previous hash    32 bytes; before the first chained row, 32 zero bytes
                  ‖ position         8 bytes, big-endian (the row's notification_id)
                  ‖ aggregate id     16 bytes (the UUID's bytes)
                  ‖ version          8 bytes, big-endian
                  ‖ topic length     4 bytes, big-endian: of the topic's UTF-8 bytes
                  ‖ topic            its UTF-8 bytes
                  ‖ stored bytes     the `state` column, as stored, to the end )

Positions have no gaps: the append function numbers the rows itself under the table lock, so
a missing position is a removed row. Rows written before the chain existed (schema migration 3)
have no hash; the chain starts at the first row that has one.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from engine.live.follower import run_when_woken
from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

GENESIS = bytes(32)
"""The previous hash of the first chained row."""

FIXED_FIELDS = struct.Struct(">q16sqI")
"""Position, aggregate id, version, topic length: the fields of `link` between the hashes."""


def link_sql(
    previous: str, position: str, *, id_: str, version: str, topic: str, state: str
) -> str:
    """`link` as an SQL expression over the SQL expressions given (`topic` its UTF-8 bytes)."""
    return (
        f"sha256({previous} || int8send({position}) || uuid_send({id_}) || int8send({version})"
        f" || int4send(length({topic})) || {topic} || {state})"
    )


def link(
    previous: bytes, position: int, *, aggregate_id: bytes, version: int, topic: bytes, state: bytes
) -> bytes:
    """The hash of a row whose predecessor's hash is `previous`."""
    fixed = FIXED_FIELDS.pack(position, aggregate_id, version, len(topic))
    return hashlib.sha256(previous + fixed + topic + state).digest()


@dataclass(frozen=True)
class Head:
    """The log's last row: its position and hash (None before any row is chained), read at
    `time` (the database's clock)."""

    position: int
    hash: bytes | None
    time: datetime


def read_head(conn: Connection[Any], events_table: str) -> Head:
    row = conn.execute(
        sql.SQL(
            "WITH last AS (SELECT notification_id, hash FROM {} "
            "ORDER BY notification_id DESC LIMIT 1) "
            "SELECT (SELECT notification_id FROM last), (SELECT hash FROM last), now()"
        ).format(sql.Identifier(events_table))
    ).fetchone()
    assert row is not None
    position, hash_, time = row
    return Head(position or 0, None if hash_ is None else bytes(hash_), time)


class HeadLog:
    """Logs the head every `interval_s`, from one process of the deployment at a time: each
    process tries; the one that moves `audit_head_log`'s time forward logs, the others see
    it moved and stay quiet."""

    def __init__(self, pool: ConnectionPool, events_table: str, interval_s: float) -> None:
        self.pool = pool
        self.events_table = events_table
        self.interval_s = interval_s

    def once(self) -> Head | None:
        """The head, logged; None if another process logged it less than `interval_s` ago."""
        with self.pool.connection() as conn:
            due = conn.execute(
                "INSERT INTO audit_head_log (one, logged_at) VALUES (true, now()) "
                "ON CONFLICT (one) DO UPDATE SET logged_at = now() "
                "WHERE audit_head_log.logged_at <= now() - make_interval(secs => %s) "
                "RETURNING logged_at",
                (self.interval_s,),
            ).fetchone()
            if due is None:
                return None
            head = read_head(conn, self.events_table)
        log.info(
            "Audit head: position %d, hash %s, at %s",
            head.position,
            head.hash.hex() if head.hash else "none (no chained event yet)",
            head.time.isoformat(),
        )
        return head

    def start(self) -> Callable[[], None]:
        """Log in a thread of its own; returns the function that stops it. Tries four times an
        interval, so the deployment logs about once per interval whichever process is up."""
        return run_when_woken(
            "audit-head", self._once_quietly, threading.Event(), self.interval_s / 4
        ).stop

    def _once_quietly(self) -> None:
        try:
            self.once()
        except Exception:
            log.exception("Logging the audit head failed; trying again later")
