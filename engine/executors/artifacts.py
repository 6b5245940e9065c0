"""Artifacts: files a session produced (browser screenshots), stored by content.

An artifact is written once under `STEPLINE_DATA_DIR/artifacts/<session id>/` and named by the
SHA-256 of its bytes; events refer to it by that hash, its size and media type, never inline.
The same bytes written twice by a session are one file; each session keeps its own, so erasing
one session deletes its files and never another's. (Before, every session's were in
`artifacts/` itself: those are still found there.) Whoever serves an artifact checks first that
the session asking recorded it: a hash is not a capability.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

from domain.payloads import ArtifactRef

HASH = re.compile(r"^[0-9a-f]{64}$")


class Artifacts:
    def __init__(self, directory: Path, earlier: Path | None = None) -> None:
        self.directory = directory
        self.earlier = earlier
        """Where artifacts were kept before (all sessions together), looked in second."""

    def put(self, content: bytes, media_type: str, kind: str) -> ArtifactRef:
        digest = hashlib.sha256(content).hexdigest()
        target = self.directory / digest
        if not target.exists():
            self._write_atomically(target, content)
        return {"hash": digest, "size": len(content), "media_type": media_type, "kind": kind}

    def path(self, digest: str) -> Path | None:
        """The file of an artifact, or None if the hash is malformed or unknown."""
        if not HASH.fullmatch(digest):
            return None
        for directory in (self.directory, self.earlier):
            if directory is not None and (directory / digest).is_file():
                return directory / digest
        return None

    def delete(self, digests: Iterable[str]) -> None:
        """Delete these artifacts' files, then the session's directory if nothing is left."""
        for digest in digests:
            path = self.path(digest)
            if path is not None:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # absent, or not empty
            self.directory.rmdir()

    def _write_atomically(self, target: Path, content: bytes) -> None:
        """Readers never see half a file: write beside it, then rename."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(content)
            os.chmod(temporary, 0o644)  # the API may run as another user
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def artifacts_of(settings_data_dir: Path, session_id: UUID) -> Artifacts:
    """The artifacts of one session."""
    root = settings_data_dir / "artifacts"
    return Artifacts(root / str(session_id), earlier=root)
