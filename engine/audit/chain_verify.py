"""The chain recomputed from the rows, client-side: what `stepline audit verify` runs.

It trusts nothing the database says about the chain: it streams every row (a server-side
cursor, big batches, binary), computes each hash itself (`engine.audit.chain`) and compares. It
reports every place where the chain breaks, the first one first:

- `missing`: a position with no row (positions have no gaps, so a row was removed);
- `altered`: a row that does not match its hash (its content or its place in the log changed);
- `unhashed`: a row after the chain's start with no hash (written around the append function);
- `head`: a head kept elsewhere (`--head`) that the log no longer holds (rewritten or cut).

After a break it goes on from the row's stored hash, so one altered row is one break, not the
rest of the log. Removing the last rows of the log breaks no link: only a kept head finds it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from psycopg import Connection, sql

from engine.audit.chain import FIXED_FIELDS, GENESIS

BATCH = 20_000
"""Rows a fetch brings: large enough that round trips cost little next to the hashing."""
KEPT_BREAKS = 100
"""Breaks listed in a report; the rest are counted."""

BreakKind = Literal["missing", "altered", "unhashed", "head"]


@dataclass(frozen=True)
class KeptHead:
    """A head kept elsewhere: a hash, and the position it was read at when known."""

    hash: bytes
    position: int | None = None

    @classmethod
    def parse(cls, text: str) -> KeptHead:
        """`HASH` (64 hex digits) or `POSITION:HASH`, as `GET /v1/audit/head` and the log
        line give them."""
        position, _, digits = text.strip().rpartition(":")
        try:
            hash_ = bytes.fromhex(digits)
            at = int(position) if position else None
        except ValueError:
            hash_, at = b"", None
        if len(hash_) != 32 or (at is not None and at < 1):
            raise ValueError(f"a head is 64 hex digits, or POSITION:HASH; got {text!r}")
        return cls(hash_, at)


@dataclass(frozen=True)
class Break:
    position: int | None
    kind: BreakKind
    detail: str


@dataclass
class Verification:
    """What a walk over the log found."""

    from_position: int
    trusted_start: int | None = None
    """The position before `from_position` whose stored hash the walk started from, unchecked."""
    chain_start: int | None = None
    """The first chained row walked over from the genesis (None: started from a trusted row,
    or no chained row in range)."""
    unchained: int = 0
    """Rows before the chain started: written before the chain existed."""
    events: int = 0
    """Chained rows checked."""
    last_position: int = 0
    last_hash: bytes | None = None
    breaks: list[Break] = field(default_factory=list)
    break_count: int = 0
    elapsed_s: float = 0.0

    @property
    def clean(self) -> bool:
        return self.break_count == 0

    @property
    def first_break(self) -> Break | None:
        return self.breaks[0] if self.breaks else None

    @property
    def events_per_s(self) -> float:
        return (self.events + self.unchained) / self.elapsed_s if self.elapsed_s else 0.0

    def add(self, found: Break) -> None:
        self.break_count += 1
        if len(self.breaks) < KEPT_BREAKS:
            self.breaks.append(found)

    def as_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "from_position": self.from_position,
            "trusted_start": self.trusted_start,
            "chain_start": self.chain_start,
            "unchained": self.unchained,
            "events": self.events,
            "last_position": self.last_position,
            "last_hash": self.last_hash.hex() if self.last_hash else None,
            "break_count": self.break_count,
            "breaks": [
                {"position": b.position, "kind": b.kind, "detail": b.detail} for b in self.breaks
            ],
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s),
        }


class _Walk:
    """The chain's state from one row to the next."""

    def __init__(self, report: Verification, previous: bytes | None, expected: int) -> None:
        self.report = report
        self.previous = previous  # None: the chain has not started yet
        self.expected = expected
        self.head_seen_at: int | None = None

    def check(self, rows: Sequence[tuple[int, bytes, int, bytes, bytes, bytes | None]]) -> None:
        """One batch, in position order. The common case (a row that matches) stays in this
        loop; anything else goes to `_judge`."""
        sha256, pack = hashlib.sha256, FIXED_FIELDS.pack
        previous, expected, unchained = self.previous, self.expected, 0
        for position, aggregate_id, version, topic, state, stored in rows:
            if previous is None:
                if stored is None:
                    unchained += 1
                    expected = position + 1
                    continue
                previous = GENESIS
                self.report.chain_start = position
            computed = sha256(
                previous + pack(position, aggregate_id, version, len(topic)) + topic + state
            ).digest()
            if computed != stored or position != expected:
                self._judge(position, expected, stored)
            previous, expected = stored or computed, position + 1  # on from the stored hash
        self.previous, self.expected = previous, expected
        self.report.unchained += unchained
        self.report.events += len(rows) - unchained
        if rows:
            self.report.last_position = rows[-1][0]
            self.report.last_hash = previous

    def _judge(self, position: int, expected: int, stored: bytes | None) -> None:
        if position > expected:
            gone = f"{expected}" if position == expected + 1 else f"{expected} to {position - 1}"
            detail = f"no row at position {gone}: removed from the log"
            self.report.add(Break(expected, "missing", detail))
        elif stored is None:
            detail = "a row after the chain's start with no hash: written around the append"
            self.report.add(Break(position, "unhashed", detail))
        else:
            detail = "the row does not match its hash: its content or its place in the log changed"
            self.report.add(Break(position, "altered", detail))


