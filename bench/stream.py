"""The live stream's latency, commit -> client, with many subscribers while sessions run.

    python -m bench.stream [--subscribers 100] [--sessions 10] [--steps 40] [--step-ms 50]
                           [--shape split|single] [--clients 2]

`--sessions` sessions of `--steps` HTTP steps (`GET /slow?ms=--step-ms` against the example
app) run at once, resumed a fraction of a step apart as independent sessions would be
(`--in-step`: all at the same moment, so their events come in bursts); `--subscribers` streams
are spread evenly over them (the event rate is that of the sessions running; each event goes
to subscribers/sessions clients). The deployment's shape:

- `split` (the production shape): `stepline serve --workers 0` serves the streams, one
  `stepline worker` with a slot per session drives the sessions; the API process learns of
  new events by NOTIFY.
- `single`: one `stepline serve` does both, its slots driving the sessions.

The subscribers are asyncio clients in `--clients` processes of their own (a lean HTTP/1.1
reader, so that what is timed is the server), connected before the sessions are resumed.
Printed: the events streamed, the frames received, and p50/p99/max of commit -> client
(the event's timestamp, taken just before its commit, to the moment its frame is read).
With `--profile FILE` the server process is sampled by py-spy (`pip install py-spy`) while
the streams run, and the functions it spends the most time in are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.queues import Queue
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from bench.api import example_target, free_port, percentiles, session_body, wait_until_up
from bench.appends import bench_database
from engine.live.leadership import current_leader

STEPLINE = str(Path(sys.executable).parent / "stepline")
ENDINGS = {"Completed", "Failed", "Cancelled", "Expired"}


def environment(database_url: str, data_dir: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    return {
        **clean,
        "STEPLINE_DATABASE_URL": database_url,
        "STEPLINE_DATA_DIR": data_dir,
        "STEPLINE_LOG_LEVEL": "WARNING",
        "STEPLINE_CREATE_RATE_PER_MINUTE": "1000000",
        "STEPLINE_MAX_ACTIVE_SESSIONS": "1000000",
        "STEPLINE_REQUESTS_PER_MINUTE": "100000000",
        "STEPLINE_KEY_MAX_STREAMS": "100000",
        "STEPLINE_TENANT_MAX_STREAMS": "100000",
    }


@contextmanager
def deployment(shape: str, database_url: str, sessions: int) -> Iterator[tuple[str, int]]:
    """The API's base URL and the pid of the process serving the streams."""
    with ExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        env = environment(database_url, data_dir)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        slots = "0" if shape == "split" else str(sessions)
        serve = [STEPLINE, "serve", "--port", str(port), "--workers", slots]
        serve += ["--worker-processes", "0"]  # single: the sessions in the API's process
        server = stack.enter_context(started(serve, env))
        if shape == "split":
            stack.enter_context(started([STEPLINE, "worker", "--concurrency", str(sessions)], env))
        wait_until_up(f"{base_url}/health")
        yield base_url, server.pid


