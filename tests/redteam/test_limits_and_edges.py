"""An attacker's view of the limits and the edges: each test tries to get past one control."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from api.http.auth import digest
from tests.api.conftest import KEYS, OPERATOR_KEY, Api, ApiFactory
from tests.api.test_errors import assert_problem
from tests.api.test_sessions import create
from tests.waiting import eventually

HOUR_MS = 3_600_000


def test_a_cancel_during_a_long_back_off_frees_the_lease_and_the_slot_at_once(
    start_api: ApiFactory,
) -> None:
    maximums = {"retry_backoff_ms": HOUR_MS, "max_attempts": 3}
    api: Api = start_api(keys=False, workers=1, limit_maximums=maximums)
    worker = api.services.worker
    assert worker is not None
    failing = {
        "name": "fails, then backs off for an hour",
        "executor": "shell",
        "steps": ["run `true`", "expect exit code 1"],
        "config": {"max_attempts": 3, "retry_backoff_ms": HOUR_MS},
    }
    with api.client(None) as dev:
        session_id = create(dev, failing)
        eventually(
            lambda: [
                s
                for s in dev.get(f"/v1/sessions/{session_id}/steps").json()
                if s["status"] == "failed"
            ],
            "the step failed once (the back-off begins)",
        )
        assert worker.held_sessions()  # backing off, under its lease, in the only slot

        cancelled = dev.post(f"/v1/sessions/{session_id}/cancel", json={"reason": "enough"})
        assert cancelled.json()["status"] == "cancelled"

        eventually(lambda: not worker.held_sessions(), "the worker's slot is free")
        eventually(
            lambda: all(
                str(lease.session_id) != session_id for lease in api.services.runtime.leases.held()
            ),
            "the lease is released",
        )
        quick = create(dev, {"name": "next", "executor": "shell", "steps": ["run `true`"]})
        eventually(
            lambda: dev.get(f"/v1/sessions/{quick}").json()["status"] == "completed",
            "the freed slot runs the next session",
        )


# ---- live streams ------------------------------------------------------------------------


def a_session_that_stays_open(api: Api) -> str:
    """A session no worker runs (the API starts with none): its stream stays open."""
    with api.client("alice") as alice:
        return create(alice, {"name": "held open", "steps": ["GET /"]})


def test_a_key_cannot_open_more_streams_than_its_cap(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, key_max_streams=2)
    session_id = a_session_that_stays_open(api)
    url = f"/v1/sessions/{session_id}/stream"
    with api.client("alice") as alice, api.client("bob") as bob:
        with alice.stream("GET", url) as first, alice.stream("GET", url) as second:
            assert (first.status_code, second.status_code) == (200, 200)
            over = opened(alice, url)
            problem = assert_problem(over, 429, "STREAM_LIMIT_EXCEEDED")
            assert int(over.headers["Retry-After"]) >= 1
            assert (problem["details"]["limit"], problem["details"]["cap"]) == (
                "key_max_streams",
                2,
            )
            with bob.stream("GET", url) as bobs:  # another key of the tenant has its own
                assert bobs.status_code == 200
        eventually(lambda: can_stream(alice, url), "the closed streams' slots are free again")


def test_a_tenant_cannot_open_more_streams_than_its_policy_allows(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(workers=0, key_max_streams=5, tenant_max_streams=2)
    session_id = a_session_that_stays_open(api)
    url = f"/v1/sessions/{session_id}/stream"
    with (
        api.client("alice") as alice,
        api.client("bob") as bob,
        alice.stream("GET", url) as alices,
        bob.stream("GET", url) as bobs,
    ):
        assert (alices.status_code, bobs.status_code) == (200, 200)
        problem = assert_problem(opened(bob, url), 429, "STREAM_LIMIT_EXCEEDED")
        assert problem["details"]["limit"] == "max_streams"


def test_a_killed_client_gives_its_stream_slots_back(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, key_max_streams=2)
    session_id = a_session_that_stays_open(api)
    url = f"{api.base_url}/v1/sessions/{session_id}/stream"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_TWO_STREAMS, url, KEYS["alice"][1]],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with api.client("alice") as alice:
            assert_problem(
                opened(alice, f"/v1/sessions/{session_id}/stream"), 429, "STREAM_LIMIT_EXCEEDED"
            )
            holder.kill()
            holder.wait(timeout=30)
            eventually(
                lambda: can_stream(alice, f"/v1/sessions/{session_id}/stream"),
                "the killed client's slots are free",
            )
    finally:
        if holder.poll() is None:
            holder.kill()


HOLD_TWO_STREAMS = """
import sys, httpx
url, key = sys.argv[1], sys.argv[2]
with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=None) as client:
    with client.stream("GET", url) as one, client.stream("GET", url) as two:
        assert (one.status_code, two.status_code) == (200, 200)
        print("holding", flush=True)
        for _ in one.iter_lines():
            pass
