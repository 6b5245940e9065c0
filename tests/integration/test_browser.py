"""The browser executor in a real headless Chromium, against the example app's pages on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from psycopg_pool import ConnectionPool

from domain.extraction import Extraction
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.logs import configure_logging
from engine.ownership.executor_state import ExecutorStates
from engine.secrets import Secrets
from engine.store.app import Stepline
from engine.workflows.file import load_workflow
from tests import workloads
from tests.conftest import EXAMPLES, PASSWORD
from tests.integration.conftest import (
    LoopFactory,
    assert_secret_recorded_nowhere,
    drive,
    kept_states,
    start_session,
    wait_for,
)
from tests.scripted_model import ScriptedModel

SIGN_IN = [
    "open /app/login",
    'fill "User" with "demo"',
    'fill "Password" with "{{secrets.DEMO_PASSWORD}}"',
    'click "Sign in"',
]


def finished(app: Stepline, session_id: UUID) -> list[WorkflowSession.CommandFinished]:
    return [e for e in app.history(session_id) if isinstance(e, WorkflowSession.CommandFinished)]


def issued(app: Stepline, session_id: UUID) -> list[WorkflowSession.CommandIssued]:
    return [e for e in app.history(session_id) if isinstance(e, WorkflowSession.CommandIssued)]


def page_of(event: WorkflowSession.CommandFinished) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads(event.output)
    return recorded


def test_the_browser_demo_completes_and_the_todo_came_from_the_form(
    make_loop: LoopFactory, target: str, tmp_path: Path
) -> None:
    workflow = load_workflow(EXAMPLES / "todo-browser.yaml")
    loop = make_loop(ai=False)
    session_id = workloads.create_session(
        loop.app,
        name=workflow.name,
        steps=workflow.step_specs(),
        tenant="acme",
        actor="alice",
        config={**workflow.session_config(), "base_url": target},
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED, session.error
    kinds = {(e.executor, e.name) for e in issued(loop.app, session_id)}
    assert {("browser", "fill"), ("browser", "click"), ("http", "request")} <= kinds
    with httpx.Client(base_url=target) as client:  # the app's own state, through its JSON API
        client.post("/login", json={"user": "demo", "password": PASSWORD})
        items = client.get("/todos").json()["items"]
    assert [(i["title"], i["via"], i["done"]) for i in items] == [
        ("water the plants", "form", True)
    ]
    shots = [a for e in finished(loop.app, session_id) for a in e.artifacts]
    assert [a["kind"] for a in shots] == ["screenshot"]
    stored = tmp_path / "artifacts" / str(session_id) / shots[0]["hash"]
    assert stored.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stored.stat().st_size == shots[0]["size"]


def test_every_result_records_the_page_afterwards(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, SIGN_IN, target, executor="browser")

    assert drive(loop, session_id).status is SessionStatus.COMPLETED

    after_sign_in = page_of(finished(loop.app, session_id)[-1])
    assert after_sign_in["url"] == f"{target}/app/todos"
    assert after_sign_in["title"] == "Todos"
    assert '[3] button "Add"' in after_sign_in["page"]
    login_form = page_of(finished(loop.app, session_id)[0])["page"]
    assert '[1] textbox "User" value=""' in login_form
    assert '[3] button "Sign in"' in login_form


def test_an_ai_browser_step_clicks_what_it_was_shown_and_no_secret_is_recorded(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("DEBUG", "text", Secrets({"DEMO_PASSWORD": PASSWORD}))
    model.calls("browser_fill", reasoning="the user field is 1", target="1", value="demo")
    model.calls(
        "browser_fill",
        reasoning="the password field is 2",
        target="2",
        value="{{secrets.DEMO_PASSWORD}}",
    )
    model.calls("browser_click", reasoning="submit", target='button "Sign in"')
    model.calls("complete_step", summary="signed in", evidence=["the Todos page shows"])
    loop = make_loop()
    session_id = start_session(
        loop, ["open /app/login", "Sign in as demo with the password"], target, executor="browser"
    )

    session = drive(loop, session_id)
    configure_logging("INFO", "text")

    assert session.status is SessionStatus.COMPLETED, session.error
    first_prompt = model.prompt(0)
    assert "The page now" in first_prompt
    assert '[2] textbox "Password"' in first_prompt
    assert '[3] button "Sign in"' in first_prompt
    assert {"browser_click", "browser_fill", "browser_read_page"} <= model.tool_names(0)
    commands = [(e.name, e.args) for e in issued(loop.app, session_id)[1:]]
    assert commands == [
        ("fill", {"target": "1", "value": "demo"}),
        ("fill", {"target": "2", "value": "{{secrets.DEMO_PASSWORD}}"}),
        ("click", {"target": 'button "Sign in"'}),
    ]
    turns = [e for e in loop.app.history(session_id) if isinstance(e, WorkflowSession.TurnRecorded)]
    assert len(turns) == 4
    assert page_of(finished(loop.app, session_id)[-1])["url"] == f"{target}/app/todos"
    # The typed secret is in no event (nor the page snapshots in them), log line or prompt.
    logs = capsys.readouterr().err
    assert "Command issued: browser.fill" in logs
    assert_secret_recorded_nowhere(database_url, logs, model)


def test_a_field_filled_with_a_secret_is_marked_for_masking_and_no_other(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    steps = [
        "open /app/login",
        'fill "User" with "demo"',
        'fill "Password" with "{{secrets.DEMO_PASSWORD}}"',
        'save text of "[data-stepline-secret]" as masked',  # CSS: only marked fields match
    ]
    session_id = start_session(loop, steps, target, executor="browser")

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    saved = page_of(finished(loop.app, session_id)[-1])
    assert saved["value"] == "{{secrets.DEMO_PASSWORD}}"  # the password field, redacted


def test_a_failed_expectation_fails_the_step_with_a_screenshot(
    make_loop: LoopFactory, target: str, tmp_path: Path
) -> None:
    loop = make_loop(ai=False, browser_expect_timeout_ms=300)
    session_id = start_session(
        loop, ["open /app/login", 'expect page contains "Welcome back"'], target, executor="browser"
    )

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert session.steps[1].error is not None
    assert session.steps[1].error["code"] == "EXPECTATION_FAILED"
    history = loop.app.history(session_id)
    checks = [e for e in history if isinstance(e, WorkflowSession.Checked)]
    assert [(c.name, c.ok, c.args) for c in checks] == [
        ("expect_page_contains", False, {"text": "Welcome back"})
    ]
    assert [type(e).__name__ for e in history][-3:] == ["Checked", "StepFailed", "Failed"]
    assert [a["kind"] for a in checks[0].artifacts] == ["failure_screenshot"]
    assert (tmp_path / "artifacts" / str(session_id) / checks[0].artifacts[0]["hash"]).is_file()


def test_an_unknown_target_of_a_definition_step_lists_the_pages_elements(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False, browser_action_timeout_ms=500)
    session_id = start_session(
        loop, ["open /app/login", 'click "Launch the rockets"'], target, executor="browser"
    )

    session = drive(loop, session_id)

    error = session.steps[1].error
    assert error is not None
    assert error["code"] == "ELEMENT_NOT_FOUND"
    assert error["message"] == (
        "nothing on the page matches 'Launch the rockets'; its elements are:\n"
        '[1] textbox "User" value=""\n'
        '[2] textbox "Password"\n'
        '[3] button "Sign in"'
    )
    assert error["details"]["elements"] == error["message"].splitlines()[1:]
    assert error["suggested_action"].startswith("Name an element as the message lists it")
    assert "read_page" not in error["message"] + error["suggested_action"]


def test_only_web_pages_can_be_opened(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["open file:///etc/passwd"], target, executor="browser")

    session = drive(loop, session_id)

    assert session.steps[0].error is not None
    assert session.steps[0].error["code"] == "URL_SCHEME_REFUSED"
    assert "root:" not in json.dumps([e.output for e in finished(loop.app, session_id)])


def test_saved_text_fills_a_later_field(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    steps = [
        *SIGN_IN,
        'fill "New todo" with "first"',
        'save text of "New todo" as copied',
        'fill "New todo" with "{{vars.copied}} and second"',
        'click "Add"',
        'expect page contains "first and second"',
    ]
    session_id = start_session(loop, steps, target, executor="browser")

    assert drive(loop, session_id).status is SessionStatus.COMPLETED


def test_two_sessions_at_once_do_not_share_cookies(make_loop: LoopFactory, target: str) -> None:
    loop = make_loop(ai=False)
    # The signed-in page takes 6 s to answer: the stranger's whole session (a context of its
    # own, two commands) ends meanwhile even on a loaded machine.
    signed_in = start_session(
        loop,
        [*SIGN_IN, "open /app/todos?delay_ms=6000", 'expect page contains "Signed in as demo"'],
        target,
        executor="browser",
    )
    stranger = start_session(
        loop, ["open /app/todos", 'expect url contains "/app/login"'], target, executor="browser"
    )
    first = threading.Thread(target=drive, args=(loop, signed_in))
    first.start()
    wait_for(lambda: "/app/todos?delay_ms=6000" in str(issued(loop.app, signed_in)[-1:]))

    assert drive(loop, stranger).status is SessionStatus.COMPLETED  # sent to the login page
    first.join(60)
    assert loop.app.get_session(signed_in).status is SessionStatus.COMPLETED
    ended = {
        session_id: loop.app.history(session_id)[-1].timestamp
        for session_id in (signed_in, stranger)
    }
    assert ended[stranger] < ended[signed_in]  # the signed-in context was open all along


@pytest.fixture
def states(database_url: str) -> Iterator[ExecutorStates]:
    with ConnectionPool(database_url, min_size=1, kwargs={"autocommit": True}) as pool:
        yield kept_states(pool)


def test_a_session_resumed_by_another_browser_reopens_its_page_signed_in(
    make_loop: LoopFactory, target: str, model: ScriptedModel, states: ExecutorStates
) -> None:
    first_loop = make_loop(states=states)
    session_id = start_session(
        first_loop,
        [*SIGN_IN, "Note what the list says", 'click "Refresh slowly"'],
        target,
        executor="browser",
    )
    stop = threading.Event()  # the worker is told to stop while the model thinks
    model.calls("browser_read_page", reasoning="look first", before=stop.set)
    first_loop.drive(session_id, stop)
    first_loop.close()  # its Chromium is gone, and the page with it
    model.calls("complete_step", summary="the list is empty", evidence=["0 left to do"])

    second_loop = make_loop(states=states)
    session = drive(second_loop, session_id)

    assert session.status is SessionStatus.COMPLETED, session.error
    assert "The browser was restarted" not in model.prompt(0)
    assert "The browser was restarted since the last command" in model.prompt(1)
    assert f"re-opened {target}/app/todos" in model.prompt(1)
    assert "Signed in as demo" in model.prompt(1)  # the cookies came back with it
    slow_click = page_of(finished(second_loop.app, session_id)[-1])
    assert slow_click["url"] == f"{target}/app/todos?delay_ms=1500"
    assert "Signed in as demo" in slow_click["page"]


def test_a_step_with_selectors_reads_the_list_into_its_schema_with_no_model(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop()
    adding = [
        step
        for title in ("milk", "eggs")
        for step in (f'fill "New todo" with "{title}"', 'click "Add"')
    ]
    read = StepSpec(
        "Read the todo list",
        extract=Extraction.written(
            {
                "rows": "main li",
                "fields": {"title": "label", "done": "input"},
                "schema": {"title": "string", "done": "boolean"},
            }
        ),
        save_as="todos",
    )
    counted = StepSpec(
        'POST /effects with {"name": "{{vars.todos}}"}', condition="len(vars.todos) == 2"
    )
    session_id = start_session(loop, [*SIGN_IN, *adding, read, counted], target, executor="browser")

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED, session.error
    rows = [{"title": "milk", "done": False}, {"title": "eggs", "done": False}]
    assert session.steps[len(SIGN_IN) + 4].data == rows
    assert model.requests == []
    applied = httpx.get(f"{target}/effects").json()["applied"]
    assert [json.loads(effect["name"]) for effect in applied] == [rows]


def test_rows_that_do_not_fit_the_schema_fail_the_step_with_the_reason(
    make_loop: LoopFactory, target: str
) -> None:
    loop = make_loop(ai=False)
    read = StepSpec(
        "Read the todo list",
        extract=Extraction.written(
            {"rows": "main p", "fields": {"count": "a"}, "schema": {"count": "integer"}}
        ),
    )
    session_id = start_session(loop, [*SIGN_IN, read], target, executor="browser")

    session = drive(loop, session_id)

    error = session.steps[len(SIGN_IN)].error
    assert error is not None
    assert error["code"] == "EXTRACTION_INVALID"
    assert "is not of type 'integer'" in error["message"]


def add_todo_by_api(target: str, title: str) -> None:
    """A todo of the demo user's whose title is exactly `title`: nothing fills it in."""
    with httpx.Client(base_url=target) as client:
        client.post("/login", json={"user": "demo", "password": PASSWORD}).raise_for_status()
        client.post("/todos", json={"title": title}).raise_for_status()


