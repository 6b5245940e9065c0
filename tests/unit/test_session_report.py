"""A report's screenshots: inlined while they fit, each left out named with the reason."""

from __future__ import annotations

import base64
from pathlib import Path

from api.http.session_report import MAX_SHOT_BYTES, Budget, inlined
from engine.executors.artifacts import Artifacts

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_a_screenshot_that_fits_is_inlined_and_taken_from_the_budget(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path)
    ref = artifacts.put(PNG, "image/png", "screenshot")
    budget = Budget(len(PNG) + 10)

    shot = inlined(ref, "shot", artifacts, budget)

    assert shot.src == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert (shot.left_out, budget.left) == (None, 10)


def test_a_screenshot_past_the_reports_budget_is_left_out_saying_so(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path)
    ref = artifacts.put(PNG, "image/png", "screenshot")

    shot = inlined(ref, "shot", artifacts, Budget(len(PNG) - 1))

    assert shot.src is None
    assert shot.left_out == "left out: the report holds 40,000,000 bytes of images"


def test_a_screenshot_over_the_limit_of_one_is_left_out_saying_so(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path)
    ref = artifacts.put(PNG + bytes(MAX_SHOT_BYTES), "image/png", "screenshot")

    shot = inlined(ref, "shot", artifacts, Budget(10 * MAX_SHOT_BYTES))

    assert shot.src is None
    assert (
        shot.left_out
        == f"left out: {MAX_SHOT_BYTES + len(PNG):,} bytes, over 5,000,000 per screenshot"
    )


def test_what_is_not_an_image_or_not_here_is_not_inlined(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path)
    page = artifacts.put(b"<script>alert(1)</script>", "text/html", "screenshot")
    gone = artifacts.put(PNG, "image/png", "screenshot")
    artifacts.delete([gone["hash"]])
    budget = Budget(1_000_000)

    assert inlined(page, "page", artifacts, budget).left_out == (
        "not inlined: a text/html is not an image"
    )
    assert inlined(gone, "gone", artifacts, budget).left_out == (
        "not inlined: its file is not on this server"
    )
    assert budget.left == 1_000_000
