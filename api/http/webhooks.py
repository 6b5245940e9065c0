"""Completion webhooks: the tenant's signing secret, and each session's delivery log.

    POST /v1/webhook-secret                 make (or replace) the secret; shown this once
    GET  /v1/sessions/{session_id}/webhooks every webhook about the session, every attempt

A session (or a batch, or a schedule) asks for webhooks with `webhook: {"url", "events"}`;
engine.webhooks queues, signs, sends and retries them.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from api.http.errors import problem_responses
from api.http.schemas import WebhookDeliveryList, WebhookDeliveryView, WebhookSecretCreated
from api.http.services import CallerDep, ServicesDep
from api.http.sessions import owned_session
from engine.webhooks import deliveries_of

router = APIRouter(tags=["webhooks"])


@router.post(
    "/v1/webhook-secret",
    operation_id="createWebhookSecret",
    status_code=201,
    response_model=WebhookSecretCreated,
    responses=problem_responses(401, 422, 503),
)
def create_secret(services: ServicesDep, caller: CallerDep) -> WebhookSecretCreated:
    """Make the tenant's webhook signing secret (replacing any before): give it to your
    receiver, which verifies every delivery with it. It is not shown again."""
    return WebhookSecretCreated(
        secret=services.runtime.secret_store.new_webhook_secret(caller.tenant)
    )


@router.get(
    "/v1/sessions/{session_id}/webhooks",
    operation_id="listSessionWebhooks",
    response_model=WebhookDeliveryList,
    responses=problem_responses(401, 404, 422),
)
def session_webhooks(
    session_id: UUID, services: ServicesDep, caller: CallerDep
) -> WebhookDeliveryList:
    """Every webhook about the session, oldest first, with every attempt and its answer."""
    owned_session(services, session_id, caller.tenant)
    services.read_your_writes()
    with services.runtime.projector.pool.connection() as conn:
        rows = deliveries_of(conn, session_id)
    return WebhookDeliveryList(
        items=[WebhookDeliveryView.model_validate(row, from_attributes=True) for row in rows]
    )
