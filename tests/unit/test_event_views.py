"""A session's events as the API shows them, including payloads older or odder than their type."""

from __future__ import annotations

from uuid import uuid4

from api.http.event_views import AnyEventView, event_view
from domain.errors import StandardError
from domain.session import StepSpec, WorkflowSession


def failed_step(error: dict[str, object]) -> WorkflowSession.Event:
    """A StepFailed with `error` as given, as an older or other writer may have recorded it."""
    session = WorkflowSession.create(
        session_id=uuid4(), name="w", steps=[StepSpec("GET /")], tenant="acme", actor="test"
    )
    session.start_step(0)
    session.fail_step(0, error=error, retryable=False)  # type: ignore[arg-type]
    return session.collect_events()[-1]


def test_a_payload_of_its_type_is_shown_typed() -> None:
    error = StandardError.of("HTTP_STATUS_ERROR", "404").to_dict()
    view = event_view(failed_step(dict(error)))
    assert not isinstance(view, AnyEventView)
    assert view.model_dump(mode="json")["data"]["error"] == error


def test_a_payload_with_a_key_missing_or_one_more_is_shown_as_recorded() -> None:
    for error in (
        {"code": "X", "message": "partial"},
        {**StandardError.of("X", "m").to_dict(), "new": 1},
    ):
        view = event_view(failed_step(error))
        assert isinstance(view, AnyEventView)
        assert view.model_dump(mode="json")["data"]["error"] == error
        assert view.type == "StepFailed"
