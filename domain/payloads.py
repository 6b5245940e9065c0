"""The JSON objects events carry, typed: what each key holds, as the events record it.

TypedDicts rather than classes, so the stored JSON and every reader's `payload["key"]` stay
as they were and the events recorded before these types load unchanged. Every key has been
written since each payload was first recorded: none is missing from an older event. Declared
in the order the keys are written, which is the order the API shows them in. (From
`typing_extensions`: pydantic reads these to publish the events, and on Python 3.11 it needs
that module's TypedDict.)
"""

from __future__ import annotations

from typing import Any, NotRequired

from typing_extensions import TypedDict


class ErrorPayload(TypedDict):
    """A StandardError as events record it (`StandardError.to_dict`): why a step, a command,
    a session or a webhook failed."""

    code: str
    message: str
    category: str
    """An ErrorCategory's value."""
    severity: str
    """An ErrorSeverity's value."""
    recoverable: bool
    retryable: bool
    suggested_action: str
    details: dict[str, Any]
    id: str
    timestamp: str
    """When the error was made, ISO 8601 to the millisecond."""
    module_id: str


class ReplayOf(TypedDict):
    """The session a replay does again, and whether it fails where the world has changed
    (`strict`) or goes on live from there."""

    session_id: str
    strict: bool


class ForkedFrom(TypedDict):
    """The session a fork carries its first steps over from: the source's `version` once the
    step before `step` completed, and the step the fork runs from."""

    session_id: str
    version: int
    step: int


class ArtifactRef(TypedDict):
    """A file a command or a check stored (a screenshot), by the SHA-256 of its bytes."""

    hash: str
    size: int
    """In bytes."""
    media_type: str
    kind: str
    """What it is: `screenshot`, `failure_screenshot`, `model_view` (what a model was shown)."""


class CompletedStep(TypedDict):
    """A step as its session completed it (or skipped it): what a fork takes over from its
    source."""

    summary: str
    evidence: list[str]
    skipped: NotRequired[bool]
    """Its `if:` was false in the source (only written then: these two are the keys not
    always there)."""
    expanded: NotRequired[int]
    """A loop in the source: how many steps its iterations put after it."""
    data: NotRequired[Any]
    """The data it extracted in the source (only written for a step that did)."""


class CarriedStep(TypedDict):
    """A fork's step completed (or skipped) in its source, as the fork records it."""

    step_index: int
    summary: str
    evidence: list[str]
    skipped: NotRequired[bool]
    expanded: NotRequired[int]
    data: NotRequired[Any]
