"""Approvals and signals over HTTP: who may answer a waiting session, what a signal may carry."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Api, ApiFactory
from tests.waiting import eventually


def waiting_session(client: httpx.Client, target: str, *steps: str) -> str:
    """A session created and run until it waits."""
    body = {"name": "payment", "executor": "http", "base_url": target, "steps": list(steps)}
    created = client.post("/v1/sessions", json=body)
    assert created.status_code == 201, created.text
    session_id: str = created.json()["session_id"]
    eventually(lambda: status_of(client, session_id) == "waiting", "the session waits")
    return session_id


def status_of(client: httpx.Client, session_id: str) -> str:
    status: str = client.get(f"/v1/sessions/{session_id}").json()["status"]
    return status


def test_a_waiting_session_says_what_it_waits_for_and_until_when(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice:
        session_id = waiting_session(alice, target, "wait for approval: Pay? within 2h")
        session = alice.get(f"/v1/sessions/{session_id}").json()
        listed = alice.get("/v1/sessions", params={"status": "waiting"}).json()["items"]

    assert session["waiting_for"] == "approval: Pay?"
    assert session["due_at"] is not None
    assert [(s["session_id"], s["waiting_for"]) for s in listed] == [(session_id, "approval: Pay?")]


def test_only_the_tenant_of_a_session_may_answer_it(start_api: ApiFactory, target: str) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice, api.client("eve") as eve:
        session_id = waiting_session(alice, target, "wait for approval", "GET /effects")
        for path in ("approve", "reject", "signals/paid"):
            answer = eve.post(f"/v1/sessions/{session_id}/{path}", json={})
            assert answer.status_code == 404, (path, answer.text)
        assert status_of(alice, session_id) == "waiting"


def test_approving_a_session_that_waits_for_no_approval_is_a_conflict(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice:
        session_id = waiting_session(alice, target, 'wait for signal "paid"', "GET /effects")
        answer = alice.post(f"/v1/sessions/{session_id}/approve", json={"comment": "ok"})

    assert answer.status_code == 409
    assert answer.json()["code"] == "INVALID_STATE_TRANSITION"
    assert "waits for signal paid" in answer.json()["message"]


def test_a_signal_sent_early_is_kept_until_the_step_waits_for_it(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2)
    with api.client("alice") as alice:
        session_id = waiting_session(
            alice, target, "wait for approval", 'wait for signal "paid"', "GET /effects"
        )
        early = alice.post(f"/v1/sessions/{session_id}/signals/paid", json={"ref": "PAY-1"})
        alice.post(f"/v1/sessions/{session_id}/approve", json={})
        eventually(lambda: status_of(alice, session_id) == "completed", "the session completes")

    assert early.status_code == 200, early.text
    assert (early.json()["taken"], early.json()["status"]) == (False, "waiting")


def test_a_signal_body_is_refused_when_too_large_or_holding_a_placeholder(
    start_api: ApiFactory, target: str
) -> None:
    api: Api = start_api(workers=2, signal_max_bytes=100)
    with api.client("alice") as alice:
        session_id = waiting_session(alice, target, 'wait for signal "paid"')
        sent: dict[str, Any] = {
            "large": alice.post(f"/v1/sessions/{session_id}/signals/paid", json="x" * 200),
            "code": alice.post(
                f"/v1/sessions/{session_id}/signals/paid", json={"to": "{{secrets.KEY}}"}
            ),
        }
        still = status_of(alice, session_id)

    assert sent["large"].status_code == 413
    assert sent["code"].status_code == 422
    assert "placeholder" in sent["code"].json()["message"]
    assert still == "waiting"
