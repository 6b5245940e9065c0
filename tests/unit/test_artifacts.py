"""Each session keeps its artifacts' files: erasing one never deletes another's, even when
both stored the same bytes."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

from engine.executors.artifacts import artifacts_of

SCREENSHOT = b"\x89PNG the same login page, taken by two sessions"


def test_deleting_one_sessions_artifacts_leaves_anothers_identical_file(tmp_path: Path) -> None:
    first, second = artifacts_of(tmp_path, uuid4()), artifacts_of(tmp_path, uuid4())
    digest = first.put(SCREENSHOT, "image/png", "screenshot")["hash"]
    assert second.put(SCREENSHOT, "image/png", "screenshot")["hash"] == digest

    first.delete([digest])

    assert first.path(digest) is None
    assert not first.directory.exists()  # nothing of the erased session is left
    kept = second.path(digest)
    assert kept is not None
    assert kept.read_bytes() == SCREENSHOT


def test_artifacts_stored_before_they_were_per_session_are_still_found(tmp_path: Path) -> None:
    earlier = tmp_path / "artifacts" / ("ab" * 32)
    earlier.parent.mkdir()
    earlier.write_bytes(SCREENSHOT)

    assert artifacts_of(tmp_path, uuid4()).path("ab" * 32) == earlier
