"""An attacker's workflow trying to reach loopback services through the HTTP executor and the
browser: every attempt is refused before a byte reaches the receiver, which logs each
connection it is sent. Loopback targets only."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from domain.session import SessionStatus, StepSpec
from domain.tenant import Policy
from engine.executors import Command, Executor, Outcome
from engine.executors.egress_proxy import EgressProxy
from engine.executors.http import MAX_BODY_BYTES
from engine.executors.kinds import BrowserKind, ExecutorSetup, http_executor
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.egress import EgressPolicy
from tests import workloads


class Receiver(ThreadingHTTPServer):
    """A loopback HTTP server that logs every connection made to it and every request."""

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        self.connections: list[Any] = []
        self.requests: list[str] = []
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"reached")
        super().__init__(address, ReceiverHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections.append(client_address)
        return True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in {"Content-Type": "text/html", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiving(host: str = "127.0.0.1", port: int = 0) -> Iterator[Receiver]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Receiver((host, port), family)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The attacker's target, on 127.0.0.1 (and on ::1 at the same port when it is free)."""
    with receiving() as v4:
        try:
            with receiving("::1", v4.port) as v6:
                v4.connections, v4.requests = v6.connections, v6.requests  # one log
                yield v4
        except OSError:
            yield v4


def settings_for(tmp_path: Path) -> Settings:
    return Settings(database_url=None, data_dir=tmp_path)


def http_for(tmp_path: Path, *allow: str) -> Executor:
    setup = ExecutorSetup(
        uuid4(), {}, settings_for(tmp_path), Secrets({}), Policy(egress_allow=allow)
    )
    return http_executor(setup)


def get(executor: Executor, url: str) -> Outcome:
    return executor.run(Command("http", "request", {"method": "GET", "url": url}))


def assert_refused(outcome: Outcome, rule: str = "loopback") -> dict[str, Any]:
    assert not outcome.ok, outcome.output
    assert outcome.error is not None
    assert outcome.error.code == "EGRESS_REFUSED", outcome.output
    assert outcome.error.details["rule"] == rule
    return outcome.error.details


# ---- the HTTP executor --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "localhost",
        "localhost.",
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "2130706433",
        "[::1]",
        "[::ffff:127.0.0.1]",
    ],
)
def test_a_public_only_tenant_reaches_no_loopback_spelling(
    receiver: Receiver, tmp_path: Path, spelling: str
) -> None:
    executor = http_for(tmp_path)
    try:
        details = assert_refused(get(executor, f"http://{spelling}:{receiver.port}/x"))
    finally:
        executor.close()
    assert details["port"] == receiver.port
    assert receiver.connections == []
    assert receiver.requests == []


def test_a_redirect_from_an_allowed_port_to_another_is_refused_at_the_second_hop(
    receiver: Receiver, tmp_path: Path
) -> None:
    with receiving() as redirector:
        redirector.answer = (302, {"Location": f"http://127.0.0.1:{receiver.port}/secret"}, b"")
        executor = http_for(tmp_path, f"127.0.0.1:{redirector.port}")
        try:
            details = assert_refused(get(executor, f"http://127.0.0.1:{redirector.port}/go"))
        finally:
            executor.close()
        assert redirector.requests == ["/go"]
    assert (details["host"], details["port"]) == ("127.0.0.1", receiver.port)
    assert receiver.connections == []


