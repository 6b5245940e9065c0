"""A scripted OpenAI-compatible server on loopback: the one outside service tests stand in for.

Each POST /v1/chat/completions takes the next scripted reply (a tool call, plain text, broken
arguments or an HTTP error) and records the request, so the real `openai` client runs end to
end and tests can read every prompt that was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    before: Callable[[], None] | None = None
    """Runs in the server before it answers (e.g. a person pausing while the model thinks)."""


def _completion(
    message: dict[str, Any], prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid4().hex[:8]}",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class ScriptedModel:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""

    # ---- scripting ----------------------------------------------------------------------

    def calls(
        self,
        name: str,
        reasoning: str = "",
        tokens: tuple[int, int] = (20, 5),
        before: Callable[[], None] | None = None,
        **arguments: Any,
    ) -> ScriptedModel:
        return self.calls_raw(name, json.dumps(arguments), reasoning, tokens, before)

    def calls_raw(
        self,
        name: str,
        raw_arguments: str,
        reasoning: str = "",
        tokens: tuple[int, int] = (20, 5),
        before: Callable[[], None] | None = None,
    ) -> ScriptedModel:
        message = {
            "role": "assistant",
            "content": reasoning or None,
            "tool_calls": [
                {
                    "id": f"call_{uuid4().hex[:8]}",
                    "type": "function",
                    "function": {"name": name, "arguments": raw_arguments},
                }
            ],
        }
        self.replies.append(Reply(body=_completion(message, *tokens), before=before))
        return self

    def calls_together(self, *names: str) -> ScriptedModel:
        """One reply that calls several tools at once (with no arguments)."""
        calls = [
            {
                "id": f"call_{uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": name, "arguments": "{}"},
            }
            for name in names
        ]
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        self.replies.append(Reply(body=_completion(message, 10, 5)))
        return self

    def says(self, text: str) -> ScriptedModel:
        message = {"role": "assistant", "content": text}
        self.replies.append(Reply(body=_completion(message, 10, 5)))
        return self

    def fails(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> ScriptedModel:
        body = {"error": {"message": message, "type": "scripted", "code": code or str(status)}}
        self.replies.append(Reply(status=status, body=body, headers=headers or {}))
        return self

    def stalls(self, seconds: float) -> ScriptedModel:
        """A reply that comes too late (after the client's timeout)."""
        message = {"role": "assistant", "content": "too late"}
        reply = Reply(body=_completion(message, 1, 1), before=lambda: time.sleep(seconds))
        self.replies.append(reply)
        return self

    # ---- reading what was sent ----------------------------------------------------------

    def tool_names(self, request: int) -> set[str]:
        return {tool["function"]["name"] for tool in self.requests[request].get("tools", [])}

    def prompt(self, request: int) -> str:
        return "\n".join(str(m.get("content")) for m in self.requests[request]["messages"])

    # ---- serving ------------------------------------------------------------------------

    def _answer(self, request: dict[str, Any]) -> Reply:
        self.requests.append(request)
        if not self.replies:
            return Reply(status=500, body={"error": {"message": "the script has no more replies"}})
        reply = self.replies.popleft()
        if reply.before is not None:
            reply.before()
        return reply

    @contextmanager
    def serving(self) -> Iterator[str]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                reply = model._answer(json.loads(self.rfile.read(length)))
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        try:
            yield self.base_url
        finally:
            server.shutdown()
            server.server_close()