def reading_the_todos(save_as: str | None = None) -> StepSpec:
    return StepSpec(
        "Read the todo list",
        extract=Extraction.written(
            {"rows": "main li", "fields": {"title": "label"}, "schema": {"title": "string"}}
        ),
        save_as=save_as,
    )


def test_rows_holding_a_placeholder_are_refused_so_a_page_cannot_have_a_secret_sent(
    make_loop: LoopFactory, target: str
) -> None:
    add_todo_by_api(target, "{{secrets.DEMO_PASSWORD}}")
    loop = make_loop(ai=False)
    posted = StepSpec('POST /effects with {"name": "{{vars.todos}}"}')
    steps = [*SIGN_IN, reading_the_todos(save_as="todos"), posted]
    session_id = start_session(loop, steps, target, executor="browser")

    session = drive(loop, session_id)

    error = session.steps[len(SIGN_IN)].error
    assert error is not None
    assert error["code"] == "EXTRACTION_INVALID"
    assert "placeholder" in error["message"]
    assert PASSWORD not in json.dumps(httpx.get(f"{target}/effects").json())


def test_each_field_read_is_cut_so_a_huge_cell_is_not_recorded_whole(
    make_loop: LoopFactory, target: str
) -> None:
    add_todo_by_api(target, "x" * 3_000)
    loop = make_loop(ai=False)
    session_id = start_session(loop, [*SIGN_IN, reading_the_todos()], target, executor="browser")

    session = drive(loop, session_id)

    assert session.status is SessionStatus.COMPLETED, session.error
    (row,) = session.steps[len(SIGN_IN)].data
    assert row["title"] == "x" * 2_000 + "… [1000 more characters]"
    read = next(e for e in issued(loop.app, session_id) if e.name == "read_rows")
    (result,) = [e for e in finished(loop.app, session_id) if e.command_id == read.command_id]
    assert "x" * 2_001 not in result.output


