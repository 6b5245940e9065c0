"""What the HTTP side of a session costs the serving process: SQL statements and CPU per
`POST /v1/sessions` and per `GET /v1/sessions/{id}`, made as bench.e2e's client makes them.

    python -m bench.http_cost [--sessions 300] [--rounds-of 100] [--each]

The API runs in this process (uvicorn in a thread, as the API tests start it) with its
default session slots, in dev mode, over a fresh database of STEPLINE_DATABASE_URL's server
(else the embedded PostgreSQL); the sessions are bench.e2e's job against the example target
app. The client is bench.e2e's too: rounds of POSTs, each round then polled with GETs until
every session of it completed. Counted only in the threads that serve requests — the event
loop's, AnyIO's workers and the hot routes' request threads, not the sessions', the views',
the group commit's or the client's — while the client makes one kind of request:

- statements: what psycopg sends (each execute, and BEGIN, COMMIT, ROLLBACK), per request;
- CPU: those threads' user and system time per request (from /proc, through psutil).

With `--each`, also each statement's count per request (its first words), which costs the
serving threads the rendering of every statement: read the CPU figures of a run without it.
Counts, not wall time: the machine may be busy with other things without changing them.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from psycopg import sql
from psycopg._connection_base import BaseConnection

from api.http.server import create_app, serving_in_background
from api.http.services import REQUEST_THREAD_NAME
from bench.api import example_target, session_body
from bench.appends import bench_database
from bench.e2e import POLL_S, WARM_UP, job_steps
from domain.session import SessionStatus
from engine.settings import Settings

SERVING_THREADS = ("api", "AnyIO worker thread", REQUEST_THREAD_NAME)
"""The uvicorn thread `serving_in_background` names, the threads sync handlers run in, and
those the hot routes hand their work to (`Services.in_thread`)."""


def serving() -> bool:
    return threading.current_thread().name.startswith(SERVING_THREADS)


STATEMENT_HEAD = 72
"""Characters of a statement that name it in `--each`."""


@contextmanager
def statements_counted(each: bool) -> Iterator[Counter[str]]:
    """Counts what psycopg sends from the serving threads while inside: under "" all of it,
    and with `each`, under its first words too."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(owner: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if serving():
                head = statement_head(owner, query) if each else None
                with lock:
                    counts[""] += 1
                    if head is not None:
                        counts[head] += 1
            return original(owner, query, *args, **kwargs)

        return counted

    patched = [
        (psycopg.Cursor, "execute"),
        (psycopg.Cursor, "executemany"),
        (BaseConnection, "_exec_command"),  # BEGIN, COMMIT, ROLLBACK
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]
    for owner, name, original in originals:
        setattr(owner, name, counting(original))
    try:
        yield counts
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def statement_head(owner: Any, query: Any) -> str:
    if isinstance(query, sql.Composable):
        query = query.as_string(getattr(owner, "connection", owner))
    if isinstance(query, bytes):
        query = query.decode()
    return " ".join(str(query).split())[:STATEMENT_HEAD]


def serving_cpu_s() -> float:
    """CPU seconds the serving threads have used so far."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    return sum(
        float(t.user_time + t.system_time)
        for t in psutil.Process().threads()
        if names.get(t.id, "").startswith(SERVING_THREADS)
    )


@dataclass
class Tally:
    """One kind of request: how many, the statements they sent, the CPU they took."""

    requests: int = 0
    statements: Counter[str] = field(default_factory=Counter)
    """All of them under "", and each under its first words (with `--each`)."""
    cpu_s: float = 0.0

    def lines(self, what: str) -> list[str]:
        per_request = f"{self.statements[''] / self.requests:>14.2f}"
        cpu_ms = f"{self.cpu_s / self.requests * 1000:>12.2f}"
        each = [
            f"    {count / self.requests:5.2f}  {head}"
            for head, count in self.statements.most_common()
            if head
        ]
        return [f"{what:<24} {self.requests:>8} {per_request} {cpu_ms}", *each]


@dataclass
class Client:
    http: httpx.Client
    sent: Counter[str]
    body: dict[str, Any]
    posts: Tally = field(default_factory=Tally)
    gets: Tally = field(default_factory=Tally)

    @contextmanager
    def tallied(self, tally: Tally, requests: int) -> Iterator[None]:
        statements, cpu_s = self.sent.copy(), serving_cpu_s()
        yield
        tally.requests += requests
        tally.statements.update(self.sent - statements)
        tally.cpu_s += serving_cpu_s() - cpu_s

    def round(self, sessions: int) -> None:
        """POST `sessions`, then poll each about every POLL_S until all completed."""
        with self.tallied(self.posts, sessions):
            open_ids = [self.created() for _ in range(sessions)]
        while open_ids:
            began = time.perf_counter()
            with self.tallied(self.gets, len(open_ids)):
                statuses = [self.status(session_id) for session_id in open_ids]
            open_ids = [
                session_id
                for session_id, status in zip(open_ids, statuses, strict=True)
                if status != SessionStatus.COMPLETED.value
            ]
            time.sleep(max(0.0, began + POLL_S - time.perf_counter()))

    def created(self) -> str:
        response = self.http.post("/v1/sessions", json=self.body)
        if response.status_code != 201:
            raise RuntimeError(f"POST /v1/sessions: {response.status_code} {response.text}")
        return str(response.json()["session_id"])

    def status(self, session_id: str) -> str:
        response = self.http.get(f"/v1/sessions/{session_id}")
        if response.status_code != 200:
            raise RuntimeError(f"GET /v1/sessions/{session_id}: {response.status_code}")
        status = str(response.json()["status"])
        if status in (SessionStatus.FAILED.value, SessionStatus.CANCELLED.value):
            raise RuntimeError(f"{session_id} ended {status}")
        return status


def settings(database_url: str, data_dir: str) -> Settings:
    """bench.e2e's server settings (bench.stream's environment): limits that never refuse."""
    return Settings(
        database_url=database_url,
        data_dir=Path(data_dir),
        log_level="WARNING",
        create_rate_per_minute=1_000_000,
        max_active_sessions=1_000_000,
        requests_per_minute=100_000_000,
        key_max_streams=100_000,
        tenant_max_streams=100_000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--rounds-of", type=int, default=100)
    parser.add_argument("--each", action="store_true", help="each statement's count too")
    arguments = parser.parse_args()
    with (
        bench_database() as url,
        example_target() as target,
        tempfile.TemporaryDirectory() as data_dir,
        serving_in_background(create_app(settings(url, data_dir))) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as http,
        statements_counted(arguments.each) as sent,
    ):
        client = Client(http, sent, session_body(target, job_steps(3)))
        client.round(WARM_UP)  # connections, caches, first-use setup
        client.posts, client.gets = Tally(), Tally()
        for first in range(0, arguments.sessions, arguments.rounds_of):
            client.round(min(arguments.rounds_of, arguments.sessions - first))
    print(
        f"{arguments.sessions} sessions of bench.e2e's job in rounds of {arguments.rounds_of}; "
        "in the threads serving requests:"
    )
    print(f"{'request':<24} {'count':>8} {'statements':>14} {'CPU ms':>12}")
    print("\n".join(client.posts.lines("POST /v1/sessions")))
    print("\n".join(client.gets.lines("GET /v1/sessions/{id}")))


if __name__ == "__main__":
    main()
