"""The commands of a session, each with its result: every `CommandIssued` paired with the
`CommandFinished` that has its command id.

A session runs one command at a time and records each result once, so in a session's log a
command's result is the next command event after its issue; a caller that walks the events
may take each command, with its result, where it was issued.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.session import WorkflowSession


@dataclass(frozen=True)
class Action:
    """A command issued, and its result if one is among the events (none yet: it is running,
    or its owner stopped before the result, which a takeover records as interrupted)."""

    issued: WorkflowSession.CommandIssued
    finished: WorkflowSession.CommandFinished | None = None


def actions_of(events: Iterable[WorkflowSession.Event]) -> dict[str, Action]:
    """The commands issued among `events`, by command id in the order issued, each with its
    result. A result whose command was issued before `events` begin is left out."""
    actions: dict[str, Action] = {}
    for event in events:
        if isinstance(event, WorkflowSession.CommandIssued):
            actions[event.command_id] = Action(event)
        elif isinstance(event, WorkflowSession.CommandFinished) and event.command_id in actions:
            actions[event.command_id] = Action(actions[event.command_id].issued, event)
    return actions