def test_a_closed_port_and_an_open_port_are_refused_alike(
    receiver: Receiver, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    executor = http_for(tmp_path)
    try:
        to_open = get(executor, f"http://127.0.0.1:{receiver.port}/")
        to_closed = get(executor, f"http://127.0.0.1:{closed}/")
    finally:
        executor.close()
    open_details, closed_details = assert_refused(to_open), assert_refused(to_closed)
    assert {**open_details, "port": 0} == {**closed_details, "port": 0}
    assert to_open.output.replace(str(receiver.port), "P") == to_closed.output.replace(
        str(closed), "P"
    )
    assert receiver.connections == []


def test_an_allowed_loopback_address_is_reached(receiver: Receiver, tmp_path: Path) -> None:
    executor = http_for(tmp_path, "127.0.0.1")
    try:
        outcome = get(executor, f"http://127.0.0.1:{receiver.port}/allowed")
    finally:
        executor.close()
    assert outcome.ok, outcome.output
    assert json.loads(outcome.output)["body"] == "reached"
    assert receiver.requests == ["/allowed"]


def test_an_operator_proxy_in_the_environment_is_not_used(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would connect on the tenant's behalf, to wherever it is told."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{receiver.port}")
    executor = http_for(tmp_path, "api.example.com")
    try:
        assert_refused(get(executor, f"http://127.0.0.1:{receiver.port}/via-proxy"))
    finally:
        executor.close()
    assert receiver.connections == []


def test_a_session_of_an_ordinary_tenant_fails_its_step_with_egress_refused(
    app: Stepline, receiver: Receiver, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    loop = TaskLoop(app, settings, builtin(), Secrets({}))
    session_id = workloads.create_session(
        app,
        name="reach the API's metrics",
        steps=[StepSpec("GET /metrics")],
        tenant="mallory",
        actor="mallory",
        config=session_config(
            settings, {"executor": "http", "base_url": f"http://localhost:{receiver.port}"}
        ),
    )
    try:
        loop.drive(session_id, threading.Event())
    finally:
        loop.close()
    session = app.get_session(session_id)
    assert session.status is SessionStatus.FAILED
    assert session.error is not None
    assert session.error["code"] == "EGRESS_REFUSED"
    assert receiver.connections == []


# ---- the browser --------------------------------------------------------------------------

PAGE = """<!doctype html><html><head><title>attacker's page</title></head><body>
<p id="img">image pending</p><p id="ws">socket pending</p>
<img src="http://127.0.0.1:{port}/pixel.png"
     onload="document.getElementById('img').textContent = 'image loaded'"
     onerror="document.getElementById('img').textContent = 'image failed'">
<script>
  const socket = new WebSocket("ws://127.0.0.1:{port}/socket");
  socket.onopen = () => {{ document.getElementById('ws').textContent = 'socket open'; }};
  socket.onerror = () => {{ document.getElementById('ws').textContent = 'socket failed'; }};
</script>
</body></html>"""


@pytest.fixture
def browser_kind() -> Iterator[BrowserKind]:
    kind = BrowserKind()
    yield kind
    kind.close()


@pytest.fixture
def attacker_page(receiver: Receiver) -> Iterator[Receiver]:
    """A page on another loopback port whose image and WebSocket point at the receiver."""
    with receiving() as pages:
        pages.answer = (200, {}, PAGE.format(port=receiver.port).encode())
        yield pages


def browser_for(kind: BrowserKind, tmp_path: Path, *allow: str) -> Executor:
    # The pages' scripts say what failed once it has: `expect page contains` waits for that up
    # to 30 s, not the 2 s a step waits by default, which a loaded machine may need.
    settings = Settings(database_url=None, data_dir=tmp_path, browser_expect_timeout_ms=30_000)
    setup = ExecutorSetup(uuid4(), {}, settings, Secrets({}), Policy(egress_allow=allow))
    return kind(setup)


def browse(executor: Executor, name: str, **args: Any) -> Outcome:
    return executor.run(Command("browser", name, args))


def test_a_page_from_an_allowed_port_cannot_load_an_image_from_the_receiver(
    browser_kind: BrowserKind, attacker_page: Receiver, receiver: Receiver, tmp_path: Path
) -> None:
    executor = browser_for(browser_kind, tmp_path, f"127.0.0.1:{attacker_page.port}")
    try:
        opened = browse(executor, "navigate", url=f"http://127.0.0.1:{attacker_page.port}/")
        assert opened.ok, opened.output
        settled = browse(executor, "expect_page_contains", text="image failed")
        assert settled.ok, settled.output
    finally:
        executor.close()
    assert attacker_page.requests[0] == "/"
    assert receiver.connections == []


def test_a_page_from_an_allowed_port_cannot_open_a_websocket_to_the_receiver(
    browser_kind: BrowserKind, attacker_page: Receiver, receiver: Receiver, tmp_path: Path
) -> None:
    executor = browser_for(browser_kind, tmp_path, f"127.0.0.1:{attacker_page.port}")
    try:
        opened = browse(executor, "navigate", url=f"http://127.0.0.1:{attacker_page.port}/")
        assert opened.ok, opened.output
        settled = browse(executor, "expect_page_contains", text="socket failed")
        assert settled.ok, settled.output
    finally:
        executor.close()
    assert receiver.connections == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_navigating_to_the_receiver_fails_with_egress_refused(
    browser_kind: BrowserKind, receiver: Receiver, tmp_path: Path, scheme: str
) -> None:
    executor = browser_for(browser_kind, tmp_path)
    try:
        outcome = browse(executor, "navigate", url=f"{scheme}://127.0.0.1:{receiver.port}/")
    finally:
        executor.close()
    details = assert_refused(outcome)
    assert (details["host"], details["port"]) == ("127.0.0.1", receiver.port)
    assert receiver.connections == []


def test_a_redirect_from_an_allowed_page_to_the_receiver_is_refused(
    browser_kind: BrowserKind, receiver: Receiver, tmp_path: Path
) -> None:
    with receiving() as redirector:
        redirector.answer = (302, {"Location": f"http://127.0.0.1:{receiver.port}/secret"}, b"")
        executor = browser_for(browser_kind, tmp_path, f"127.0.0.1:{redirector.port}")
        try:
            outcome = browse(executor, "navigate", url=f"http://127.0.0.1:{redirector.port}/")
        finally:
            executor.close()
    details = assert_refused(outcome)
    assert details["port"] == receiver.port
    assert receiver.connections == []


RTC_PAGE = """<!doctype html><html><body><p id="rtc">gathering</p><script>
  const peer = new RTCPeerConnection({{iceServers: [{{urls: "stun:127.0.0.1:{port}"}}]}});
  peer.createDataChannel("leak");
  peer.onicegatheringstatechange = () => {{
    if (peer.iceGatheringState === "complete") {{
      document.getElementById("rtc").textContent = "gathering complete";
    }}
  }};
  peer.createOffer().then((offer) => peer.setLocalDescription(offer));
</script></body></html>"""


WEBTRANSPORT_PAGE = """<!doctype html><html><body><p id="wt">connecting</p><script>
  const show = (error) => {{ document.getElementById("wt").textContent = "transport failed"; }};
  try {{
    const transport = new WebTransport("https://127.0.0.1:{port}/leak");
    transport.ready.catch(show);
    transport.closed.catch(show);
  }} catch (error) {{ show(error); }}
</script></body></html>"""


@contextmanager
def udp_receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0)
        yield udp


def open_udp_page(
    kind: BrowserKind, tmp_path: Path, page: str, udp: socket.socket, settled: str
) -> None:
    """Open `page` (pointed at `udp`'s port) from an allowed port; wait until `settled` shows."""
    with receiving() as pages:
        pages.answer = (200, {}, page.format(port=udp.getsockname()[1]).encode())
        executor = browser_for(kind, tmp_path, f"127.0.0.1:{pages.port}")
        try:
            opened = browse(executor, "navigate", url=f"http://127.0.0.1:{pages.port}/")
            waited = browse(executor, "expect_page_contains", text=settled)
        finally:
            executor.close()
    assert opened.ok, opened.output
    assert waited.ok, waited.output


def test_a_page_cannot_send_webrtc_udp_around_the_proxy(
    browser_kind: BrowserKind, tmp_path: Path
) -> None:
    """STUN over UDP would reach any address with no proxy in the way."""
    with udp_receiver() as stun:
        open_udp_page(browser_kind, tmp_path, RTC_PAGE, stun, "gathering complete")
        with pytest.raises(BlockingIOError):  # every candidate gathered: any STUN was sent
            stun.recvfrom(2048)


def test_a_page_cannot_open_a_webtransport_over_udp_around_the_proxy(
    browser_kind: BrowserKind, tmp_path: Path
) -> None:
    """WebTransport is QUIC, over UDP: no proxy in the way either."""
    with udp_receiver() as quic:
        open_udp_page(browser_kind, tmp_path, WEBTRANSPORT_PAGE, quic, "transport failed")
        with pytest.raises(BlockingIOError):
            quic.recvfrom(2048)


def test_an_allowed_page_and_its_image_and_websocket_go_through_the_proxy(
    browser_kind: BrowserKind, attacker_page: Receiver, receiver: Receiver, tmp_path: Path
) -> None:
    executor = browser_for(browser_kind, tmp_path, "127.0.0.1")
    try:
        outcome = browse(executor, "navigate", url=f"http://127.0.0.1:{attacker_page.port}/")
        # the receiver answers both with a page: neither an image nor a socket upgrade
        image = browse(executor, "expect_page_contains", text="image failed")
        websocket = browse(executor, "expect_page_contains", text="socket failed")
    finally:
        executor.close()
    assert outcome.ok, outcome.output
    assert json.loads(outcome.output)["title"] == "attacker's page"
    assert (image.ok, websocket.ok) == (True, True)
    assert sorted(receiver.requests) == ["/pixel.png", "/socket"]


def test_one_proxy_connection_carries_one_request_so_a_second_host_is_never_reached(
    receiver: Receiver,
) -> None:
    """A client pipelining a request for another host behind an allowed one gets the first
    answer, marked `Connection: close`, and the other host is never connected to."""
    with receiving() as allowed:
        proxy = EgressProxy(EgressPolicy.of([f"127.0.0.1:{allowed.port}"]))
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
                client.sendall(
                    f"GET http://127.0.0.1:{allowed.port}/first HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{allowed.port}\r\nConnection: keep-alive\r\n\r\n"
                    f"GET http://127.0.0.1:{receiver.port}/second HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{receiver.port}\r\n\r\n".encode()
                )
                answer = _read_to_end(client)
        finally:
            proxy.close()
    head = answer.split(b"\r\n\r\n")[0].decode().lower().split("\r\n")
    assert head[0].split(" ")[1] == "200"
    assert [line for line in head if line.startswith("connection:")] == ["connection: close"]
    assert allowed.requests == ["/first"]
    assert receiver.connections == []


def test_the_proxy_refuses_a_tunnel_to_a_host_outside_the_policy(receiver: Receiver) -> None:
    proxy = EgressProxy(EgressPolicy.of([]))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
            client.sendall(f"CONNECT 127.1:{receiver.port} HTTP/1.1\r\n\r\n".encode())
            answer = _read_to_end(client).decode()
    finally:
        proxy.close()
    assert answer.startswith("HTTP/1.1 403 Forbidden")
    assert "loopback address 127.0.0.1 (of 127.1:" in answer
    assert "(rule: loopback)" in answer
    assert [r.rule for r in proxy.refusals_since(0)] == ["loopback"]
    assert receiver.connections == []


def _read_to_end(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


# ---- what a tenant's request may not do to the worker -------------------------------------


def test_a_url_the_client_cannot_parse_fails_the_command_instead_of_the_worker(
    receiver: Receiver, tmp_path: Path
) -> None:
    outcome = get(http_for(tmp_path, "127.0.0.1"), f"http://0177.0.0.1:{receiver.port}/x")

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "INVALID_COMMAND"
    assert receiver.requests == []


def test_credentials_in_a_url_are_not_sent_encoded_past_the_redaction(
    receiver: Receiver, tmp_path: Path
) -> None:
    executor = http_for(tmp_path, "127.0.0.1")

    outcome = get(executor, f"http://user:hunter2-pass@127.0.0.1:{receiver.port}/basic")

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "INVALID_COMMAND"
    assert receiver.connections == []


def test_a_huge_response_is_read_only_up_to_the_cap(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answer = (200, {"Content-Type": "text/plain"}, b"x" * (MAX_BODY_BYTES + 4096))

    outcome = get(http_for(tmp_path, "127.0.0.1"), f"http://127.0.0.1:{receiver.port}/big")

    assert outcome.ok, outcome.output
    recorded = json.loads(outcome.output)
    assert recorded["body_size"] == MAX_BODY_BYTES
    assert recorded["body_cut_at_bytes"] == MAX_BODY_BYTES
