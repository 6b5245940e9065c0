"""Traces through the API: request spans, the link from a session's creation to its trace, and
the trace id a session shows, as a collector stand-in receives them over OTLP/HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import Api, ApiFactory
from tests.otlp_collector import Collector, ReceivedSpan
from tests.waiting import eventually

TRACE_URL = "http://jaeger.example:16686/trace/{trace_id}"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector().serving() as serving:
        yield serving


def run_session(api: Api, target: str, **headers: str) -> str:
    """A one-step session created over HTTP and driven to its end; its id."""
    with api.client("alice", **headers) as alice:
        body = {"name": "echo", "base_url": target, "steps": ["GET /trace-echo"]}
        response = alice.post("/v1/sessions", json=body)
        assert response.status_code == 201, response.text
        session_id: str = response.json()["session_id"]
        eventually(
            lambda: alice.get(f"/v1/sessions/{session_id}").json()["status"] == "completed",
            "the session completed",
        )
    return session_id


def creation_span(collector: Collector) -> ReceivedSpan:
    return next(s for s in collector.received() if s.name == "POST /v1/sessions")


def test_the_request_that_creates_a_session_links_to_the_sessions_trace(
    start_api: ApiFactory, target: str, collector: Collector
) -> None:
    api = start_api(otel_endpoint=collector.url)
    session_id = run_session(api, target)
    trace_id = session_id.replace("-", "")

    def run_spans() -> list[ReceivedSpan]:
        """The run's root span, once the worker thread has ended it (just after the session's
        last write, which the test may see first) and it is exported."""
        api.services.runtime.tracing.flush()
        return [s for s in collector.received() if s.trace_id == trace_id and not s.parent_id]

    run = eventually(run_spans, "the session's run span exported")
    created = creation_span(collector)
    assert created.attributes["http.route"] == "/v1/sessions"
    assert created.attributes["http.response.status_code"] == 201
    assert [linked_trace for linked_trace, _ in created.links] == [trace_id]
    assert created.trace_id != trace_id  # the request is a trace of its own
    assert [s.name for s in run] == ["session echo"]


def test_a_request_span_continues_the_callers_trace(
    start_api: ApiFactory, target: str, collector: Collector
) -> None:
    api = start_api(otel_endpoint=collector.url)
    run_session(api, target, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    api.services.runtime.tracing.flush()

    created = creation_span(collector)
    assert (created.trace_id, created.parent_id) == (CALLER_TRACE, CALLER_SPAN)


def test_a_traced_session_shows_its_trace_id_and_where_to_view_it(
    start_api: ApiFactory, target: str, collector: Collector
) -> None:
    api = start_api(otel_endpoint=collector.url, otel_trace_url=TRACE_URL)
    session_id = run_session(api, target)

    with api.client("alice") as alice:
        shown = alice.get(f"/v1/sessions/{session_id}").json()
    trace_id = session_id.replace("-", "")
    assert shown["trace_id"] == trace_id
    assert shown["trace_url"] == f"http://jaeger.example:16686/trace/{trace_id}"


def test_untraced_a_session_shows_no_trace_and_no_request_is_exported(
    start_api: ApiFactory, target: str, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own variable names the collector: Stepline traces on its own setting only.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    api = start_api()
    session_id = run_session(api, target)

    with api.client("alice") as alice:
        shown = alice.get(f"/v1/sessions/{session_id}").json()
    assert (shown["trace_id"], shown["trace_url"]) == (None, None)
    assert not api.services.runtime.tracing.on
    assert collector.received() == []
