"""ASGI middleware: trusted Host headers, a request body size limit, HTTP request counts
and latency, and a span per request when tracing is on."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.errors import problem
from domain.errors import StandardError
from engine.tracing import OFF, Tracing, served

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ANY_HOST = "*"


def host_of_header(header: str) -> str:
    """The name in a Host header, without its port or an IPv6 address's brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@lru_cache(maxsize=256)
def is_loopback_name(name: str) -> bool:
    """Remembered, as every request's Host header in dev mode is asked about: parsing the
    address each time costs the event loop."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which Host headers the server answers: the names listed (`*`: any), or with none
    listed, the loopback names (localhost, 127.0.0.0/8, ::1). A page that rebinds its own
    name to a loopback server sends its own name, and is refused."""

    def __init__(self, allowed: Iterable[str] = (), any_host: bool = False) -> None:
        self.allowed = frozenset(host_of_header(h) if h != ANY_HOST else h for h in allowed)
        self.any_host = any_host or ANY_HOST in self.allowed

    def admits(self, header: str | None) -> bool:
        if self.any_host:
            return True
        name = host_of_header(header or "")
        if self.allowed:
            return name in self.allowed
        return is_loopback_name(name)


class TrustedHosts:
    """Refuse a request whose Host header the policy does not admit (400, a problem)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.policy.any_host:
            await self.app(scope, receive, send)
            return
        header = header_value(scope, b"host")
        host = header.decode("latin-1") if header is not None else None
        if self.policy.admits(host):
            await self.app(scope, receive, send)
            return
        error = StandardError.of(
            "HOST_NOT_ALLOWED", f"this server does not answer for the host {host!r}"
        )
        await problem(error)(scope, receive, send)


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The request's header `name` (lower case), the last if it came more than once."""
    found = None
    for key, value in scope["headers"]:
        if key == name:
            found = value
    return found


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413, whether or not they declare a length.

    A body that declares its length (or a request without one) is refused by that length
    alone: the server (uvicorn) never hands on more than a declared length, so such a request
    goes on untouched. A chunked body is read here (at most `limit` + 1 bytes) and handed on
    whole, so an oversized chunked upload is refused before the app sees any of it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header_value(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        if header_value(scope, b"transfer-encoding") is None:
            await self.app(scope, receive, send)
            return
        body, disconnected = await self._read(receive)
        if disconnected:
            return
        if len(body) > self.limit:
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while size <= self.limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks), True
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over {self.limit} bytes"
        error = StandardError.of("PAYLOAD_TOO_LARGE", message, {"limit": self.limit})
        await problem(error, status=413)(scope, receive, send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive`, with the whole body already read given again first."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body, only the disconnect is left to come

    return replay


class HttpMetrics:
    """Request counts by method, route and status, and a latency histogram, per process."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[float, int] = defaultdict(int)
        self.total_s = 0.0
        self.observed = 0
        self._lock = threading.Lock()

    def observe(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        with self._lock:
            self.counts[(method, route, status)] += 1
            self.total_s += elapsed_s
            self.observed += 1
            for bound in LATENCY_BUCKETS_S:
                if elapsed_s <= bound:
                    self.buckets[bound] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self.counts),
                "buckets": dict(self.buckets),
                "total_s": self.total_s,
                "observed": self.observed,
            }


class Measure:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - started)


class Traced:
    """A span per request when tracing is on (`engine.tracing`): named for its route, the
    caller's `traceparent` its parent; a request that creates a session links its span to the
    session's trace. The process's tracing is in the app's state once its lifespan began."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing: Tracing = getattr(self.state, "tracing", OFF)
        if scope["type"] != "http" or not tracing.on:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.serving(method, scope["path"], headers) as span:
            try:
                await self.app(scope, receive, recording_send)
            finally:
                served(span, method, getattr(scope.get("route"), "path", None), status)
