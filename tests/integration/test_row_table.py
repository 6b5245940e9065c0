"""The row plumbing every view shares, on a real PostgreSQL: a few rows and many are written
alike."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import psycopg
import pytest
from psycopg import Connection

from domain.session import StepViewStatus
from projections.view import FEW_ROWS, RowTable

IDS = UUID("6f1d0c3e-8a51-4a52-9a8e-0d3b5f5b9c21")


@dataclass
class EveryKind:
    """A row with a column of every kind the views store."""

    number: int
    text: str | None
    labels: dict[str, Any]
    words: list[str]
    counts: list[int]
    ids: list[UUID]
    at: datetime | None
    day: date
    share: float
    flag: bool
    status: StepViewStatus


def every_kind(number: int, edition: str) -> EveryKind:
    started = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    return EveryKind(
        number=number,
        text=None if number % 7 == 0 else f"{edition} row {number}: naïve \x00 quoted 'text'",
        labels={"edition": edition, "nested": {"n": number, "nul": "a\x00b"}, "list": [1, None]},
        words=[]
        if number % 5 == 0
        else [edition, "two {words}", 'a "quote"', "back\\slash", "a\x00b"],
        counts=[number, -number, 2**40] if number % 3 else [],
        ids=[uuid5(IDS, f"{edition}{number}")],
        at=None if number % 4 == 0 else started + timedelta(microseconds=number * 1_001),
        day=date(2025, 3, 1 + number % 28),
        share=number / 3,
        flag=number % 2 == 0,
        status=list(StepViewStatus)[number % len(StepViewStatus)],
    )


def every_kind_table(conn: Connection[Any], name: str) -> RowTable[EveryKind]:
    conn.execute(
        f"CREATE TABLE {name} (number integer PRIMARY KEY, text text, labels jsonb NOT NULL, "
        "words text[] NOT NULL, counts bigint[] NOT NULL, ids uuid[] NOT NULL, at timestamptz, "
        "day date NOT NULL, share double precision NOT NULL, flag boolean NOT NULL, "
        "status text NOT NULL)"
    )
    return RowTable(name, EveryKind, key=("number",))


@pytest.fixture
def conn(fresh_database_url: str) -> Iterator[Connection[Any]]:
    with psycopg.connect(fresh_database_url, autocommit=True) as connection:
        yield connection


def test_a_few_rows_at_a_time_are_upserted_as_many_at_once_are(conn: Connection[Any]) -> None:
    first = [every_kind(n, "first") for n in range(FEW_ROWS + 10)]
    # Every other row of the first replaced, and as many new ones.
    second = [every_kind(n, "second") for n in range(0, 2 * len(first), 2)]
    with conn.transaction():
        at_once = every_kind_table(conn, "upserted_at_once")
        a_few_at_a_time = every_kind_table(conn, "upserted_a_few_at_a_time")
        for rows in (first, second):
            at_once.upsert(conn, rows)
            for start in range(0, len(rows), FEW_ROWS // 2):
                a_few_at_a_time.upsert(conn, rows[start : start + FEW_ROWS // 2])

        in_both = [
            conn.execute(f"SELECT * FROM {table} ORDER BY number").fetchall()
            for table in ("upserted_at_once", "upserted_a_few_at_a_time")
        ]
        replaced = at_once.get(conn, 2)

    assert in_both[0] == in_both[1]
    assert len(in_both[0]) == len({row.number for row in first + second})
    assert replaced is not None
    assert replaced.text == "second row 2: naïve  quoted 'text'"  # NUL dropped on the way in
    assert replaced.labels["nested"] == {"n": 2, "nul": "ab"}
    assert (replaced.words, replaced.counts, replaced.ids) == (
        ["second", "two {words}", 'a "quote"', "back\\slash", "ab"],
        [2, -2, 2**40],
        [uuid5(IDS, "second2")],
    )