@contextmanager
def started(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    running = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        yield running
    finally:
        running.send_signal(signal.SIGTERM)
        try:
            running.wait(timeout=60)
        except subprocess.TimeoutExpired:
            running.kill()


# ---- the subscribers ----------------------------------------------------------------------


async def _subscribe(host: str, port: int, session_id: str, out: list[tuple[bytes, float]]) -> None:
    """Read one stream to its end: (committed, received) of every event frame. Lean on
    purpose (large reads, no JSON decoding), so the clients are not what is measured."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /v1/sessions/{session_id}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")  # the status line and headers
    body = Dechunked()
    try:
        while data := await reader.read(1 << 16):
            received = time.time()  # every frame of this read arrived together
            for frame in body.frames(data):
                if _ended(frame, received, out):
                    return
    finally:
        writer.close()


class Dechunked:
    """SSE frames out of an HTTP/1.1 chunked body, fed as it arrives."""

    def __init__(self) -> None:
        self._raw = b""
        self._text = b""

    def frames(self, data: bytes) -> list[bytes]:
        self._raw += data
        while (line_end := self._raw.find(b"\r\n")) >= 0:
            size = int(self._raw[:line_end], 16)
            chunk_end = line_end + 2 + size
            if len(self._raw) < chunk_end + 2:
                break
            self._text += self._raw[line_end + 2 : chunk_end]
            self._raw = self._raw[chunk_end + 2 :]
        *complete, self._text = self._text.split(b"\n\n")
        return complete


TIMESTAMP = b'"timestamp": "'
ENDING_MARKS = tuple(f'"type": "{ending}"'.encode() for ending in ENDINGS)


def _ended(frame: bytes, received: float, out: list[tuple[bytes, float]]) -> bool:
    """Record an event frame's (commit timestamp, as sent, and received); whether the session
    ended with it. The timestamps are parsed after the run, so the clients spend their time
    reading, not parsing."""
    start = frame.find(TIMESTAMP)
    if start < 0:
        return False  # a heartbeat, an artifact's announcement
    start += len(TIMESTAMP)
    out.append((frame[start : frame.index(b'"', start)], received))
    return any(mark in frame for mark in ENDING_MARKS)


def _parsed(samples: list[tuple[bytes, float]]) -> list[tuple[float, float]]:
    return [(datetime.fromisoformat(stamp.decode()).timestamp(), got) for stamp, got in samples]


def subscriber_process(
    base_url: str, session_ids: list[str], results: Queue[list[tuple[float, float]]]
) -> None:
    async def run() -> list[tuple[float, float]]:
        parts = urlsplit(base_url)
        samples: list[list[tuple[bytes, float]]] = [[] for _ in session_ids]
        await asyncio.gather(
            *(
                _subscribe(parts.hostname or "127.0.0.1", parts.port or 80, sid, samples[i])
                for i, sid in enumerate(session_ids)
            )
        )
        return _parsed([sample for per_stream in samples for sample in per_stream])

    results.put(asyncio.run(run()))


# ---- one measurement ----------------------------------------------------------------------


@dataclass(frozen=True)
class Streamed:
    latencies_ms: list[float]
    events: int
    seconds: float


def measure(base_url: str, target: str, arguments: argparse.Namespace, pid: int) -> Streamed:
    steps = [f"GET /slow?ms={arguments.step_ms}"] * arguments.steps
    with httpx.Client(base_url=base_url, timeout=60) as client:
        session_ids = []
        for _ in range(arguments.sessions):
            created = client.post("/v1/sessions", json=session_body(target, steps)).json()
            client.post(f"/v1/sessions/{created['session_id']}/pause")
            session_ids.append(created["session_id"])
        streams = [session_ids[n % len(session_ids)] for n in range(arguments.subscribers)]
        results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        clients = [
            multiprocessing.Process(
                target=subscriber_process, args=(base_url, streams[k :: arguments.clients], results)
            )
            for k in range(arguments.clients)
        ]
        for started in clients:
            started.start()
        until_subscribed(client, arguments.subscribers)
        gap_s = 0.0 if arguments.in_step else arguments.step_ms / 1000 / len(session_ids)
        with sampled(pid, arguments.profile):  # the live streams only
            resumed = time.time()
            for n, session_id in enumerate(session_ids):
                # Spread over one step, as sessions running independently would be: resumed
                # together, their events would come in bursts of `--sessions` at once.
                time.sleep(max(0.0, resumed + n * gap_s - time.time()))
                client.post(f"/v1/sessions/{session_id}/resume")
            samples = [sample for _ in clients for sample in results.get(timeout=600)]
        for started in clients:
            started.join(timeout=30)
    live = [(committed, got) for committed, got in samples if committed >= resumed]
    events = len({committed for committed, _ in live})
    seconds = max(committed for committed, _ in live) - resumed
    return Streamed([(got - committed) * 1000 for committed, got in live], events, seconds)


def until_subscribed(client: httpx.Client, subscribers: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if f"stepline_stream_subscribers {subscribers}\n" in client.get("/metrics").text:
            return
        time.sleep(0.05)
    raise RuntimeError("the subscribers did not all connect")


@contextmanager
def sampled(pid: int, out: str | None) -> Iterator[None]:
    """py-spy sampling `pid` (every thread, idle ones left out) for the block, if asked."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--output",
        out,
        "--rate",
        "100",
        "--nonblocking",
    ]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)


