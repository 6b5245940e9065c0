"""Traces: a session's spans as a collector receives them over OTLP/HTTP, and the
`traceparent` its HTTP commands send (the example app echoes the one it got)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import UUID

import pytest

from domain.session import SessionStatus, WorkflowSession
from engine.store.app import Stepline
from tests.conftest import PASSWORD
from tests.integration.conftest import LoopFactory, drive, script_sign_in, start_session
from tests.otlp_collector import Collector, ReceivedSpan
from tests.scripted_model import ScriptedModel

SIGN_IN = "Sign in as the demo user"
STEPS = ["GET /trace-echo", SIGN_IN, "expect status 200"]


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector().serving() as serving:
        yield serving


def traceparent_sent(app: Stepline, session_id: UUID) -> str | None:
    """The `traceparent` the example app says the session's first request carried."""
    finished = next(
        e for e in app.history(session_id) if isinstance(e, WorkflowSession.CommandFinished)
    )
    sent: str | None = json.loads(json.loads(finished.output)["body"])["traceparent"]
    return sent


def run_traced_session(
    make_loop: LoopFactory, model: ScriptedModel, target: str, collector: Collector
) -> tuple[UUID, list[ReceivedSpan], Stepline]:
    """The three steps driven with tracing on, every span exported before this returns."""
    script_sign_in(model)
    model.calls("complete_step", summary="signed in", evidence=["200"])
    loop = make_loop(otel_endpoint=collector.url)
    session_id = start_session(loop, list(STEPS), base_url=target)
    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    loop.tracing.flush()
    return session_id, collector.received(), loop.app


def children_of(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


def test_a_session_is_one_trace_of_its_steps_commands_and_model_calls(
    make_loop: LoopFactory, model: ScriptedModel, target: str, collector: Collector
) -> None:
    session_id, spans, _ = run_traced_session(make_loop, model, target, collector)

    assert {s.trace_id for s in spans} == {session_id.hex}
    [root] = [s for s in spans if not s.parent_id]
    assert root.name == "session task loop test"
    assert root.attributes["stepline.status"] == "completed"
    assert root.attributes["stepline.tenant"] == "acme"
    assert root.resource["service.name"] == "stepline"
    assert "service.version" in root.resource
    steps = children_of(spans, root)
    assert [s.name for s in steps] == [f"step {i}: {text}" for i, text in enumerate(STEPS)]
    assert [s.attributes["stepline.step_index"] for s in steps] == [0, 1, 2]
    assert {s.attributes["stepline.attempt"] for s in steps} == {1}
    assert {s.attributes["stepline.status"] for s in steps} == {"completed"}
    echo, sign_in, check = ([c.name for c in children_of(spans, step)] for step in steps)
    assert echo == ["http.request"]
    assert sign_in == ["chat scripted-model", "http.request"] * 2 + ["chat scripted-model"]
    assert check == ["http.expect_status"]
    assert len(spans) == 1 + 3 + 1 + 5 + 1  # nothing beside the tree


def test_a_model_call_carries_the_genai_attributes(
    make_loop: LoopFactory, model: ScriptedModel, target: str, collector: Collector
) -> None:
    _, spans, _ = run_traced_session(make_loop, model, target, collector)

    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 3
    for chat in chats:
        assert chat.attributes["gen_ai.system"] == "openai"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "scripted-model"
        assert chat.attributes["gen_ai.response.model"] == "scripted-model"
        assert chat.attributes["gen_ai.usage.input_tokens"] == 20
        assert chat.attributes["gen_ai.usage.output_tokens"] == 5


def test_the_target_receives_the_request_spans_traceparent(
    make_loop: LoopFactory, model: ScriptedModel, target: str, collector: Collector
) -> None:
    session_id, spans, app = run_traced_session(make_loop, model, target, collector)

    sent = traceparent_sent(app, session_id)
    [request] = [s for s in spans if s.name == "http.request" and "step 0" in parent_name(spans, s)]
    assert sent is not None
    version, trace_id, parent_id, flags = sent.split("-")
    assert (version, trace_id, parent_id) == ("00", session_id.hex, request.span_id)
    assert int(flags, 16) & 1  # sampled
    assert request.attributes["http.request.method"] == "GET"
    assert request.attributes["stepline.http.url"] == "/trace-echo"


def parent_name(spans: list[ReceivedSpan], span: ReceivedSpan) -> str:
    return next(s.name for s in spans if s.span_id == span.parent_id)


def test_no_exported_span_holds_a_secrets_value(
    make_loop: LoopFactory, model: ScriptedModel, target: str, collector: Collector
) -> None:
    _, spans, _ = run_traced_session(make_loop, model, target, collector)

    sign_ins = [s for s in spans if s.attributes.get("http.request.method") == "POST"]
    assert len(sign_ins) == 1  # the request whose body held the password was traced
    assert collector.bodies
    assert not [body for body in collector.bodies if PASSWORD.encode() in body]


def test_a_second_run_of_a_session_adds_to_the_same_trace(
    make_loop: LoopFactory, target: str, collector: Collector
) -> None:
    loop = make_loop(ai=False, otel_endpoint=collector.url)
    session_id = start_session(loop, ["GET /trace-echo", "GET /login"], base_url=target)
    loop.app.pause(session_id, reason="look first", actor="alice")
    drive(loop, session_id)  # a run that finds it paused
    loop.app.resume(session_id, actor="alice")
    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    loop.tracing.flush()

    spans = collector.received()
    roots = [s for s in spans if not s.parent_id]
    assert [r.attributes["stepline.status"] for r in roots] == ["paused", "completed"]
    assert {s.trace_id for s in spans} == {session_id.hex}


def test_untraced_nothing_is_exported_and_no_traceparent_is_sent(
    make_loop: LoopFactory,
    model: ScriptedModel,
    target: str,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The SDK's own variable names the collector: Stepline traces on its own setting only.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    script_sign_in(model)
    model.calls("complete_step", summary="signed in", evidence=["200"])
    loop = make_loop()
    session_id = start_session(loop, list(STEPS), base_url=target)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    loop.tracing.flush()
    assert not loop.tracing.on
    assert traceparent_sent(loop.app, session_id) is None
    assert collector.received() == []
