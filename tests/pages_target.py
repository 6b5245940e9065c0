"""A target on loopback whose pages can change between runs: the world a learned action meets.

Each GET of a page it serves answers 200 with a small JSON body; a page taken away answers 404,
so a learned action that asks for it misses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Pages:
    paths: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> int:
        with self._lock:
            self.asked.append(path)
            return 200 if path in self.paths else 404

    def move(self, old: str, new: str) -> None:
        """The page at `old` is now at `new`: the target changed."""
        with self._lock:
            self.paths.discard(old)
            self.paths.add(new)

    @contextmanager
    def serving(self) -> Iterator[str]:
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = pages.answer(self.path)
                body = json.dumps({"page": self.path, "status": status}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
            yield self.base_url
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
