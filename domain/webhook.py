"""Completion webhooks: what a session's `webhook` may ask to be told about.

A webhook event is a session reaching a status: `session.<status>`. Whether it happened is the
status rule's to say (`domain.session.status_after`), so a status the rule learns is an event
a webhook may name.
"""

from __future__ import annotations

from typing import Literal, get_args

from domain.session import SessionStatus

WebhookEvent = Literal[
    "session.running",
    "session.paused",
    "session.waiting",
    "session.completed",
    "session.failed",
    "session.cancelled",
    "session.expired",
]
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEvent)
"""Every event a webhook may ask for; `session.waiting` is sent once sessions can wait."""

DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("session.completed", "session.failed")


def event_name(status: SessionStatus) -> str:
    """The webhook event of reaching `status`."""
    return f"session.{status.value}"