def verify(
    conn: Connection[Any],
    events_table: str,
    from_position: int = 1,
    head: KeptHead | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Verification:
    """Walk the log from `from_position` (starting from the stored hash of the row before it,
    taken on trust) and compare each row with the hash recomputed here; then `head`, if given,
    with what the log holds. `conn` must not be in autocommit: the cursor lives in its
    transaction."""
    started = time.perf_counter()
    report = Verification(from_position)
    walk = _start(conn, events_table, report)
    query = sql.SQL(
        "SELECT notification_id, uuid_send(originator_id), originator_version, "
        "coalesce(convert_to(topic, 'UTF8'), ''), coalesce(state, ''), hash "
        "FROM {} WHERE notification_id >= %s ORDER BY notification_id"
    ).format(sql.Identifier(events_table))
    head_hashes: dict[bytes, int] = {}
    with conn.cursor(name="audit_verify", binary=True) as cursor:
        cursor.itersize = BATCH
        cursor.execute(query, (from_position,))
        while rows := cursor.fetchmany(BATCH):
            walk.check(rows)
            if head is not None:
                head_hashes.update((row[5], row[0]) for row in rows if row[5] == head.hash)
            if on_progress is not None:
                on_progress(rows[-1][0])
    conn.rollback()
    if head is not None:
        _compare_head(report, head, head_hashes.get(head.hash))
    report.elapsed_s = time.perf_counter() - started
    return report


def _start(conn: Connection[Any], events_table: str, report: Verification) -> _Walk:
    """From the row before `from_position` (trusted), or from position 1."""
    row = conn.execute(
        sql.SQL(
            "SELECT notification_id, hash FROM {} WHERE notification_id < %s "
            "ORDER BY notification_id DESC LIMIT 1"
        ).format(sql.Identifier(events_table)),
        (report.from_position,),
    ).fetchone()
    if row is None:
        return _Walk(report, None, expected=1)  # the log's first position is 1
    position, stored = row
    if stored is not None:
        report.trusted_start = position
    report.last_position = position
    return _Walk(report, None if stored is None else bytes(stored), expected=position + 1)


def _compare_head(report: Verification, head: KeptHead, found_at: int | None) -> None:
    if found_at is not None and head.position in (None, found_at):
        return
    if head.position is not None and head.position < report.from_position:
        detail = f"the kept head's position {head.position} is before the walk's start: not checked"
    elif head.position is not None and head.position > report.last_position:
        detail = (
            f"the kept head is at position {head.position}, past the log's end "
            f"({report.last_position}): rows were removed from the end"
        )
    elif head.position is not None:
        detail = f"position {head.position} no longer has the kept head's hash: rewritten"
    else:
        detail = "no row has the kept head's hash: the log was rewritten or cut before it"
    report.add(Break(head.position, "head", detail))


# ---- the record of verifications, for the dashboard ----------------------------------------


@dataclass(frozen=True)
class VerificationRecord:
    verified_at: datetime
    actor: str
    from_position: int
    to_position: int
    head_hash: bytes | None
    events: int
    clean: bool
    first_break: int | None


def record(conn: Connection[Any], report: Verification, actor: str) -> None:
    """Keep what a verification found, for `GET /v1/audit/head` and the dashboard."""
    first = report.first_break
    conn.execute(
        "INSERT INTO audit_verifications (actor, from_position, to_position, head_hash, "
        "events, clean, first_break) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            actor,
            report.from_position,
            report.last_position,
            report.last_hash,
            report.events,
            report.clean,
            None if first is None else first.position,
        ),
    )


def last_verification(conn: Connection[Any]) -> VerificationRecord | None:
    row = conn.execute(
        "SELECT verified_at, actor, from_position, to_position, head_hash, events, clean, "
        "first_break FROM audit_verifications ORDER BY verified_at DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    verified_at, actor, from_position, to_position, head_hash, events, clean, first = row
    head = None if head_hash is None else bytes(head_hash)
    return VerificationRecord(
        verified_at, actor, from_position, to_position, head, events, clean, first
    )
