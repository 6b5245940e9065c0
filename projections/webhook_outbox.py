"""webhook_outbox: each session with a webhook, and the deliveries its status changes queue.

A session created with a `webhook` in its config is followed here (its status by the status
rule, `status_after`); each time it reaches a status its webhook names, a delivery is queued
in `webhook_deliveries` (engine.webhooks sends it), in the same transaction as the view's
position. The delivery's webhook-id is derived from the session and the event's version, and
inserting it again adds nothing: replaying or rebuilding this view queues no webhook twice.
The queue itself is not this view's table, so a rebuild keeps it and its history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from psycopg import Connection

from domain.session import SessionStatus, status_after
from domain.session import WorkflowSession as W
from domain.webhook import WEBHOOK_EVENTS, event_name
from projections.view import Recorded, RowTable, SessionLog, erasures

_WEBHOOK_IDS = uuid.UUID("0d7c4a55-2b9e-4b8e-9a53-6f2f1c3e7d10")


@dataclass
class Subscription:
    session_id: UUID
    tenant: str
    name: str
    labels: dict[str, str]
    url: str
    events: list[str]
    status: str
    started: bool
    version: int


@dataclass(frozen=True)
class Outgoing:
    """A delivery to queue."""

    webhook_id: str
    session_id: UUID
    tenant: str
    event_type: str
    url: str
    body: str


def webhook_id_of(session_id: UUID, version: int) -> str:
    """The webhook-id of what the session's event at `version` tells: stable across retries
    and replays, so a receiver can tell a delivery it already had."""
    return "msg_" + uuid.uuid5(_WEBHOOK_IDS, f"{session_id}:{version}").hex


def subscription_of(event: W.Created) -> tuple[str, list[str]] | None:
    """The webhook's URL and events, from the session's config (None: it has no webhook)."""
    webhook = event.config.get("webhook")
    if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str):
        return None
    events = [e for e in webhook.get("events") or () if e in WEBHOOK_EVENTS]
    return webhook["url"], events


def body_of(row: Subscription, recorded: Recorded, previous: str) -> str:
    """What the receiver gets: the Standard Webhooks shape, `type`, `timestamp`, `data`."""
    error = getattr(recorded.event, "error", None)
    data = {
        "session_id": str(row.session_id),
        "name": row.name,
        "status": row.status,
        "previous_status": previous,
        "version": recorded.event.originator_version,
        "labels": row.labels,
        "error": None
        if not isinstance(error, dict)
        else {"code": error.get("code"), "message": error.get("message")},
    }
    payload = {
        "type": event_name(SessionStatus(row.status)),
        "timestamp": recorded.at.isoformat(),
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"))


def fold(
    rows: dict[UUID, Subscription], batch: Sequence[Recorded]
) -> tuple[set[UUID], list[Outgoing]]:
    """The subscriptions changed and the deliveries to queue."""
    changed: set[UUID] = set()
    outgoing: list[Outgoing] = []
    for recorded in batch:
        event, session_id = recorded.event, recorded.session_id
        row = rows.get(session_id)
        if isinstance(event, W.Created):
            subscribed = subscription_of(event)
            if row is None and subscribed is not None:
                rows[session_id] = Subscription(
                    session_id=session_id,
                    tenant=event.tenant,
                    name=event.name,
                    labels=event.labels,
                    url=subscribed[0],
                    events=subscribed[1],
                    status=SessionStatus.PENDING.value,
                    started=False,
                    version=event.originator_version,
                )
                changed.add(session_id)
            continue
        if row is None or event.originator_version <= row.version:
            continue
        previous, was_started = row.status, row.started
        row.status = status_after(event, SessionStatus(previous), row.started).value
        row.started = row.started or isinstance(event, W.StepStarted)
        row.version = event.originator_version
        if (row.status, row.started) == (previous, was_started):
            continue  # written with the next change: replaying up to it decides the same
        changed.add(session_id)
        kind = event_name(SessionStatus(row.status))
        if row.status != previous and kind in row.events:
            outgoing.append(
                Outgoing(
                    webhook_id=webhook_id_of(session_id, row.version),
                    session_id=session_id,
                    tenant=row.tenant,
                    event_type=kind,
                    url=row.url,
                    body=body_of(row, recorded, previous),
                )
            )
    return changed, outgoing


class WebhookOutboxView:
    name: ClassVar[str] = "webhook_outbox"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("webhook_subscriptions",)
    rows = RowTable("webhook_subscriptions", Subscription, key=("session_id",), carried=True)

    def create(self, conn: Connection[Any]) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS webhook_subscriptions (
                session_id uuid PRIMARY KEY,
                tenant text NOT NULL,
                name text NOT NULL,
                labels jsonb NOT NULL,
                url text NOT NULL,
                events text[] NOT NULL,
                status text NOT NULL,
                started boolean NOT NULL,
                version integer NOT NULL
            )
            """
        )

    def apply(self, conn: Connection[Any], batch: Sequence[Recorded], log: SessionLog) -> None:
        touched = [r for r in batch if isinstance(r.event, W.Event)]
        if not touched:
            return
        followed = {
            row.session_id: row
            for row in self.rows.load_for_sessions(conn, {r.session_id for r in touched})
        }
        changed, outgoing = fold(followed, touched)
        self.rows.upsert(conn, (followed[i] for i in changed))
        _queue(conn, outgoing)
        erased = [r.session_id for r in erasures(batch)]
        if erased:  # their deliveries carry the session's name, labels and error: gone too
            self.rows.delete_sessions(conn, erased)
            conn.execute("DELETE FROM webhook_deliveries WHERE session_id = ANY(%s)", (erased,))


def _queue(conn: Connection[Any], outgoing: list[Outgoing]) -> None:
    if not outgoing:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO webhook_deliveries "
            "(webhook_id, session_id, tenant, event_type, url, body) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (webhook_id) DO NOTHING",
            [(o.webhook_id, o.session_id, o.tenant, o.event_type, o.url, o.body) for o in outgoing],
        )
