"""A session's events as the API shows them: one model per event class of WorkflowSession,
made from that class's own fields, so an event added to the aggregate is published (and typed
in a generated client) with no code here. The OpenAPI lists them as `SessionEvent`, a union
discriminated by `type`: the event class's name.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from api.http.named_schemas import Named
from domain.session import WorkflowSession
from projections.audit_log import describe

ENVELOPE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "actor"}
"""An event's fields the view shows outside `data` (or, the aggregate's bookkeeping, not at all)."""


class EventView(BaseModel):
    """What every event shows; `data` (its own fields) depends on its `type`."""

    version: int
    type: str
    timestamp: datetime
    actor: str | None
    description: str = Field(description="what happened, in a short sentence, as in the audit")


class AnyEventView(EventView):
    """An event read by a client that may not know its type (a server newer than itself)."""

    data: dict[str, Any]


def session_event_classes() -> list[type[WorkflowSession.Event]]:
    """The events the aggregate declares, in the order it declares them."""
    return [
        member
        for member in vars(WorkflowSession).values()
        if isinstance(member, type)
        and issubclass(member, WorkflowSession.Event)
        and member is not WorkflowSession.Event
    ]


def _data_model(event_class: type[WorkflowSession.Event]) -> type[BaseModel]:
    """The event's own fields (as its class declares them, upcast to the latest version)."""
    hints = get_type_hints(event_class)
    fields: dict[str, Any] = {
        field.name: (hints[field.name], ...)
        for field in dataclasses.fields(event_class)
        if field.name not in ENVELOPE_FIELDS
    }
    return create_model(
        f"{event_class.__name__}EventData",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"The fields of a `{event_class.__name__}` event.",
        **fields,
    )


def _view_model(event_class: type[WorkflowSession.Event]) -> type[EventView]:
    name = event_class.__name__
    fields: dict[str, Any] = {
        "type": (Literal[name], ...),
        "data": (_data_model(event_class), ...),
    }
    return create_model(
        f"{name}Event",
        __base__=EventView,
        __doc__=_docstring(event_class) or f"A session's `{name}` event.",
        **fields,
    )


def _docstring(event_class: type[WorkflowSession.Event]) -> str | None:
    """The class's own docstring: not one `dataclass` made of its signature."""
    doc = event_class.__doc__
    return None if doc is None or doc.startswith(f"{event_class.__name__}(") else doc


VIEWS: dict[type[WorkflowSession.Event], type[EventView]] = {
    event_class: _view_model(event_class) for event_class in session_event_classes()
}


if TYPE_CHECKING:
    SessionEvent = EventView
else:
    SessionEvent = Annotated[
        Union[tuple(VIEWS.values())],  # noqa: UP007  (built from a tuple)
        Field(discriminator="type"),
        Named("SessionEvent"),
    ]


def _data(event: WorkflowSession.Event, fields: dict[str, Any]) -> dict[str, Any]:
    if isinstance(event, WorkflowSession.Redacted):  # what is left of an erased session's event
        return {"event_type": event.event_type}
    return {k: v for k, v in fields.items() if k not in ENVELOPE_FIELDS}


def event_view(event: WorkflowSession.Event) -> EventView:
    """The event as the API shows it: its actor apart, its own fields as `data`. An event whose
    fields do not fit its type's view (written by a version that recorded a payload otherwise)
    is shown as it was recorded: reading the log never fails on what the log holds."""
    fields = vars(event)
    view = {
        "version": event.originator_version,
        "type": type(event).__name__,
        "timestamp": event.timestamp,
        "actor": fields.get("actor"),
        "description": describe(event),
        "data": _data(event, fields),
    }
    try:
        return VIEWS[type(event)].model_validate(view)
    except ValidationError:
        return AnyEventView.model_validate(view)
