"""How `serve` shares its slots out among its worker processes."""

from __future__ import annotations

import pytest

from api.http.worker_processes import shares


@pytest.mark.parametrize(
    ("slots", "processes", "expected"),
    [(10, 1, [10]), (10, 3, [4, 3, 3]), (2, 4, [1, 1]), (7, 7, [1] * 7)],
)
def test_the_slots_are_shared_out_evenly_and_no_process_is_left_without_one(
    slots: int, processes: int, expected: list[int]
) -> None:
    assert shares(slots, processes) == expected
    assert sum(shares(slots, processes)) == slots
