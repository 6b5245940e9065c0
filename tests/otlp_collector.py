"""An OpenTelemetry collector stand-in on loopback: it takes OTLP/HTTP exports (`POST
/v1/traces`, `application/x-protobuf`) as a real collector does, decodes them with the
`opentelemetry-proto` messages and keeps every span, so the tests read what the SDK sent."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def value_of(value: AnyValue) -> Any:
    """An attribute's value as Python (the scalar kinds Stepline sets)."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@dataclass(frozen=True)
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        """The parent's span id; empty for a root."""
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {kv.key: value_of(kv.value) for kv in self.span.attributes}

    @property
    def links(self) -> list[tuple[str, str]]:
        """(trace id, span id) of each link."""
        return [(link.trace_id.hex(), link.span_id.hex()) for link in self.span.links]


@dataclass
class Collector:
    url: str = ""
    """The base URL, as STEPLINE_OTEL_ENDPOINT names a collector."""
    spans: list[ReceivedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    """Every export as sent (decompressed), to look for what must not be in any."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.bodies.append(body)
            for resource_spans in request.resource_spans:
                attributes = resource_spans.resource.attributes
                resource = {kv.key: value_of(kv.value) for kv in attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(ReceivedSpan(s, resource) for s in scope_spans.spans)

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    @contextmanager
    def serving(self) -> Iterator[Collector]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                protobuf = self.headers.get("content-type", "") == "application/x-protobuf"
                if self.path != "/v1/traces" or not protobuf:
                    self.send_response(404)
                    self.end_headers()
                    return
                collector.take(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
