"""Traces (OpenTelemetry), off unless STEPLINE_OTEL_ENDPOINT names an OTLP/HTTP collector.

A session is one trace, and its trace id is the session id: its 128 bits, the same hex digits
without the dashes. So every process that drives the session (the worker that created it, one
that took it over, one started after a crash) adds its spans to the same trace, with nothing
written to the log, and anyone holding a session id can open its trace. Each run of the session
(from its claim until it settles or stops) is a root span, `session <name>`; several runs are
several roots of the one trace, which is what happened. Under a run: a span per step attempt,
and under those a span per command or check and per model call (the GenAI conventions' names:
model and tokens, never a prompt or a reply).

The trace id is given to the root span by an id generator that takes it from a context variable
set just for that span's start (`SessionTraceIds`), rather than by a made-up remote parent:
a parent that no process ever exports would leave every run dangling from a span no collector
has, which trace viewers flag as a broken trace.

What spans carry is what the log records, redacted: step texts (the tenant's own workflow), the
executor and command, a request's method and URL as recorded (placeholders, not secrets),
outcomes and error codes. Never a secret's value, a prompt, a reply or a response body.

Off, every span is `NO_SPAN`, whose setters do nothing, and OpenTelemetry is not even imported
(its API alone takes tens of milliseconds to import, on every `stepline` command): a branch per
span. On, spans are batched and exported in the background, and flushed when the process's
runtime closes (`stepline serve`, `worker`, `run`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from domain.errors import StandardError
from engine.logs import LOGGER_NAME

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, Tracer

    from domain.session import WorkflowSession
    from engine.executors import Command
    from engine.settings import Settings

log = logging.getLogger(LOGGER_NAME)

SERVICE_NAME = "stepline"
TRACES_PATH = "/v1/traces"
SPAN_NAME_CHARS = 120
"""Of a step's text in its span's name: enough to tell steps apart in a trace view."""

_SESSION_TRACE_ID: ContextVar[int | None] = ContextVar("stepline_session_trace_id", default=None)
_REQUEST_SPAN: ContextVar[Span | None] = ContextVar("stepline_request_span", default=None)
"""The API request being served: what a session's creation links from. Kept apart from the
current span, which a framework's own spans (FastAPI's, non-recording) may stand in for."""


class TracedSpan(Protocol):
    """What Stepline does with a span: an OpenTelemetry span when tracing, else `NO_SPAN`."""

    def set_attribute(self, key: str, value: str | int) -> None: ...

    def is_recording(self) -> bool: ...


class NoSpan:
    """The span of every block when tracing is off: it records nothing."""

    def set_attribute(self, key: str, value: str | int) -> None:
        pass

    def is_recording(self) -> bool:
        return False


NO_SPAN = NoSpan()
_OFF: AbstractContextManager[TracedSpan] = nullcontext(NO_SPAN)


def trace_id_of(session_id: UUID) -> str:
    """The session's trace id as W3C Trace Context writes it: 32 lowercase hex digits."""
    return session_id.hex


