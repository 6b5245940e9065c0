"""Completion webhooks through real HTTP, to a receiver on loopback that checks every signature
with the Standard Webhooks package, as a tenant's receiver would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from domain.session import StepSpec
from engine.store.app import SessionRequest
from tests.api.conftest import Api, ApiFactory, shell_workflow
from tests.conftest import MASTER_KEY
from tests.waiting import eventually
from tests.webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def hook_url(receiver: Receiver) -> Iterator[str]:
    with receiver.serving() as url:
        yield url


@pytest.fixture
def api(start_api: ApiFactory) -> Api:
    started: Api = start_api(master_key=MASTER_KEY, webhook_first_retry_ms=50)
    return started


def secret_for(api: Api, who: str, receiver: Receiver) -> None:
    """The tenant makes its webhook secret and gives it to its receiver."""
    with api.client(who) as client:
        response = client.post("/v1/webhook-secret")
    assert response.status_code == 201, response.text
    receiver.secret = response.json()["secret"]
    assert receiver.secret.startswith("whsec_")


def hooked(url: str, *events: str, **extra: Any) -> dict[str, Any]:
    webhook = {"url": url, **({"events": list(events)} if events else {})}
    return shell_workflow("echo hello", webhook=webhook, **extra)


def created(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def test_a_completed_session_is_told_to_its_webhook_signed_with_the_tenants_secret(
    api: Api, receiver: Receiver, hook_url: str
) -> None:
    secret_for(api, "alice", receiver)
    with api.client("alice") as alice:
        session_id = created(alice, hooked(hook_url, labels={"team": "ops"}))
    [delivery] = eventually(receiver.got, "the webhook was delivered")
    assert delivery.verified
    assert delivery.payload["type"] == "session.completed"
    assert delivery.payload["data"]["session_id"] == session_id
    assert delivery.payload["data"]["labels"] == {"team": "ops"}
    assert delivery.payload["data"]["previous_status"] == "running"


def test_a_receiver_answering_500_three_times_gets_the_same_webhook_id_then_200(
    api: Api, receiver: Receiver, hook_url: str
) -> None:
    secret_for(api, "alice", receiver)
    receiver.answers = [500, 500, 500]
    with api.client("alice") as alice:
        session_id = created(alice, hooked(hook_url))
        got = eventually(lambda: [r for r in receiver.got() if r.answered == 200], "a 200")
        assert len(got) == 1
        assert [r.answered for r in receiver.got()] == [500, 500, 500, 200]
        assert {r.webhook_id for r in receiver.got()} == {got[0].webhook_id}
        assert all(r.verified for r in receiver.got())

        def delivered() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = alice.get(f"/v1/sessions/{session_id}/webhooks").json()[
                "items"
            ]
            return items if items and items[0]["state"] == "delivered" else []

        [logged] = eventually(delivered, "the delivery log says delivered")
    assert logged["webhook_id"] == got[0].webhook_id
    assert logged["event_type"] == "session.completed"
    assert [a["status_code"] for a in logged["attempts"]] == [500, 500, 500, 200]
    assert [a["attempt"] for a in logged["attempts"]] == [1, 2, 3, 4]


def test_a_webhook_given_up_on_is_an_event_in_the_sessions_log(
    start_api: ApiFactory, receiver: Receiver, hook_url: str
) -> None:
    # Retried for 3 s: a first attempt claimed later than that after the session ended (a
    # loaded machine) would be given up on at once, with no second attempt to count.
    api = start_api(master_key=MASTER_KEY, webhook_first_retry_ms=100, webhook_retry_for_s=3)
    secret_for(api, "alice", receiver)
    receiver.always = 503
    with api.client("alice") as alice:
        session_id = created(alice, hooked(hook_url))

        def given_up() -> list[dict[str, Any]]:
            events = alice.get(f"/v1/sessions/{session_id}/events").json()["items"]
            return [e for e in events if e["type"] == "WebhookDeliveryFailed"]

        [event] = eventually(given_up, "the webhook was given up on")
        log = alice.get(f"/v1/sessions/{session_id}/webhooks").json()["items"]
    assert event["data"]["error"]["code"] == "WEBHOOK_DELIVERY_FAILED"
    assert event["data"]["attempts"] == len(receiver.got()) >= 2
    assert log[0]["state"] == "failed"
    assert {a["status_code"] for a in log[0]["attempts"]} == {503}


def test_a_webhook_to_a_host_the_tenant_may_not_reach_is_refused(api: Api, hook_url: str) -> None:
    body = {
        "name": "public",
        "executor": "http",
        "base_url": "https://example.com",
        "steps": ["GET /"],
        "webhook": {"url": hook_url},
    }
    with api.client("mallory") as mallory:  # initech: the public internet only
        response = mallory.post("/v1/sessions", json=body)
        assert response.status_code == 422
        assert response.json()["code"] == "EGRESS_REFUSED"
        assert response.json()["details"]["rule"] == "loopback"
        assert mallory.get("/v1/sessions").json()["items"] == []


def test_the_sender_obeys_the_tenants_egress_too(
    api: Api, receiver: Receiver, hook_url: str
) -> None:
    """A session that reached the queue without admission (created in-process) is still
    never sent where its tenant may not connect."""
    secret_for(api, "mallory", receiver)
    request = SessionRequest(
        "hooked",
        [StepSpec("GET /nothing")],
        config={
            "executor": "http",
            "base_url": "https://example.invalid",
            "webhook": {"url": hook_url, "events": ["session.failed"]},
        },
    )
    session = api.services.runtime.app.create(request, tenant="initech", actor="test")
    with api.client("mallory") as mallory:

        def failed() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = mallory.get(f"/v1/sessions/{session.id}/webhooks").json()[
                "items"
            ]
            return items if items and items[0]["state"] == "failed" else []

        [logged] = eventually(failed, "the delivery was refused")
    assert [a["error"][:30] for a in logged["attempts"]] == ["loopback address 127.0.0.1 (of"]
    assert receiver.got() == []


def test_a_webhook_needs_the_tenants_signing_secret(api: Api, hook_url: str) -> None:
    with api.client("eve") as eve:
        response = eve.post("/v1/sessions", json=hooked(hook_url))
    assert response.status_code == 422
    assert response.json()["code"] == "WEBHOOK_SECRET_MISSING"
    assert "webhook-secret" in response.json()["suggested_action"]


def test_a_batchs_webhook_is_each_of_its_sessions(
    api: Api, receiver: Receiver, hook_url: str
) -> None:
    secret_for(api, "alice", receiver)
    body = {
        "sessions": [shell_workflow("true"), shell_workflow("echo 2")],
        "webhook": {"url": hook_url},
    }
    with api.client("alice") as alice:
        response = alice.post("/v1/batches", json=body)
    assert response.status_code == 201, response.text
    got = eventually(lambda: len(receiver.got()) == 2 and receiver.got(), "both delivered")
    assert {r.payload["data"]["session_id"] for r in got} == set(response.json()["session_ids"])


def test_another_tenant_reads_no_delivery_log(api: Api, receiver: Receiver, hook_url: str) -> None:
    secret_for(api, "alice", receiver)
    with api.client("alice") as alice:
        session_id = created(alice, hooked(hook_url))
    with api.client("eve") as eve:
        response = eve.get(f"/v1/sessions/{session_id}/webhooks")
    assert response.status_code == 404
