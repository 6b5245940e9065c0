"""HTTP API latency: POST /v1/sessions at a fixed request rate, and SSE delivery (commit ->
client) with 100 subscribers, each next to a baseline measured in the same run.

    python -m bench.api [--rate 20] [--seconds 10] [--subscribers 100]

Baselines: a raw psycopg single-row insert commit at the same rate (for POST), and the same
stream with a single subscriber (for SSE). The API runs in this process on loopback (dev mode),
over the server of STEPLINE_DATABASE_URL if set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import httpx
import psycopg

from api.server import create_app, serving_in_background
from bench.appends import bench_database
from engine.settings import Settings


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


def at_fixed_rate(rate: float, seconds: float, request: Callable[[], None]) -> list[float]:
    """Start `request` every 1/rate s (open loop: a slow answer does not delay the next)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def timed() -> None:
        started = time.perf_counter()
        request()
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)

    count = int(rate * seconds)
    begin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for n in range(count):
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(timed)
    return latencies


def raw_insert_latency(url: str, rate: float, seconds: float) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_latency (id bigserial PRIMARY KEY, v text)")
    local = threading.local()

    def insert() -> None:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(url, autocommit=True)
        local.conn.execute("INSERT INTO raw_latency (v) VALUES (%s)", (uuid4().hex,))

    return at_fixed_rate(rate, seconds, insert)


def post_latency(base_url: str, rate: float, seconds: float) -> list[float]:
    client = httpx.Client(base_url=base_url, timeout=30)
    body = {"name": "bench", "executor": "shell", "steps": ["run `true`"]}

    def post() -> None:
        response = client.post("/v1/sessions", json=body)
        assert response.status_code == 201, response.text

    try:
        return at_fixed_rate(rate, seconds, post)
    finally:
        client.close()


def _subscribe(base_url: str, session_id: str, ready: threading.Barrier, out: list[float]) -> None:
    """Collect commit -> receive latencies (ms) of the live events, after the history."""
    with (
        httpx.Client(base_url=base_url, timeout=60) as client,
        client.stream("GET", f"/v1/sessions/{session_id}/stream") as response,
    ):
        live = False
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            received = time.time()
            event = json.loads(line[6:])
            if live:
                committed = datetime.fromisoformat(event["timestamp"]).timestamp()
                out.append((received - committed) * 1000)
            if event["type"] == "Paused" and not live:
                live = True
                ready.wait()
            if event["type"] in ("Completed", "Failed", "Cancelled", "Expired"):
                return


def sse_latency(base_url: str, subscribers: int, steps: int) -> list[float]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        body = {
            "name": "stream bench",
            "executor": "shell",
            "steps": ["run `sleep 0.02`"] * steps,
            "config": {"shell_allow": ["sleep"]},
        }
        session_id = client.post("/v1/sessions", json=body).json()["session_id"]
        client.post(f"/v1/sessions/{session_id}/pause")
        ready = threading.Barrier(subscribers + 1)
        samples: list[list[float]] = [[] for _ in range(subscribers)]
        threads = [
            threading.Thread(target=_subscribe, args=(base_url, session_id, ready, samples[i]))
            for i in range(subscribers)
        ]
        for thread in threads:
            thread.start()
        ready.wait(timeout=120)  # every subscriber has the history and waits live
        client.post(f"/v1/sessions/{session_id}/resume")
        for thread in threads:
            thread.join(timeout=300)
    return [sample for per_client in samples for sample in per_client]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="POST requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30, help="steps of the streamed session")
    arguments = parser.parse_args()

    with bench_database() as url, tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            database_url=url,
            data_dir=Path(data_dir),
            max_concurrent_sessions=10_000,
            max_active_sessions=1_000_000,
            create_rate_per_minute=1_000_000,
            log_level="WARNING",
        )
        with serving_in_background(create_app(settings)) as base_url:
            raw = raw_insert_latency(url, arguments.rate, arguments.seconds)
            posts = post_latency(base_url, arguments.rate, arguments.seconds)
            one = sse_latency(base_url, 1, arguments.steps)
            many = sse_latency(base_url, arguments.subscribers, arguments.steps)

    rows = [
        (f"raw psycopg insert commit @ {arguments.rate:g}/s", raw),
        (f"POST /v1/sessions @ {arguments.rate:g}/s", posts),
        ("SSE commit -> client, 1 subscriber", one),
        (f"SSE commit -> client, {arguments.subscribers} subscribers", many),
    ]
    print(f"{'measurement':<46} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}")
    results = {}
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        results[name] = (p50, p99)
        print(f"{name:<46} {len(samples):>6} {p50:>8.1f} {p99:>8.1f}")
    (raw50, raw99), (post50, post99) = results[rows[0][0]], results[rows[1][0]]
    (one50, one99), (many50, many99) = results[rows[2][0]], results[rows[3][0]]
    print(f"POST vs raw insert: p50 {post50 / raw50:.1f}x, p99 {post99 / raw99:.1f}x")
    print(
        f"SSE {arguments.subscribers} vs 1 subscriber: p50 {many50 / one50:.1f}x, "
        f"p99 {many99 / one99:.1f}x"
    )


if __name__ == "__main__":
    main()