def test_rows_over_what_a_result_may_record_fail_the_step_before_anything_is_recorded(
    make_loop: LoopFactory, target: str
) -> None:
    for _ in range(55):  # each cut at 2,000 characters: 55 come to more than 100,000
        add_todo_by_api(target, "y" * 1_990)
    loop = make_loop(ai=False)
    session_id = start_session(loop, [*SIGN_IN, reading_the_todos()], target, executor="browser")

    session = drive(loop, session_id)

    error = session.steps[len(SIGN_IN)].error
    assert error is not None
    assert error["code"] == "EXTRACTION_INVALID"
    assert "over the 100000 a step's data may hold" in error["message"]
    results = json.dumps([e.output for e in finished(loop.app, session_id)])
    assert "y" * 1_990 not in results


def test_saved_text_holding_a_placeholder_is_refused_so_a_page_cannot_have_a_secret_sent(
    make_loop: LoopFactory, target: str
) -> None:
    add_todo_by_api(target, "{{secrets.DEMO_PASSWORD}}")
    loop = make_loop(ai=False)
    steps = [
        *SIGN_IN,
        'save text of "main li label" as title',
        'POST /effects with {"name": "{{vars.title}}"}',
    ]
    session_id = start_session(loop, steps, target, executor="browser")

    session = drive(loop, session_id)

    error = session.steps[len(SIGN_IN)].error
    assert error is not None
    assert error["code"] == "EXTRACTION_INVALID"
    assert "placeholder" in error["message"]
    assert PASSWORD not in json.dumps(httpx.get(f"{target}/effects").json())