"""


def opened(client: httpx.Client, url: str) -> httpx.Response:
    """The answer to opening a stream: read whole if refused; if it opened, closed at once
    (reading an open stream would never end)."""
    with client.stream("GET", url) as response:
        if response.status_code == 200:
            return httpx.Response(200, text="(the stream opened)")
        response.read()
        return response


def can_stream(client: httpx.Client, url: str) -> bool:
    with client.stream("GET", url) as response:
        return response.status_code == 200


# ---- rates -------------------------------------------------------------------------------


def test_a_key_over_its_requests_per_minute_is_refused_on_any_endpoint(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(workers=0, requests_per_minute=5)
    with api.client("alice") as alice, api.client("bob") as bob:
        for _ in range(5):
            assert alice.get("/v1/sessions").status_code == 200
        refused = alice.get("/v1/audit")
        problem = assert_problem(refused, 429, "KEY_RATE_LIMITED")
        assert int(refused.headers["Retry-After"]) >= 1
        assert problem["details"]["per_minute"] == 5
        assert bob.get("/v1/sessions").status_code == 200  # each key has its own bucket


def test_guessing_keys_from_one_address_locks_it_out_even_with_a_valid_key(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(workers=0, auth_failures_per_minute=3)
    with api.client(None) as guesser, api.client("alice") as alice:
        for guess in range(3):
            wrong = {"Authorization": f"Bearer sk_guess_{guess}"}
            assert_problem(guesser.get("/v1/sessions", headers=wrong), 401, "UNAUTHORIZED")
        refused = alice.get("/v1/sessions")  # the right key, from the same address
    assert_problem(refused, 429, "TOO_MANY_AUTH_FAILURES")
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_forwarded_for_header_does_not_change_whose_failures_they_are(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(workers=0, auth_failures_per_minute=3)
    with api.client(None) as guesser, api.client("alice") as alice:
        for guess in range(3):
            spoofed = {
                "Authorization": f"Bearer sk_guess_{guess}",
                "X-Forwarded-For": f"192.0.2.{guess}",
            }
            assert_problem(guesser.get("/v1/sessions", headers=spoofed), 401, "UNAUTHORIZED")
        refused = alice.get("/v1/sessions", headers={"X-Forwarded-For": "198.51.100.9"})
    assert_problem(refused, 429, "TOO_MANY_AUTH_FAILURES")


def test_guessing_the_operators_metrics_key_locks_the_address_out_too(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(
        workers=0, auth_failures_per_minute=3, metrics_key_sha256=digest(OPERATOR_KEY)
    )
    with api.client(None) as guesser, api.operator() as operator:
        for guess in range(3):
            wrong = {"Authorization": f"Bearer sk_guess_{guess}"}
            assert_problem(guesser.get("/metrics", headers=wrong), 401, "UNAUTHORIZED")
        refused = operator.get("/metrics")  # the operator's own key, from the same address
    assert_problem(refused, 429, "TOO_MANY_AUTH_FAILURES")


# ---- health, metrics, hosts, docs --------------------------------------------------------


def test_metrics_need_the_operator_key_not_a_tenants(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, metrics_key_sha256=digest(OPERATOR_KEY))
    with api.client("alice") as alice, api.client(None) as anyone, api.operator() as operator:
        assert_problem(anyone.get("/metrics"), 401, "UNAUTHORIZED")
        assert_problem(alice.get("/metrics"), 401, "UNAUTHORIZED")
        scraped = operator.get("/metrics")
    assert scraped.status_code == 200
    assert "stepline_sessions" in scraped.text


def test_health_tells_anyone_only_whether_it_is_up(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, metrics_key_sha256=digest(OPERATOR_KEY))
    with api.client("alice") as alice, api.client(None) as anyone, api.operator() as operator:
        assert anyone.get("/health").json() == {"status": "ok"}
        assert alice.get("/health").json() == {"status": "ok"}
        full = operator.get("/health")
    assert full.json().keys() >= {"status", "database", "workers", "projection_lag"}


def test_a_dev_server_refuses_a_foreign_host_header(start_api: ApiFactory) -> None:
    """DNS rebinding: a page on evil.example resolves its own name to 127.0.0.1; the browser
    then sends `Host: evil.example` to the loopback server, which must not answer it."""
    api: Api = start_api(keys=False, workers=0)
    port = api.base_url.rsplit(":", 1)[1]
    with api.client(None) as dev:
        rebound = dev.get("/v1/sessions", headers={"Host": f"evil.example:{port}"})
        problem = assert_problem(rebound, 400, "HOST_NOT_ALLOWED")
        assert "evil.example" in problem["message"]
        assert dev.get("/health", headers={"Host": "evil.example"}).status_code == 400
        assert dev.get("/v1/sessions", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert dev.get("/v1/sessions", headers={"Host": f"[::1]:{port}"}).status_code == 200


def test_only_the_allowed_hosts_are_answered_once_listed(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, allowed_hosts=["stepline.example.org"])
    with api.client("alice") as alice:
        assert_problem(alice.get("/v1/sessions"), 400, "HOST_NOT_ALLOWED")  # Host: 127.0.0.1
        named = alice.get("/v1/sessions", headers={"Host": "stepline.example.org"})
    assert named.status_code == 200


def test_the_docs_page_loads_nothing_from_elsewhere(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0)
    with api.client(None) as anyone:
        docs = anyone.get("/docs")
        assert docs.status_code == 200
        assert "default-src 'self'" in docs.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in docs.headers["Content-Security-Policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert sources
        assert not [s for s in sources if not s.startswith("/") or s.startswith("//")]
        assert "://" not in docs.text
        for source in sources:
            assert anyone.get(source).status_code == 200, source
        assert anyone.get("/redoc").status_code == 404
