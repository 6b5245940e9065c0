"""Sessions of one tenant under one egress policy share the worker's kept-alive connections;
two tenants, or two policies, never do, and cookies stay each session's own. Against a real
loopback server that counts the connections it accepts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import pytest

from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus, StepSpec
from domain.tenant import Policy
from engine.executors import Command, Executor, Outcome
from engine.executors.http_pool import ConnectionPools
from engine.executors.kinds import ExecutorSetup, HttpKind
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from tests import workloads


class Target(ThreadingHTTPServer):
    """A keep-alive HTTP server logging its connections, their ends and each Cookie header."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.closed: list[Any] = []
        self.cookies: list[str | None] = []
        self.drop_kept = False
        """Close a connection unanswered at its second request, as a server whose keep-alive
        runs out just as the request comes in."""
        self.dropped: list[str] = []
        """The requests that got no answer (method and path)."""
        super().__init__(("127.0.0.1", 0), TargetHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections.append(client_address)
        return True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class TargetHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Target

    served = 0
    """Requests read on this connection (a handler serves one connection)."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.served += 1
        if url.path == "/vanish" or (self.server.drop_kept and self.served > 1):
            self.server.dropped.append(f"{self.command} {url.path}")
            self.close_connection = True  # no answer: the connection just ends
            return
        self.server.cookies.append(self.headers.get("Cookie"))
        if "ms" in query:
            time.sleep(int(query["ms"][0]) / 1000)
        body = b"ok"
        self.send_response(200)
        if url.path == "/login":
            self.send_header("Set-Cookie", f"sid={query['who'][0]}; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.do_GET()  # a POST is only ever dropped here

    def finish(self) -> None:
        super().finish()
        self.server.closed.append(self.client_address)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving() -> Iterator[Target]:
    server = Target()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    with serving() as server:
        yield server


@pytest.fixture
def kind() -> Iterator[HttpKind]:
    http = HttpKind()
    yield http
    http.close()


def session_of(
    kind: HttpKind,
    tmp_path: Path,
    tenant: str,
    *allow: str,
    request_timeout_ms: int = 30_000,
) -> Executor:
    settings = Settings(database_url=None, data_dir=tmp_path, request_timeout_ms=request_timeout_ms)
    policy = Policy(egress_allow=allow)
    return kind(ExecutorSetup(uuid4(), {}, settings, Secrets({}), policy, tenant))


def get(executor: Executor, target: Target, path: str = "/") -> Outcome:
    url = f"http://127.0.0.1:{target.port}{path}"
    return executor.run(Command("http", "request", {"method": "GET", "url": url}))


def one_request(kind: HttpKind, tmp_path: Path, target: Target, tenant: str, *allow: str) -> None:
    """A session's run: its executor built, one request, its executor closed."""
    executor = session_of(kind, tmp_path, tenant, *allow)
    try:
        outcome = get(executor, target)
        assert outcome.ok, outcome.output
    finally:
        executor.close()


def test_two_sessions_of_one_tenant_send_on_one_connection(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    allowed = f"127.0.0.1:{target.port}"
    one_request(kind, tmp_path, target, "acme", allowed)
    one_request(kind, tmp_path, target, "acme", allowed)
    assert len(target.connections) == 1


def test_sessions_a_task_loop_runs_for_one_tenant_send_on_one_connection(
    app: Stepline, target: Target, tmp_path: Path
) -> None:
    settings = Settings(database_url=None, data_dir=tmp_path)
    loop = TaskLoop(app, settings, builtin(), Secrets({}))
    config = {"executor": "http", "base_url": f"http://127.0.0.1:{target.port}"}
    sessions = [
        workloads.create_session(
            app,
            name="one request",
            steps=[StepSpec("GET /"), StepSpec("expect status 200")],
            tenant=DEV_TENANT,
            actor="dev",
            config=session_config(settings, config),
        )
        for _ in range(2)
    ]
    try:
        for session_id in sessions:
            assert loop.drive(session_id, threading.Event()) is SessionStatus.COMPLETED
    finally:
        loop.close()
    assert len(target.connections) == 1
    assert wait_for(lambda: len(target.closed) == 1)  # closed with the loop


def test_two_tenants_never_share_a_connection(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    allowed = f"127.0.0.1:{target.port}"
    one_request(kind, tmp_path, target, "acme", allowed)
    one_request(kind, tmp_path, target, "globex", allowed)
    one_request(kind, tmp_path, target, "acme", allowed)
    one_request(kind, tmp_path, target, "globex", allowed)
    assert len(target.connections) == 2


def test_two_egress_policies_of_one_tenant_never_share_a_connection(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    one_request(kind, tmp_path, target, "acme", f"127.0.0.1:{target.port}")
    one_request(kind, tmp_path, target, "acme", "127.0.0.1")
    assert len(target.connections) == 2


def test_a_session_never_sends_the_cookies_of_another_session_of_its_tenant(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    allowed = f"127.0.0.1:{target.port}"
    alice = session_of(kind, tmp_path, "acme", allowed)
    bob = session_of(kind, tmp_path, "acme", allowed)
    try:
        assert get(alice, target, "/login?who=alice").ok
        assert get(alice, target, "/me").ok
        assert get(bob, target, "/me").ok
    finally:
        alice.close()
        bob.close()
    assert target.cookies == [None, "sid=alice", None]
    assert len(target.connections) == 1  # one connection, taken in turn: shared, cookies not


def test_a_session_keeps_its_cookies_across_answers_that_set_none_and_takes_each_new_one(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    """Only an answer with a `Set-Cookie` is read for cookies (the HTTP executor skips the
    jar for the others): the cookie stays through answers that set none, and a new one
    replaces it."""
    alice = session_of(kind, tmp_path, "acme", f"127.0.0.1:{target.port}")
    try:
        for path in ("/login?who=alice", "/me", "/me", "/login?who=carol", "/me"):
            assert get(alice, target, path).ok
        state = alice.state()
    finally:
        alice.close()
    assert target.cookies == [None, "sid=alice", "sid=alice", "sid=alice", "sid=carol"]
    assert state is not None
    assert [(c["name"], c["value"]) for c in state["cookies"]] == [("sid", "carol")]


def test_a_refused_target_stays_refused_while_a_wider_policy_keeps_a_connection_to_it(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    wide = session_of(kind, tmp_path, "acme", f"127.0.0.1:{target.port}")
    others = [
        session_of(kind, tmp_path, "globex"),  # another tenant, public internet only
        session_of(kind, tmp_path, "acme"),  # the same tenant once its list no longer names it
        session_of(kind, tmp_path, "acme", "127.0.0.1:1"),
    ]
    try:
        assert get(wide, target).ok  # its connection is now kept in the pool
        for executor in others:
            refused = get(executor, target)
            assert refused.error is not None
            assert refused.error.code == "EGRESS_REFUSED"
        assert get(wide, target).ok
    finally:
        for executor in [wide, *others]:
            executor.close()
    assert len(target.connections) == 1
    assert target.cookies == [None, None]  # two requests, both the wide session's


def test_each_session_keeps_its_own_timeout_on_a_shared_pool(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    allowed = f"127.0.0.1:{target.port}"
    patient = session_of(kind, tmp_path, "acme", allowed, request_timeout_ms=5_000)
    hasty = session_of(kind, tmp_path, "acme", allowed, request_timeout_ms=100)
    try:
        assert get(patient, target, "/?ms=300").ok
        late = get(hasty, target, "/?ms=300")
        assert late.error is not None, late.output
        assert late.error.code == "HTTP_REQUEST_FAILED"
        assert get(patient, target, "/?ms=300").ok
    finally:
        patient.close()
        hasty.close()


def test_closing_the_kind_closes_the_kept_connections(target: Target, tmp_path: Path) -> None:
    kind = HttpKind()
    one_request(kind, tmp_path, target, "acme", f"127.0.0.1:{target.port}")
    assert target.closed == []  # kept alive
    kind.close()
    assert wait_for(lambda: len(target.closed) == 1)
    assert kind.pools.kept() == 0


def test_the_least_recently_used_pool_beyond_the_bound_is_closed(
    target: Target, tmp_path: Path
) -> None:
    kind = HttpKind()
    kind.pools = ConnectionPools(most_pools=2)
    allowed = f"127.0.0.1:{target.port}"
    try:
        for tenant in ("acme", "globex", "initech"):
            one_request(kind, tmp_path, target, tenant, allowed)
        assert kind.pools.kept() == 2
        assert wait_for(lambda: len(target.closed) == 1)  # acme's
        one_request(kind, tmp_path, target, "initech", allowed)
        assert len(target.connections) == 3
    finally:
        kind.close()


def test_a_pool_idle_for_longer_than_a_connection_is_kept_is_closed(
    target: Target, tmp_path: Path
) -> None:
    now = [0.0]
    kind = HttpKind()
    kind.pools = ConnectionPools(keepalive_expiry_s=5.0, clock=lambda: now[0])
    allowed = f"127.0.0.1:{target.port}"
    try:
        one_request(kind, tmp_path, target, "acme", allowed)
        now[0] = 6.0
        one_request(kind, tmp_path, target, "globex", allowed)
        assert kind.pools.kept() == 1
        assert wait_for(lambda: len(target.closed) == 1)  # acme's
    finally:
        kind.close()


def test_a_pool_let_go_while_in_use_serves_its_session_to_the_end(
    target: Target, tmp_path: Path
) -> None:
    kind = HttpKind()
    kind.pools = ConnectionPools(most_pools=1)
    allowed = f"127.0.0.1:{target.port}"
    try:
        busy = session_of(kind, tmp_path, "acme", allowed)
        assert get(busy, target).ok
        one_request(kind, tmp_path, target, "globex", allowed)  # acme's pool is let go
        assert get(busy, target).ok  # on its kept connection still
        assert target.closed == []
        busy.close()
        assert wait_for(lambda: len(target.closed) == 1)
    finally:
        kind.close()


def test_an_executor_that_cannot_be_built_gives_its_pool_back(
    target: Target, tmp_path: Path
) -> None:
    """A base URL httpx cannot parse fails the executor's making after it leased its pool:
    the lease goes back, so the pool, once let go, is closed (not kept open for good)."""
    kind = HttpKind()
    kind.pools = ConnectionPools(most_pools=1)
    allowed = f"127.0.0.1:{target.port}"
    settings = Settings(database_url=None, data_dir=tmp_path)
    unparsable = ExecutorSetup(
        uuid4(),
        {"base_url": "::::"},
        settings,
        Secrets({}),
        Policy(egress_allow=(allowed,)),
        "acme",
    )
    try:
        one_request(kind, tmp_path, target, "acme", allowed)  # acme's pool keeps a connection
        with pytest.raises(Exception):  # noqa: B017  (whatever httpx raises for it)
            kind(unparsable)
        one_request(kind, tmp_path, target, "globex", allowed)  # acme's pool is let go
        assert wait_for(lambda: len(target.closed) == 1)  # and closed: nobody holds it
    finally:
        kind.close()


def test_a_request_a_kept_connection_dropped_unanswered_is_sent_again_on_a_new_one(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    allowed = f"127.0.0.1:{target.port}"
    one_request(kind, tmp_path, target, "acme", allowed)  # a connection kept
    target.drop_kept = True  # its keep-alive runs out as the next request comes in
    one_request(kind, tmp_path, target, "acme", allowed)
    assert target.dropped == ["GET /"]
    assert len(target.connections) == 2  # sent again, on a new connection


def test_a_request_is_never_sent_again_on_a_connection_opened_for_it(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    """However the server ends it: it may have acted on the request."""
    executor = session_of(kind, tmp_path, "acme", f"127.0.0.1:{target.port}")
    try:
        outcome = get(executor, target, "/vanish")  # nothing kept yet: a connection of its own
    finally:
        executor.close()
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "HTTP_REQUEST_FAILED"
    assert "without sending a response" in outcome.error.message
    assert target.dropped == ["GET /vanish"]
    assert len(target.connections) == 1


def test_a_request_is_sent_again_once_at_most_and_only_if_its_method_is_idempotent(
    kind: HttpKind, target: Target, tmp_path: Path
) -> None:
    """A server may have acted on a request before it closed the connection unanswered: a
    GET is sent once more (twice is the same as once), a POST never."""
    executor = session_of(kind, tmp_path, "acme", f"127.0.0.1:{target.port}")
    url = f"http://127.0.0.1:{target.port}/vanish"
    try:
        assert get(executor, target).ok  # a connection kept
        got = get(executor, target, "/vanish")  # on it, then on a new one: no third time
        assert get(executor, target).ok  # a connection kept again
        posted = executor.run(Command("http", "request", {"method": "POST", "url": url}))
    finally:
        executor.close()
    assert not got.ok
    assert not posted.ok
    assert target.dropped == ["GET /vanish", "GET /vanish", "POST /vanish"]


def wait_for(condition: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