def session_link(session_id: UUID) -> Link:
    """A link to the session's trace (from the API request that created it). A link names a
    span, and a session's runs get their span ids only when they start: it names the trace
    and, as its span, the session id's low 64 bits, the same for every link to the session."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags  # noqa: PLC0415

    span_id = session_id.int & 0xFFFF_FFFF_FFFF_FFFF or 1
    context = SpanContext(
        session_id.int, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return Link(context, {"stepline.session_id": str(session_id)})


def traces_endpoint(endpoint: str) -> str:
    """STEPLINE_OTEL_ENDPOINT is the collector's base URL (`http://collector:4318`), as the
    OTLP exporter's own OTEL_EXPORTER_OTLP_ENDPOINT is; a URL that already ends in the traces
    path is taken as it is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def service_version() -> str:
    try:
        return metadata.version(SERVICE_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


class Tracing:
    """The process's tracer: one per process, built by the composition root."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer: Tracer | None = None
        if provider is not None:
            self._tracer = provider.get_tracer("stepline", service_version())

    @classmethod
    def of(cls, settings: Settings) -> Tracing:
        """Exporting to STEPLINE_OTEL_ENDPOINT if set, else off."""
        if settings.otel_endpoint is None:
            return OFF
        return cls(_exporting_provider(traces_endpoint(settings.otel_endpoint)))

    @property
    def on(self) -> bool:
        return self._tracer is not None

    def flush(self) -> None:
        """Export every span ended so far (tests read them; a process about to stop)."""
        if self._provider is not None:
            self._provider.force_flush()

    def shutdown(self) -> None:
        """Export what is left and stop the exporter's thread."""
        if self._provider is not None:
            self._provider.shutdown()

    # ---- a session's spans --------------------------------------------------------------

    def session_run(self, session: WorkflowSession) -> AbstractContextManager[TracedSpan]:
        """A run of the session: a root span of the session's trace."""
        if self._tracer is None:
            return _OFF
        attributes = {"stepline.session_id": str(session.id), "stepline.tenant": session.tenant}
        return self._span(f"session {session.name}", attributes, trace_id=session.id.int)

    def step(
        self, session: WorkflowSession, index: int, text: str, attempt: int
    ) -> AbstractContextManager[TracedSpan]:
        """One attempt at one step, inside the run's span."""
        if self._tracer is None:
            return _OFF
        attributes: dict[str, str | int] = {
            "stepline.session_id": str(session.id),
            "stepline.tenant": session.tenant,
            "stepline.step_index": index,
            "stepline.attempt": attempt,
        }
        return self._span(f"step {index}: {text[:SPAN_NAME_CHARS]}", attributes)

    def command(
        self,
        session: WorkflowSession,
        index: int,
        command: Command,
        recorded_args: Mapping[str, Any],
    ) -> AbstractContextManager[TracedSpan]:
        """A command or a check, as recorded: `recorded_args` are redacted of secrets. A
        request reaches a target: a client span, whose child the target's server span is."""
        if self._tracer is None:
            return _OFF
        attributes: dict[str, str | int] = {
            "stepline.session_id": str(session.id),
            "stepline.tenant": session.tenant,
            "stepline.step_index": index,
            "stepline.executor": command.executor,
            "stepline.command": command.name,
        }
        if command.idempotency_key:
            attributes["stepline.idempotency_key"] = command.idempotency_key
        if command.executor == "http" and command.name == "request":
            attributes["http.request.method"] = str(recorded_args.get("method", "")).upper()
            attributes["stepline.http.url"] = str(recorded_args.get("url", ""))
        name = f"{command.executor}.{command.name}"
        return self._span(name, attributes, client=command.name == "request")

    def chat(self, model: str) -> AbstractContextManager[TracedSpan]:
        """A call of the model, named and described as the GenAI semantic conventions say;
        `used` adds what it answered with."""
        if self._tracer is None:
            return _OFF
        attributes = {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
        }
        return self._span(f"chat {model}", attributes, client=True)

    @contextmanager
    def _span(
        self,
        name: str,
        attributes: Mapping[str, str | int],
        *,
        client: bool = False,
        trace_id: int | None = None,
    ) -> Iterator[TracedSpan]:
        """A span, current while the block runs. A root (given `trace_id`) starts from an
        empty context, so no caller's span (an API request's) becomes its parent. The run's
        own ways of stopping (an interruption, a lost lease) are not errors: the span records
        which one ended it, and its status is set by what the step or command came to."""
        from opentelemetry import trace  # noqa: PLC0415 - imported once tracing is on
        from opentelemetry.context import Context  # noqa: PLC0415

        assert self._tracer is not None
        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        context = None
        token = None
        if trace_id is not None:
            context = Context()
            token = _SESSION_TRACE_ID.set(trace_id)
        try:
            span = self._tracer.start_span(name, context, kind, attributes)
        finally:
            if token is not None:
                _SESSION_TRACE_ID.reset(token)
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield span
            except BaseException as stopped:
                span.set_attribute("stepline.stopped_by", type(stopped).__name__)
                raise

    # ---- the API ------------------------------------------------------------------------

    @contextmanager
    def serving(self, method: str, path: str, headers: Mapping[str, str]) -> Iterator[TracedSpan]:
        """An API request's span (SERVER), current while it is served, its parent the caller's
        `traceparent` if one was sent; `served` names it for its route."""
        from opentelemetry import trace  # noqa: PLC0415 - imported once tracing is on
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        assert self._tracer is not None
        parent = TraceContextTextMapPropagator().extract(headers)
        attributes = {"http.request.method": method, "url.path": path}
        span = self._tracer.start_span(method, parent, trace.SpanKind.SERVER, attributes)
        token = _REQUEST_SPAN.set(span)
        try:
            with trace.use_span(span, end_on_exit=True):
                yield span
        finally:
            _REQUEST_SPAN.reset(token)

    def link_to_session(self, session_id: UUID) -> None:
        """Link the span of the request being served (it created the session) to the
        session's trace."""
        span = _REQUEST_SPAN.get() if self._tracer is not None else None
        if span is not None:
            link = session_link(session_id)
            span.add_link(link.context, link.attributes)


def served(span: TracedSpan, method: str, route: str | None, status: int) -> None:
    """Name an API request's span for its route, and say how it was answered."""
    from opentelemetry.trace import Span, StatusCode  # noqa: PLC0415

    if not isinstance(span, Span):
        return
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


def inject_trace_context(headers: MutableMapping[str, str]) -> None:
    """Add `traceparent` (and `tracestate`) for the current span to outgoing headers, unless
    the request already carries its own; nothing without a current span."""
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    if "traceparent" not in headers:
        TraceContextTextMapPropagator().inject(headers)


def ended(span: TracedSpan, status: str, error: StandardError | None = None) -> None:
    """Say how a step or a command came out: its status, and an error's code (its message may
    quote what a target answered, so it stays in the log)."""
    if not span.is_recording():
        return
    from opentelemetry.trace import Span, Status, StatusCode  # noqa: PLC0415

    span.set_attribute("stepline.status", status)
    if error is not None and isinstance(span, Span):
        span.set_attribute("error.type", error.code)
        span.set_status(Status(StatusCode.ERROR, error.code))


def used(span: TracedSpan, model: str, input_tokens: int, output_tokens: int) -> None:
    """What a model call answered with: the model that answered and the tokens spent."""
    span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)


def _exporting_provider(endpoint: str) -> TracerProvider:
    """Spans batched and sent to the collector in the background (the SDK imported only here:
    a process that does not trace does without it)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator  # noqa: PLC0415

    class SessionTraceIds(RandomIdGenerator):
        """A session run's root span takes the session's trace id; any other root, a new one.
        Either way the id's low 56 bits are uniformly random, as the W3C's random flag, which
        the SDK sets, says: a session id is a UUID4, or a UUID5 (a schedule's firing) whose
        bits come from SHA-1."""

        def generate_trace_id(self) -> int:
            wanted = _SESSION_TRACE_ID.get()
            return wanted if wanted is not None else super().generate_trace_id()

    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": service_version()})
    provider = TracerProvider(resource=resource, id_generator=SessionTraceIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("Tracing: spans are exported to %s", endpoint)
    return provider


OFF = Tracing()
"""No tracing: every span is `NO_SPAN`."""