WAITING = {"Condition.wait", "Event.wait", "Connection.wait", "EpollSelector.select", "sleep"}
"""Leaf functions of a thread that waits rather than works (py-spy samples idle threads too)."""


def _frame(frame: str) -> str:
    """`name (path/file.py:line)` -> `name (file.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})"


DUTIES = (
    ("projecting the views", "Projector.catch_up"),
    ("driving sessions", "SessionWorker._drive"),
    ("reading new events (feed)", "EventFeed._deliver"),
    ("the event loop (HTTP, streams)", "Runner.run"),
)


def _working_stacks(raw: str) -> Iterator[tuple[list[str], int]]:
    for line in Path(raw).read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";")]
        if frames[-1].split(" (")[0] not in WAITING:
            yield frames, int(weight)


def by_duty(raw: str) -> dict[str, float]:
    """% of the working samples spent on each of the process's duties."""
    duties: collections.Counter[str] = collections.Counter()
    for frames, weight in _working_stacks(raw):
        names = {frame.split(" (")[0] for frame in frames}
        duty = next((d for d, marker in DUTIES if marker in names), "other")
        duties[duty] += weight
    working = sum(duties.values())
    return {duty: 100 * n / working for duty, n in duties.most_common()}


def working_share(raw: str, names: list[str]) -> dict[str, float]:
    """% of the working samples with each function (`name` or `Class.name`) on the stack."""
    on_stack: collections.Counter[str] = collections.Counter()
    working = 0
    for frames, weight in _working_stacks(raw):
        working += weight
        present = {frame.split(" (")[0] for frame in frames}
        for name in names:
            if name in present:
                on_stack[name] += weight
    return {name: 100 * on_stack[name] / max(working, 1) for name in names}


def busiest(raw: str, count: int = 15) -> list[tuple[str, float, float]]:
    """From py-spy's collapsed stacks, the samples of working threads: (function, % of them
    with it as the leaf, % with it on the stack), by the first."""
    on_stack: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    working = 0
    for frames, weight in _working_stacks(raw):
        working += weight
        leaf[frames[-1]] += weight
        for frame in set(frames):
            on_stack[frame] += weight
    return [(f, 100 * n / working, 100 * on_stack[f] / working) for f, n in leaf.most_common(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-ms", type=int, default=50)
    parser.add_argument("--shape", choices=("split", "single"), default="split")
    parser.add_argument(
        "--in-step", action="store_true", help="resume every session at once (bursts)"
    )
    parser.add_argument("--clients", type=int, default=2, help="subscriber processes")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the server into FILE")
    arguments = parser.parse_args()
    wanted = arguments.subscribers + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, hard)), hard))

    with (
        bench_database() as url,
        example_target() as target,
        deployment(arguments.shape, url, arguments.sessions) as (base_url, pid),
    ):
        streamed = measure(base_url, target, arguments, pid)
        with psycopg.connect(url) as conn:
            leader = current_leader(conn)
    latencies = streamed.latencies_ms
    p50, p99 = percentiles(latencies)
    print(
        f"{arguments.shape}: {arguments.sessions} sessions of {arguments.steps} steps "
        f"(GET /slow?ms={arguments.step_ms}), {streamed.events / streamed.seconds:.0f} events/s, "
        f"{arguments.subscribers} subscribers, on {os.cpu_count()} cores"
    )
    print(f"the views' leader: {leader.holder if leader else 'none'}")
    print(
        f"SSE commit -> client: {len(latencies)} frames, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )
    if arguments.profile:
        for duty, share in by_duty(arguments.profile).items():
            print(f"{share:5.1f}% of the server's working samples: {duty}")
        print(f"{'working samples: function (file)':<70} {'leaf':>6} {'on stack':>9}")
        for function, own, on_stack in busiest(arguments.profile, 20):
            print(f"{function[:70]:<70} {own:>5.1f}% {on_stack:>8.1f}%")


if __name__ == "__main__":
    main()
