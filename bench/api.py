"""The HTTP API through one real `stepline serve` process, each figure next to a baseline
measured in the same run.

    python -m bench.api [--rate 50] [--seconds 10] [--subscribers 100] [--sessions 300]
    python -m bench.api --profile post.pstat   # only the POST figure, the server under yappi

- `POST /v1/sessions` latency at a fixed rate while 10 sessions run (the server's default
  slots are kept busy by slow sessions), next to a raw psycopg insert commit at the same rate;
- end to end: sessions of 3 quick HTTP steps created as fast as the API takes them, counted
  as completed per second;
- SSE commit -> client with 100 subscribers on one session, next to 1 subscriber;
- the PostgreSQL connections the server process holds (by its application_name).

With `--profile FILE` it measures only the POST latency, with the server running under yappi
(wall time in every thread; `pip install -e '.[bench]'`), and prints where a POST's time goes:
the calls under the route's handler by cumulative time. FILE keeps the whole profile (pstats).

The server and the example target app run as processes of their own, so the load generated
here does not share their interpreter. Uses the server of STEPLINE_DATABASE_URL if set (in a
fresh database), else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import uuid4

import httpx
import psycopg

from api.cli.examples import EXAMPLES
from bench.appends import bench_database

SERVER_NAME = "stepline-bench-serve"
QUICK_STEPS = ["GET /slow?ms=0", "expect status 200", "GET /slow?ms=0"]


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_up(url: str) -> None:
    for _ in range(600):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered at {url}")


@contextmanager
def process(
    command: list[str], env: dict[str, str], up_at: str, stop_s: float = 30
) -> Iterator[None]:
    started = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_until_up(up_at)
        yield
    finally:
        started.send_signal(signal.SIGTERM)
        try:
            started.wait(timeout=stop_s)
        except subprocess.TimeoutExpired:
            started.kill()


@contextmanager
def stepline_serve(database_url: str, data_dir: str, profile: str | None = None) -> Iterator[str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env = {
        **clean,
        "STEPLINE_DATABASE_URL": database_url,
        "STEPLINE_DATA_DIR": data_dir,
        "STEPLINE_LOG_LEVEL": "WARNING",
        "STEPLINE_CREATE_RATE_PER_MINUTE": "1000000",
        "STEPLINE_MAX_ACTIVE_SESSIONS": "1000000",
        # High enough never to refuse the load, yet every request still takes from its bucket.
        "STEPLINE_REQUESTS_PER_MINUTE": "100000000",
        "STEPLINE_KEY_MAX_STREAMS": "100000",
        "STEPLINE_TENANT_MAX_STREAMS": "100000",
        "PGAPPNAME": SERVER_NAME,
    }
    command = [sys.executable, "-c", "from api.cli.main import main; main()", "serve"]
    if profile is not None:
        command = [sys.executable, "-m", "bench.profiled_serve", profile, "serve"]
    base_url = f"http://127.0.0.1:{port}"
    stop_s = 30 if profile is None else 600  # saving a profile of every thread takes a while
    with process([*command, "--port", str(port)], env, f"{base_url}/health", stop_s):
        yield base_url


@contextmanager
def example_target() -> Iterator[str]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(EXAMPLES / "target_app.py"), str(port)]
    with process(command, dict(os.environ), f"{base_url}/slow?ms=0"):
        yield base_url


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


def session_body(target: str, steps: list[str]) -> dict[str, Any]:
    return {"name": "bench", "executor": "http", "base_url": target, "steps": steps}


def post_latency_while_busy(base_url: str, target: str, rate: float, seconds: float) -> list[float]:
    """POST at `rate` while the server's 10 slots drive slow sessions (the posted ones wait
    for a slot, as they would on a busy deployment)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        slow = session_body(target, [f"GET /slow?ms={int(seconds * 1000 + 5000)}"])
        busy = [client.post("/v1/sessions", json=slow).json()["session_id"] for _ in range(10)]

        def post() -> None:
            response = client.post("/v1/sessions", json=session_body(target, QUICK_STEPS))
            assert response.status_code == 201, response.text

        try:
            return at_fixed_rate(rate, seconds, post)
        finally:
            for session_id in busy:
                client.post(f"/v1/sessions/{session_id}/cancel")


def completed_count(database_url: str, session_ids: set[str]) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM session_index WHERE status = 'completed' "
            "AND session_id = ANY(%s::uuid[])",
            (list(session_ids),),
        ).fetchone()
    return int(row[0]) if row else 0


