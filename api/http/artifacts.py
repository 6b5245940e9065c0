"""GET /v1/sessions/{id}/artifacts/{hash}: a file the session stored, to its own tenant only.

The session must have recorded the hash in one of its events: knowing a hash is not enough to
read another session's screenshot.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.http.errors import problem_responses
from api.http.services import CallerDep, Services, ServicesDep
from api.http.sessions import owned_session
from domain.errors import ArtifactNotFound
from domain.payloads import ArtifactRef
from domain.session import stored_artifacts
from engine.executors.artifacts import HASH, artifacts_of

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


def recorded_artifact(services: Services, session_id: UUID, digest: str) -> ArtifactRef:
    """The session's record of the artifact; ArtifactNotFound if it recorded none such."""
    for event in services.runtime.app.history(session_id):
        for artifact in stored_artifacts(event):
            if artifact.get("hash") == digest:
                return artifact
    raise ArtifactNotFound(f"session {session_id} stored no artifact {digest}", hash=digest)


def artifact_file(
    services: Services, session_id: UUID, tenant: str, digest: str
) -> tuple[FilePath, str]:
    owned_session(services, session_id, tenant)
    artifact = recorded_artifact(services, session_id, digest)
    path = artifacts_of(FilePath(services.runtime.settings.data_dir), session_id).path(digest)
    if path is None:  # recorded, but its file is not (or no longer) on this server
        raise ArtifactNotFound(f"the file of artifact {digest} is not on this server", hash=digest)
    return path, str(artifact.get("media_type", "application/octet-stream"))


@router.get(
    "/{session_id}/artifacts/{digest}",
    operation_id="getSessionArtifact",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the artifact's bytes (a screenshot)",
        },
        **problem_responses(401, 404, 422),
    },
)
async def get_artifact(
    session_id: UUID,
    digest: Annotated[str, Path(pattern=HASH.pattern, description="its SHA-256, as recorded")],
    services: ServicesDep,
    caller: CallerDep,
) -> FileResponse:
    """A screenshot (or other artifact) the session recorded, by its SHA-256."""
    path, media_type = await run_in_threadpool(
        artifact_file, services, session_id, caller.tenant, digest
    )
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "private, max-age=86400, immutable"}
    )
