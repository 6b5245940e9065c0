"""Completion webhooks: a delivery queue in PostgreSQL, sent signed, retried, every attempt kept.

The `webhook_outbox` view queues a delivery when a session with a webhook reaches a status the
webhook names (one row per webhook-id, so a replayed view queues nothing twice). Every process
with workers sends: it claims due deliveries with `FOR UPDATE SKIP LOCKED` (so no two send the
same attempt), records the attempt, POSTs the body signed per the Standard Webhooks
specification with the tenant's secret, and records the answer. A delivery not answered with a
2xx is tried again later, each wait twice the one before (from
STEPLINE_WEBHOOK_FIRST_RETRY_MS, at most an hour apart), until STEPLINE_WEBHOOK_RETRY_FOR_S
after it was queued; then it is given up on, which is recorded in the session's log
(`WebhookDeliveryFailed`). A sender that dies mid-attempt leaves the delivery claimed until its
claim runs out, then another sends it again: at least once, always with the same webhook-id.

Every connection obeys the tenant's egress policy, as the executors' do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import Connection
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from domain.errors import DomainError, StandardError
from domain.tenant import Policy
from engine.executors.http import tls_context
from engine.live.follower import Running, run_when_woken
from engine.logs import LOGGER_NAME, on_session
from engine.store.app import Stepline
from engine.tenancy.egress import (
    EgressPolicy,
    EgressRefused,
    Refusal,
    checked_transport,
    host_name,
    literal_address,
    resolve,
)
from engine.tenancy.secret_store import WEBHOOK_SECRET_PREFIX, SecretStore

log = logging.getLogger(LOGGER_NAME)

MAX_RETRY_DELAY_S = 3_600.0
CLAIM_MARGIN_S = 30.0
"""How long past its timeout a claimed attempt is left to its sender before another takes it."""
CLAIM_BATCH = 20
ANSWER_CHARS = 500
"""Of a receiver's answer to a failed attempt, what the attempt's row keeps."""


class WebhookRefused(DomainError):
    """A webhook to a host the tenant's egress policy does not let it reach."""

    code = "EGRESS_REFUSED"


# ---- signing (Standard Webhooks) ---------------------------------------------------------


