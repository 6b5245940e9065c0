"""The browser's way out: a small HTTP proxy on loopback that lets a context's traffic through
only where its tenant's egress policy allows.

Each browser context gets a proxy of its own (its own port, so the port says whose policy
applies). HTTPS and WebSockets arrive as `CONNECT host:port`; plain HTTP as a request for an
absolute URL. Either way the target is resolved once, decided on and connected to by the
checked address (`EgressPolicy.connect`); a refusal is answered `403` with a body naming the
host and the rule, and nothing reaches the target. A plain-HTTP exchange is one request: the
server is asked to close after it and the response tells Chromium so, so a proxy connection is
never reused for a request to another host that nobody checked.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.logs import LOGGER_NAME
from engine.tenancy.egress import EgressPolicy, EgressRefused, Refusal

log = logging.getLogger(LOGGER_NAME)

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
REFUSED_HEADER = "X-Stepline-Egress"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te"}


class BadRequest(Exception):
    """A request the proxy cannot read; answered 400."""


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, head: bytes) -> RequestHead:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise BadRequest(f"not an HTTP request line: {lines[0][:100]!r}") from None
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        return cls(method.upper(), target, version, headers)

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name), "")

    def wants_upgrade(self) -> bool:
        return "upgrade" in self.header("connection").lower() and bool(self.header("upgrade"))


class EgressProxy:
    """One context's proxy, listening on 127.0.0.1 until `close()`."""

    def __init__(
        self, policy: EgressPolicy, connect_timeout_s: float = 10.0, idle_timeout_s: float = 300.0
    ) -> None:
        self.policy = policy
        """Read for every connection: a resumed session's proxy takes its tenant's policy
        as it is now."""
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._refusals: deque[Refusal] = deque(maxlen=256)
        self._count = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name=f"egress-proxy-{self.port}", daemon=True).start()

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refusal_count(self) -> int:
        with self._lock:
            return self._count

    def refusals_since(self, count: int) -> list[Refusal]:
        """The refusals after the first `count` (a mark from `refusal_count`), oldest first."""
        with self._lock:
            recent = self._count - count
            return list(self._refusals)[-recent:] if recent > 0 else []

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        with self._lock:
            still_open, self._open = self._open, set()
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ---- connections --------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        try:
            client.settimeout(self.idle_timeout_s)
            head, rest = _read_head(client)
            request = RequestHead.parse(head)
            if request.method == "CONNECT":
                self._tunnel(client, request, rest)
            else:
                self._forward(client, request, rest)
        except BadRequest as error:
            _answer(client, 400, "Bad Request", str(error))
        except OSError:
            pass  # either side went away: nothing to tell anyone
        finally:
            self._untrack(client)
            client.close()

    def _tunnel(self, client: socket.socket, request: RequestHead, rest: bytes) -> None:
        host, port = authority(request.target)
        upstream = self._open_upstream(client, host, port)
        if upstream is None:
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            upstream.sendall(rest)
            _relay(client, upstream, self.idle_timeout_s, None)

    def _forward(self, client: socket.socket, request: RequestHead, rest: bytes) -> None:
        try:
            url = urlsplit(request.target)
        except ValueError:
            raise BadRequest(f"not a URL: {request.target[:100]!r}") from None
        if url.scheme not in ("http", "ws") or not url.hostname:
            raise BadRequest(f"the proxy takes http:// URLs and CONNECT, not {request.target!r}")
        try:
            port = url.port or 80
        except ValueError:
            raise BadRequest(f"no valid port in {request.target!r}") from None
        upstream = self._open_upstream(client, url.hostname, port)
        if upstream is None:
            return
        upgrade = request.wants_upgrade()
        with upstream:
            upstream.sendall(_origin_form(request, url.path, url.query, upgrade) + rest)
            _relay(client, upstream, self.idle_timeout_s, None if upgrade else ClosingResponse())

    def _open_upstream(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        """The checked connection to `host:port`, or None once the client has been told why
        not (403 for a refusal, 502 for a target that does not answer)."""
        try:
            upstream = self.policy.connect(host, port, self.connect_timeout_s)
        except EgressRefused as refused:
            self._refused(refused.refusal)
            body = f"Stepline refused this connection: {refused} (rule: {refused.refusal.rule})"
            _answer(client, 403, "Forbidden", body, {REFUSED_HEADER: "refused"})
            return None
        except OSError as error:
            _answer(client, 502, "Bad Gateway", f"{host}:{port} did not answer: {error}")
            return None
        upstream.settimeout(self.idle_timeout_s)
        self._track(upstream)
        return upstream

    def _refused(self, refusal: Refusal) -> None:
        log.debug("Egress refused: %s", refusal.message)
        with self._lock:
            self._refusals.append(refusal)
            self._count += 1

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


class ClosingResponse:
    """Rewrites the response head passing back to Chromium to say `Connection: close`
    (interim 1xx heads pass as they are; a 101 switch ends the rewriting)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        self.buffer += data
        passed = b""
        while not self.done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise OSError("the response head is too large")
                return passed
            head, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
            status = _status(head)
            if 100 <= status < 200 and status != 101:
                passed += head
                continue
            self.done = True
            passed += head if status == 101 else _closing(head)
        passed, self.buffer = passed + self.buffer, b""
        return passed


def _relay(
    client: socket.socket, upstream: socket.socket, idle_s: float, response: ClosingResponse | None
) -> None:
    """Copy bytes both ways until either side closes or nothing moves for `idle_s`."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            ready = selector.select(idle_s)
            if not ready:
                return
            for key, _ in ready:
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                data = source.recv(CHUNK)
                if not data:
                    return
                if source is upstream and response is not None:
                    data = response.feed(data)
                key.data.sendall(data)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request head (through its blank line) and whatever arrived after it."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise BadRequest("the request head is too large")
        data = sock.recv(CHUNK)
        if not data:
            raise ConnectionResetError("the client closed before its request head ended")
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    return buffer[:end], buffer[end:]


def authority(target: str) -> tuple[str, int]:
    """`host:443` or `[::1]:443` from a CONNECT request."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"CONNECT needs host:port, not {target!r}")
    return host.strip("[]"), int(port)


def _origin_form(request: RequestHead, path: str, query: str, upgrade: bool) -> bytes:
    """The request as the target server expects it: its path, no proxy headers, and
    `Connection: close` (or the upgrade the client asked for)."""
    target = (path or "/") + (f"?{query}" if query else "")
    lines = [f"{request.method} {target} {request.version}"]
    lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in HOP_BY_HOP]
    lines.append("Connection: Upgrade" if upgrade else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _status(head: bytes) -> int:
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError("the target's answer is not HTTP")
    return int(parts[1])


def _closing(head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    kept = [
        line
        for line in lines[1:]
        if line and line.partition(":")[0].strip().lower() not in HOP_BY_HOP
    ]
    return "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")


def _answer(
    client: socket.socket,
    status: int,
    reason: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> None:
    content = body.encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(content)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
        "Connection: close",
    ]
    with contextlib.suppress(OSError):
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + content)