def end_to_end(base_url: str, target: str, database_url: str, sessions: int) -> float:
    """Sessions of 3 quick HTTP steps completed per second, from the first POST to the last
    completion (as the session index records it)."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        wait_for_idle(client)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            created = set(
                pool.map(
                    lambda _: client.post(
                        "/v1/sessions", json=session_body(target, QUICK_STEPS)
                    ).json()["session_id"],
                    range(sessions),
                )
            )
        while completed_count(database_url, created) < sessions:
            if time.perf_counter() - started > 600:
                raise RuntimeError("the sessions did not complete within 10 minutes")
            time.sleep(0.02)
        return sessions / (time.perf_counter() - started)


def wait_for_idle(client: httpx.Client) -> None:
    """Until nothing is pending or running (the previous measurement's sessions are done)."""
    for _ in range(6000):
        active = [
            client.get("/v1/sessions", params={"status": status, "limit": 1}).json()["items"]
            for status in ("pending", "running")
        ]
        if not any(active):
            return
        time.sleep(0.05)


async def _subscribe(
    client: httpx.AsyncClient, session_id: str, live: asyncio.Event, out: list[float]
) -> None:
    """Collect commit -> receive latencies (ms) of the events that arrive once `live` is set."""
    async with client.stream("GET", f"/v1/sessions/{session_id}/stream") as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            received = time.time()
            event = json.loads(line[6:])
            if live.is_set():
                committed = datetime.fromisoformat(event["timestamp"]).timestamp()
                out.append((received - committed) * 1000)
            if event["type"] in ("Completed", "Failed", "Cancelled", "Expired"):
                return


async def _stream_to(base_url: str, session_id: str, subscribers: int) -> list[float]:
    """All subscribers in one event loop: a light client, so what is timed is the server."""
    limits = httpx.Limits(max_connections=subscribers + 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        live = asyncio.Event()
        samples: list[list[float]] = [[] for _ in range(subscribers)]
        tasks = [
            asyncio.create_task(_subscribe(client, session_id, live, samples[i]))
            for i in range(subscribers)
        ]
        await _until_subscribed(client, subscribers)
        live.set()
        await client.post(f"/v1/sessions/{session_id}/resume")
        await asyncio.gather(*tasks)
    return [sample for per_client in samples for sample in per_client]


async def _until_subscribed(client: httpx.AsyncClient, subscribers: int) -> None:
    for _ in range(1200):
        metrics = (await client.get("/metrics")).text
        if f"stepline_stream_subscribers {subscribers}" in metrics:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the subscribers did not all connect")


def sse_latency(base_url: str, target: str, subscribers: int, steps: int) -> list[float]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        wait_for_idle(client)
        body = session_body(target, ["GET /slow?ms=20"] * steps)
        session_id = client.post("/v1/sessions", json=body).json()["session_id"]
        client.post(f"/v1/sessions/{session_id}/pause")
    return asyncio.run(_stream_to(base_url, session_id, subscribers))


def server_connections(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (SERVER_NAME,)
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="POST requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30, help="steps of the streamed session")
    parser.add_argument("--sessions", type=int, default=300, help="for the end-to-end rate")
    parser.add_argument("--profile", metavar="FILE", help="profile the POST path into FILE")
    arguments = parser.parse_args()
    if arguments.profile:
        profile_post(arguments)
        return

    with (
        bench_database() as url,
        tempfile.TemporaryDirectory() as data_dir,
        example_target() as target,
        stepline_serve(url, data_dir) as base_url,
    ):
        raw = raw_insert_latency(url, arguments.rate, arguments.seconds)
        posts = post_latency_while_busy(base_url, target, arguments.rate, arguments.seconds)
        connections_busy = server_connections(url)
        rate = end_to_end(base_url, target, url, arguments.sessions)
        one = sse_latency(base_url, target, 1, arguments.steps)
        many = sse_latency(base_url, target, arguments.subscribers, arguments.steps)
        connections = max(connections_busy, server_connections(url))
    report(arguments, raw, posts, one, many)
    print(f"end to end, sessions of 3 quick HTTP steps: {rate:.1f} sessions/s")
    print(f"PostgreSQL connections held by the serve process: {connections}")


def profile_post(arguments: argparse.Namespace) -> None:
    with (
        bench_database() as url,
        tempfile.TemporaryDirectory() as data_dir,
        example_target() as target,
        stepline_serve(url, data_dir, arguments.profile) as base_url,
    ):
        posts = post_latency_while_busy(base_url, target, arguments.rate, arguments.seconds)
    p50, p99 = percentiles(posts)
    print(f"POST /v1/sessions @ {arguments.rate:g}/s, 10 running, under the profiler: ", end="")
    print(f"n {len(posts)}, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    stats = pstats.Stats(arguments.profile)
    stats.sort_stats("cumulative")
    handlers = ("[(]new_session[)]", "[(]admit[)]", "CreationQuota.take")
    for handler in (*handlers, "SessionWorker.create", "Stepline.save_new"):
        stats.print_callees(handler, 14)


def report(
    arguments: argparse.Namespace,
    raw: list[float],
    posts: list[float],
    one: list[float],
    many: list[float],
) -> None:
    rows = [
        (f"raw psycopg insert commit @ {arguments.rate:g}/s", raw),
        (f"POST /v1/sessions @ {arguments.rate:g}/s, 10 running", posts),
        ("SSE commit -> client, 1 subscriber", one),
        (f"SSE commit -> client, {arguments.subscribers} subscribers", many),
    ]
    print(f"{'measurement':<50} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}")
    results = []
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        results.append((p50, p99))
        print(f"{name:<50} {len(samples):>6} {p50:>8.1f} {p99:>8.1f}")
    (raw50, raw99), (post50, post99), (one50, one99), (many50, many99) = results
    print(f"POST vs raw insert: p50 {post50 / raw50:.1f}x, p99 {post99 / raw99:.1f}x")
    print(
        f"SSE {arguments.subscribers} vs 1 subscriber: p50 {many50 / one50:.1f}x, "
        f"p99 {many99 / one99:.1f}x"
    )


if __name__ == "__main__":
    main()
