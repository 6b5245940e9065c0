"""Webhook signatures as the Standard Webhooks specification's own package checks them."""

from __future__ import annotations

import base64
import os
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from engine.webhooks import retry_delay_s, signed_headers

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = '{"type":"session.completed","timestamp":"2026-03-02T09:00:00+00:00","data":{}}'


def test_a_delivery_signed_with_the_tenants_secret_verifies() -> None:
    headers = signed_headers(SECRET, "msg_1", BODY, int(time.time()))
    assert Webhook(SECRET).verify(BODY, headers) == {
        "type": "session.completed",
        "timestamp": "2026-03-02T09:00:00+00:00",
        "data": {},
    }


def test_a_body_changed_on_the_way_does_not_verify() -> None:
    headers = signed_headers(SECRET, "msg_1", BODY, int(time.time()))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace("completed", "failed"), headers)


def test_another_secret_does_not_verify() -> None:
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    headers = signed_headers(other, "msg_1", BODY, int(time.time()))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, headers)


def test_each_wait_between_attempts_doubles_up_to_an_hour() -> None:
    assert [retry_delay_s(n, 5.0) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert retry_delay_s(30, 5.0) == 3_600.0
