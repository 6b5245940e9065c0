"""A webhook receiver on loopback, as a tenant would run one: it verifies every delivery's
signature with the Standard Webhooks package and answers with the statuses it is given."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: str
    payload: Any
    """The body as the package read it once verified; None if the signature did not verify."""
    answered: int

    @property
    def verified(self) -> bool:
        return self.payload is not None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    secret: str = ""
    """The tenant's webhook secret, once the test has made it."""
    answers: list[int] = field(default_factory=list)
    """The statuses to answer with, in turn; 200 once they run out."""
    always: int = 200
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, headers: dict[str, str], body: str) -> int:
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            payload = None
        with self._lock:
            answer = self.answers.pop(0) if self.answers else self.always
            self.received.append(Received(headers, body, payload, answer))
        return answer

    def got(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    @contextmanager
    def serving(self) -> Iterator[str]:
        """Listen on loopback; yields the URL to give as the webhook's."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                headers = {name.lower(): value for name, value in self.headers.items()}
                self.send_response(receiver.take(headers, body))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/hooks/stepline"
        finally:
            server.shutdown()
            server.server_close()
