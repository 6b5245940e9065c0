"""Batches, health and metrics, and `stepline serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.http.auth import digest
from tests.api.conftest import KEYS, Api, shell_workflow
from tests.api.test_errors import assert_problem, log_head
from tests.api.test_sessions import stream


def test_a_batch_runs_its_sessions_and_reports_their_progress(api: Api) -> None:
    with api.client("alice") as alice:
        response = alice.post(
            "/v1/batches",
            json={"sessions": [shell_workflow("true", name=f"b{i}") for i in range(3)]},
        )
        assert response.status_code == 201, response.text
        batch = response.json()
        assert response.headers["location"] == f"/v1/batches/{batch['batch_id']}"
        for session_id in batch["session_ids"]:
            assert stream(alice, session_id)[-1]["type"] == "Completed"

        view = alice.get(f"/v1/batches/{batch['batch_id']}").json()
    assert (view["total"], view["finished"], view["percent"]) == (3, 3, 100.0)
    assert view["by_status"] == {"completed": 3}
    assert [s["session_id"] for s in view["sessions"]] == batch["session_ids"]


def test_cancelling_a_batch_cancels_only_its_unfinished_sessions(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        quick = shell_workflow("true", name="quick")
        slow = shell_workflow("sleep 5", name="slow")
        batch = alice.post("/v1/batches", json={"sessions": [quick, slow]}).json()
        quick_id, slow_id = batch["session_ids"]
        assert stream(alice, quick_id)[-1]["type"] == "Completed"

        assert_problem(eve.get(f"/v1/batches/{batch['batch_id']}"), 404, "BATCH_NOT_FOUND")
        assert_problem(eve.post(f"/v1/batches/{batch['batch_id']}/cancel"), 404, "BATCH_NOT_FOUND")
        cancelled = alice.post(f"/v1/batches/{batch['batch_id']}/cancel", json={"reason": "done"})
        assert cancelled.json()["cancelled_sessions"] == [slow_id]
        view = alice.get(f"/v1/batches/{batch['batch_id']}").json()
    assert view["cancelled"] is True
    assert view["by_status"] == {"completed": 1, "cancelled": 1}


def test_a_tenant_lists_its_batches_newest_first_and_no_one_elses(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        older = alice.post("/v1/batches", json={"sessions": [shell_workflow("true")] * 2}).json()
        newer = alice.post("/v1/batches", json={"sessions": [shell_workflow("sleep 5")]}).json()
        alice.post(f"/v1/batches/{newer['batch_id']}/cancel", json={"reason": "not now"})
        for session_id in older["session_ids"]:
            stream(alice, session_id)

        first = alice.get("/v1/batches", params={"limit": 1}).json()
        second = alice.get("/v1/batches", params={"limit": 1, "cursor": first["next_cursor"]})
        everything_eve_sees = eve.get("/v1/batches", params={"limit": 200}).json()["items"]
    [shown_first], [shown_second] = first["items"], second.json()["items"]
    assert (shown_first["batch_id"], shown_first["cancelled"]) == (newer["batch_id"], True)
    assert (shown_first["total"], shown_first["created_by"]) == (1, "alice")
    assert shown_second["batch_id"] == older["batch_id"]
    assert (shown_second["finished"], shown_second["percent"]) == (2, 100.0)
    seen_by_eve = {b["batch_id"] for b in everything_eve_sees}
    assert not seen_by_eve & {older["batch_id"], newer["batch_id"]}


def test_a_tenant_audits_its_own_batches_and_no_one_elses(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        batch = alice.post("/v1/batches", json={"sessions": [shell_workflow("sleep 5")]}).json()
        alice.post(f"/v1/batches/{batch['batch_id']}/cancel", json={"reason": "not today"})
        trail = alice.get("/v1/audit", params={"session_id": batch["batch_id"]}).json()["items"]
        seen_by_eve = eve.get("/v1/audit", params={"session_id": batch["batch_id"]}).json()

    assert [(e["event_type"], e["actor"]) for e in trail] == [
        ("Batch.Created", "alice"),
        ("Batch.Cancelled", "alice"),
    ]
    assert trail[1]["description"] == "cancelled the batch: not today"
    assert seen_by_eve["items"] == []


def test_a_batch_with_one_bad_session_writes_nothing(api: Api) -> None:
    before = log_head(api)
    with api.client() as alice:
        response = alice.post(
            "/v1/batches", json={"sessions": [shell_workflow("true"), {"name": "x", "steps": []}]}
        )
    problem = assert_problem(response, 422, "VALIDATION_FAILED")
    assert any(e["field"].startswith("body.sessions.1") for e in problem["details"]["errors"])
    assert log_head(api) == before


def test_health_and_metrics(api: Api) -> None:
    with api.client() as alice, api.operator() as operator:
        stream(alice, alice.post("/v1/sessions", json=shell_workflow("true")).json()["session_id"])
        health = operator.get("/health")
        metrics = operator.get("/metrics").text
    assert health.status_code == 200
    body = health.json()
    lag = body.pop("projection_lag")
    (worker,) = body.pop("workers")
    assert body == {"status": "ok", "database": True, "worker": True, "projections_live": True}
    assert isinstance(lag, int)
    assert lag >= 0
    assert (worker["role"], worker["concurrency"]) == ("serve", 10)
    assert worker["worker_id"] == api.services.worker.worker_id  # type: ignore[union-attr]
    for name in (
        'stepline_sessions{status="completed"} 1',
        'stepline_steps{status="completed"} 1',
        "stepline_step_duration_seconds_count 1",
        "stepline_events_appended_total",
        'stepline_projection_lag_events{view="audit_log"}',
        'stepline_http_requests_total{method="POST",route="/v1/sessions",status="201"} 1',
        "stepline_http_request_duration_seconds_bucket",
        f'stepline_leases_held{{worker="{worker["worker_id"]}"}}',
        f'stepline_takeovers_total{{worker="{worker["worker_id"]}"}} 0',
        "stepline_lease_renew_failures_total",
    ):
        assert name in metrics, name


def test_health_is_503_when_the_worker_is_gone(api: Api) -> None:
    assert api.services.worker is not None
    api.services.worker.stop()
    with api.client() as alice, api.operator() as operator:
        assert alice.get("/health").json() == {"status": "unhealthy"}
        response = operator.get("/health")
    assert response.status_code == 503
    assert response.json()["worker"] is False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_stepline_serve_runs_the_api_as_a_process(fresh_database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env |= {"STEPLINE_DATABASE_URL": fresh_database_url, "STEPLINE_DATA_DIR": str(tmp_path)}
    stepline = str(Path(sys.executable).parent / "stepline")
    server = subprocess.Popen(
        [stepline, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_up(server, f"{base_url}/health")
        with httpx.Client(base_url=base_url) as client:
            session_id = client.post("/v1/sessions", json=shell_workflow("echo served")).json()[
                "session_id"
            ]
            assert stream(client, session_id)[-1]["type"] == "Completed"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "Dev mode" in output
    assert "Traceback" not in output
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it as the exit status
    assert server.returncode in (0, -signal.SIGTERM)


def test_stepline_serve_shows_the_full_metrics_on_its_metrics_port_only(
    fresh_database_url: str, tmp_path: Path
) -> None:
    port, metrics_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    keys = {name: {"tenant": t, "sha256": digest(key)} for name, (t, key) in KEYS.items()}
    env |= {
        "STEPLINE_DATABASE_URL": fresh_database_url,
        "STEPLINE_DATA_DIR": str(tmp_path),
        "STEPLINE_API_KEYS": json.dumps(keys),
    }
    stepline = str(Path(sys.executable).parent / "stepline")
    command = [stepline, "serve", "--port", str(port), "--workers", "0"]
    server = subprocess.Popen(
        [*command, "--metrics-port", str(metrics_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    try:
        _wait_until_up(server, f"{metrics_url}/health")
        full = httpx.get(f"{metrics_url}/health").json()
        scraped = httpx.get(f"{metrics_url}/metrics")
        rebound = httpx.get(f"{metrics_url}/metrics", headers={"Host": "evil.example"})
        alice = {"Authorization": f"Bearer {KEYS['alice'][1]}"}
        on_the_api_port = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=alice)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert full.keys() >= {"status", "database", "workers"}
    assert scraped.status_code == 200
    assert "stepline_sessions" in scraped.text
    assert_problem(rebound, 400, "HOST_NOT_ALLOWED")
    assert_problem(on_the_api_port, 401, "UNAUTHORIZED")
    assert "Traceback" not in output
    assert server.returncode in (0, -signal.SIGTERM)  # both servers stopped


def _wait_until_up(server: subprocess.Popen[str], health_url: str) -> None:
    """Until the server answers 200 at `health_url`; fails if it exits or 30 s go by."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            if httpx.get(health_url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("stepline serve did not come up")