def signature(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256>` of `id.timestamp.body` under the secret's key (the bytes
    that `whsec_<base64>` names)."""
    key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, webhook_id: str, body: str, timestamp: int) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "Stepline-Webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


# ---- the egress check at creation ---------------------------------------------------------


def refusal_at_creation(policy: EgressPolicy, url: str) -> Refusal | None:
    """Why the webhook's host may not be reached, when that is known without asking DNS: a
    host no allow-list entry names, an address, or `localhost`. A name that resolves is
    decided on when each attempt connects."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
    refusal = policy.refusal_before_lookup(host, port)
    if refusal is not None:
        return refusal
    named = host_name(host)
    if literal_address(named) is None and named != "localhost" and not named.endswith(".localhost"):
        return None
    verdict = policy.decide(host, port, resolve(host, port))
    return verdict if isinstance(verdict, Refusal) else None


def check_webhook_reachable(policy: EgressPolicy, url: str) -> None:
    refusal = refusal_at_creation(policy, url)
    if refusal is not None:
        raise WebhookRefused(
            f"webhook: {refusal.message}",
            field="webhook.url",
            host=refusal.host,
            port=refusal.port,
            address=refusal.address,
            rule=refusal.rule,
        )


# ---- the queue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    session_id: UUID
    tenant: str
    event_type: str
    url: str
    body: str
    created_at: datetime
    attempts: int
    """Including the one just claimed."""
    claimed_at: datetime


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    duration_ms: int
    final: bool = False
    """Not worth trying again (the tenant may not reach the host)."""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_CLAIM = """
WITH due AS (
    SELECT webhook_id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + %(claim)s
FROM due WHERE d.webhook_id = due.webhook_id
RETURNING d.webhook_id, d.session_id, d.tenant, d.event_type, d.url, d.body, d.created_at,
          d.attempts, now() AS claimed_at
"""


def retry_delay_s(attempts: int, first_retry_s: float) -> float:
    """The wait before the next attempt, after `attempts` have failed: doubling, capped."""
    return float(min(first_retry_s * 2 ** (attempts - 1), MAX_RETRY_DELAY_S))


class WebhookSender:
    """Sends the due deliveries of every tenant; any number of processes may run one."""

    def __init__(
        self,
        app: Stepline,
        pool: ConnectionPool,
        secret_store: SecretStore,
        policy_of: Callable[[str], Policy],
        *,
        timeout_s: float,
        first_retry_s: float,
        retry_for_s: float,
    ) -> None:
        self.app = app
        self.pool = pool
        self.secret_store = secret_store
        self.policy_of = policy_of
        self.timeout_s = timeout_s
        self.first_retry_s = first_retry_s
        self.retry_for = timedelta(seconds=retry_for_s)

    def once(self) -> int:
        """Attempt every delivery due now; how many were attempted."""
        attempted = 0
        while deliveries := self._claim():
            for delivery in deliveries:
                self._deliver(delivery)
            attempted += len(deliveries)
        return attempted

    def start(self, wake: threading.Event, every_s: float = 1.0) -> Running:
        """Send in a thread of its own whenever `wake` is set (a delivery may have been
        queued) and at least every `every_s` (a retry may be due)."""
        return run_when_woken("webhooks", self._once_quietly, wake, every_s)

    def _once_quietly(self) -> None:
        try:
            self.once()
        except (psycopg.Error, PersistenceError):
            log.warning("Could not send webhooks (database unavailable); retrying")
        except Exception:
            log.exception("Sending webhooks failed; trying again later")

    def _claim(self) -> list[Delivery]:
        claim = timedelta(seconds=self.timeout_s + CLAIM_MARGIN_S)
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=class_row(Delivery)) as cursor,
        ):
            claimed = cursor.execute(_CLAIM, {"limit": CLAIM_BATCH, "claim": claim}).fetchall()
            for delivery in claimed:
                conn.execute(
                    "INSERT INTO webhook_attempts (webhook_id, attempt, started_at) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (delivery.webhook_id, delivery.attempts, delivery.claimed_at),
                )
            return claimed

    def _deliver(self, delivery: Delivery) -> None:
        attempt = self._attempt(delivery)
        if attempt.delivered:
            self._record(delivery, attempt, state="delivered")
            return
        delay = retry_delay_s(delivery.attempts, self.first_retry_s)
        next_at = delivery.claimed_at + timedelta(seconds=delay)
        if attempt.final or next_at > delivery.created_at + self.retry_for:
            self._give_up(delivery, attempt)
            return
        self._record(delivery, attempt, state="pending", next_attempt_in=delay)

    def _attempt(self, delivery: Delivery) -> Attempt:
        secret = self.secret_store.webhook_secret(delivery.tenant)
        if secret is None:
            return Attempt(
                None, "the tenant has no webhook secret (stepline keys webhook-secret)", 0
            )
        policy = EgressPolicy.of(self.policy_of(delivery.tenant).egress_allow)
        headers = signed_headers(secret, delivery.webhook_id, delivery.body, int(time.time()))
        started = time.monotonic()
        try:
            status, answer = self._post(delivery, headers, policy)
        except EgressRefused as refused:
            return Attempt(None, str(refused), _ms_since(started), final=True)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return Attempt(None, f"{type(error).__name__}: {error}", _ms_since(started))
        return Attempt(status, answer, _ms_since(started))

    def _post(
        self, delivery: Delivery, headers: dict[str, str], policy: EgressPolicy
    ) -> tuple[int, str | None]:
        """The receiver's status, and the start of its answer if not a 2xx (a receiver
        cannot fill the sender's memory: the rest is not read)."""
        with (
            httpx.Client(
                transport=checked_transport(policy, tls_context()),
                timeout=self.timeout_s,
                trust_env=False,
            ) as client,
            client.stream("POST", delivery.url, content=delivery.body, headers=headers) as response,
        ):
            if response.is_success:
                return response.status_code, None
            start = b""
            for chunk in response.iter_bytes():
                start += chunk
                if len(start) >= ANSWER_CHARS:
                    break
            return response.status_code, start[:ANSWER_CHARS].decode(errors="replace") or None

    def _record(
        self, delivery: Delivery, attempt: Attempt, *, state: str, next_attempt_in: float = 0
    ) -> None:
        with self.pool.connection() as conn, conn.transaction():
            _record_attempt(conn, delivery, attempt)
            conn.execute(
                "UPDATE webhook_deliveries SET state = %s, "
                "next_attempt_at = now() + %s, finished_at = CASE WHEN %s = 'pending' THEN NULL "
                "ELSE now() END WHERE webhook_id = %s",
                (state, timedelta(seconds=next_attempt_in), state, delivery.webhook_id),
            )

    def _give_up(self, delivery: Delivery, attempt: Attempt) -> None:
        """Recorded in the session's log first: a crash before the row is marked sends once
        more, rather than losing the record that it failed."""
        reason = attempt.error or f"answered {attempt.status_code}"
        error = StandardError.of(
            "WEBHOOK_DELIVERY_FAILED",
            f"{delivery.event_type} to {delivery.url} was not delivered after "
            f"{delivery.attempts} attempts; the last: {reason}",
            {"status_code": attempt.status_code},
        )
        self.app.record_webhook_failure(
            delivery.session_id,
            webhook_id=delivery.webhook_id,
            event_type=delivery.event_type,
            url=delivery.url,
            attempts=delivery.attempts,
            error=error.to_dict(),
        )
        self._record(delivery, attempt, state="failed")
        log.warning(
            "Webhook %s given up on", delivery.webhook_id, extra=on_session(delivery.session_id)
        )


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _record_attempt(conn: Connection[Any], delivery: Delivery, attempt: Attempt) -> None:
    conn.execute(
        "UPDATE webhook_attempts SET duration_ms = %s, status_code = %s, error = %s "
        "WHERE webhook_id = %s AND attempt = %s",
        (
            attempt.duration_ms,
            attempt.status_code,
            attempt.error,
            delivery.webhook_id,
            delivery.attempts,
        ),
    )


# ---- the delivery log ---------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    started_at: datetime
    duration_ms: int | None
    """None: no answer was recorded (in flight, or its sender stopped)."""
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class DeliveryRow:
    webhook_id: str
    event_type: str
    url: str
    state: str
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[AttemptRow]


def deliveries_of(conn: Connection[Any], session_id: UUID) -> list[DeliveryRow]:
    """The session's webhooks, oldest first, each with every attempt."""
    rows = conn.execute(
        "SELECT webhook_id, event_type, url, state, created_at, "
        "CASE WHEN state = 'pending' THEN next_attempt_at END, finished_at "
        "FROM webhook_deliveries WHERE session_id = %s ORDER BY created_at, webhook_id",
        (session_id,),
    ).fetchall()
    by_delivery: dict[str, list[AttemptRow]] = {row[0]: [] for row in rows}
    for webhook_id, *fields in conn.execute(
        "SELECT webhook_id, attempt, started_at, duration_ms, status_code, error "
        "FROM webhook_attempts WHERE webhook_id = ANY(%s) ORDER BY webhook_id, attempt",
        (list(by_delivery),),
    ).fetchall():
        by_delivery[webhook_id].append(AttemptRow(*fields))
    return [
        DeliveryRow(
            webhook_id=webhook_id,
            event_type=event_type,
            url=url,
            state=state,
            created_at=created_at,
            next_attempt_at=next_attempt_at,
            finished_at=finished_at,
            attempts=by_delivery[webhook_id],
        )
        for webhook_id, event_type, url, state, created_at, next_attempt_at, finished_at in rows
    ]
