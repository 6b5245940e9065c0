"""The action cache: what an AI step did is learned from the log and done again without the
model, per tenant, until the target changes; then the model takes over and the action is
learned anew."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from domain.extraction import Extraction
from domain.learning import LearnedActions
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.live.projector import Projector
from engine.loop.learned import LearnedActionSource, forget
from engine.loop.step_attempt import definition_key
from engine.loop.task_loop import TaskLoop
from engine.store.app import Stepline
from projections import learned_actions
from projections.learned_actions import LearnedAction
from tests import workloads
from tests.conftest import PASSWORD
from tests.integration.conftest import LoopFactory, drive, script_sign_in, start_session
from tests.pages_target import Pages
from tests.scripted_model import ScriptedModel

PATHS = ["/catalogue", "/cart", "/orders", "/account", "/help"]
STEPS = [f"Open the {path.strip('/')} page" for path in PATHS]


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of the test's own, which its views are built in too."""
    return fresh_app


@pytest.fixture
def pages() -> Iterator[Pages]:
    target = Pages(set(PATHS))
    with target.serving():
        yield target


@pytest.fixture
def loop(make_loop: LoopFactory, projector: Projector) -> TaskLoop:
    return make_loop(learned=LearnedActionSource(projector.pool))


def script_pages(model: ScriptedModel, paths: list[str]) -> None:
    """Per step, two turns of the model: open the page, then complete the step."""
    for path in paths:
        model.calls("http_request", tokens=(100, 10), method="GET", url=path)
        model.calls("complete_step", tokens=(120, 8), summary=f"opened {path}", evidence=["200"])


def run(
    loop: TaskLoop,
    projector: Projector,
    base_url: str,
    tenant: str = "acme",
    steps: list[str | StepSpec] | None = None,
    **config: Any,
) -> WorkflowSession:
    """Run the workflow to its end, then bring the views up to date."""
    session_id = start_session(loop, steps or list(STEPS), base_url, tenant=tenant, **config)
    session = drive(loop, session_id)
    projector.catch_up()
    return session


def used(app: Stepline, session_id: UUID) -> list[WorkflowSession.LearnedActionUsed]:
    return [e for e in app.history(session_id) if isinstance(e, WorkflowSession.LearnedActionUsed)]


def actions(projector: Projector, tenant: str, with_old: bool = False) -> list[LearnedAction]:
    with projector.pool.connection() as conn:
        return learned_actions.of_tenant(conn, tenant, with_old=with_old)


def view_rows(projector: Projector) -> dict[str, list[tuple[Any, ...]]]:
    with projector.pool.connection() as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in learned_actions.LearnedActionsView.tables
        }


def test_a_second_run_of_an_ai_workflow_makes_no_model_request(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    script_pages(model, PATHS)
    first = run(loop, projector, pages.base_url)
    assert first.status is SessionStatus.COMPLETED
    assert len(model.requests) == 10
    assert len(actions(projector, "acme")) == 5

    second = run(loop, projector, pages.base_url)

    assert second.status is SessionStatus.COMPLETED
    assert len(model.requests) == 10  # not one more
    assert pages.asked == PATHS + PATHS  # the commands reached the target again
    hits = used(loop.app, second.id)
    assert [(u.step_index, u.hit) for u in hits] == [(i, True) for i in range(5)]
    assert {u.tokens_saved for u in hits} == {100 + 10 + 120 + 8}
    assert not [
        e for e in loop.app.history(second.id) if isinstance(e, WorkflowSession.TurnRecorded)
    ]
    assert [a.hits for a in actions(projector, "acme")] == [1] * 5
    ended = view_rows(projector)
    assert ended["learning_sessions"] == ended["learning_attempts"] == []  # nothing left to fold


@pytest.mark.parametrize("conversation", ["summary", "messages"])
def test_a_changed_target_makes_only_the_changed_step_ask_the_model_and_relearn(
    make_loop: LoopFactory,
    projector: Projector,
    model: ScriptedModel,
    pages: Pages,
    conversation: str,
) -> None:
    loop = make_loop(learned=LearnedActionSource(projector.pool), ai_conversation=conversation)
    script_pages(model, PATHS)
    run(loop, projector, pages.base_url)
    pages.move("/orders", "/orders-v2")
    script_pages(model, ["/orders-v2"])

    second = run(loop, projector, pages.base_url)

    assert second.status is SessionStatus.COMPLETED
    assert len(model.requests) == 12  # the changed step's two turns, no other
    for request in model.requests[10:12]:  # on every turn of the step: it is on the log
        told = json.dumps(request["messages"])
        assert "An earlier run of this step learned" in told
        assert '\\"/orders\\"' in told
    results = [(u.step_index, u.hit) for u in used(loop.app, second.id)]
    assert results == [(0, True), (1, True), (2, False), (3, True), (4, True)]
    miss = used(loop.app, second.id)[2].miss
    assert miss is not None
    assert miss["expected"]["ok"] is True
    assert miss["got"]["ok"] is False
    orders = [a for a in actions(projector, "acme", with_old=True) if a.step_text == STEPS[2]]
    assert [a.superseded for a in orders] == [False, True]  # newest first
    assert orders[0].version > orders[1].version
    assert [c["args"]["url"] for c in orders[0].commands] == ["/orders-v2"]
    assert [c["args"]["url"] for c in orders[1].commands] == ["/orders"]

    third = run(loop, projector, pages.base_url)
    assert third.status is SessionStatus.COMPLETED
    assert len(model.requests) == 12  # the new version holds


def test_learn_false_asks_the_model_every_time(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    script_pages(model, PATHS + PATHS)

    run(loop, projector, pages.base_url, learn=False)
    second = run(loop, projector, pages.base_url, learn=False)

    assert second.status is SessionStatus.COMPLETED
    assert len(model.requests) == 20
    assert actions(projector, "acme", with_old=True) == []
    assert used(loop.app, second.id) == []


def test_another_tenant_learns_nothing_from_the_first_tenants_identical_workflow(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    script_pages(model, PATHS + PATHS)
    run(loop, projector, pages.base_url, tenant="acme")
    learned = actions(projector, "acme")
    assert len(learned) == 5

    other = run(loop, projector, pages.base_url, tenant="globex")

    assert other.status is SessionStatus.COMPLETED
    assert len(model.requests) == 20  # globex's steps all asked the model
    assert used(loop.app, other.id) == []
    # globex learned its own, under other ids; asking the view with acme's ids as globex
    # finds nothing, and neither does forgetting one
    assert {a.action_id for a in actions(projector, "globex")}.isdisjoint(
        {a.action_id for a in learned}
    )
    with projector.pool.connection() as conn:
        assert learned_actions.versions(conn, "globex", learned[0].action_id) == []
    forget(loop.app, "globex", str(learned[0].action_id), actor="mallory")
    projector.catch_up()
    assert {a.action_id for a in actions(projector, "acme")} == {a.action_id for a in learned}


def test_secrets_stay_placeholders_in_learned_actions(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, target: str, fresh_database_url: str
) -> None:
    script_sign_in(model)
    model.calls("complete_step", summary="signed in", evidence=["200"])

    run(loop, projector, target, steps=["Sign in as the demo user"])

    (signed_in,) = actions(projector, "acme")
    posted = signed_in.commands[-1]["args"]
    assert posted["body"]["password"] == "{{secrets.DEMO_PASSWORD}}"
    with psycopg.connect(fresh_database_url) as conn:
        dumped = conn.execute("SELECT recipe::text FROM learned_actions").fetchall()
    assert PASSWORD not in json.dumps(dumped)

    again = run(loop, projector, target, steps=["Sign in as the demo user"])
    assert again.status is SessionStatus.COMPLETED  # the placeholder is filled in when sent
    assert len(model.requests) == 3


def test_a_forgotten_action_is_asked_of_the_model_again_and_stays_forgotten_after_a_rebuild(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    script_pages(model, PATHS + PATHS[:1])
    run(loop, projector, pages.base_url)
    first = next(a for a in actions(projector, "acme") if a.step_text == STEPS[0])

    forget(loop.app, "acme", str(first.action_id), actor="alice")
    projector.catch_up()
    second = run(loop, projector, pages.base_url)

    assert second.status is SessionStatus.COMPLETED
    assert len(model.requests) == 12  # the forgotten step only
    forgotten = learned_actions.LearnedActionsView.actions
    with projector.pool.connection() as conn:
        old = forgotten.get(conn, first.action_id, first.version)
    assert old is not None
    assert old.forgotten
    before = view_rows(projector)
    projector.rebuild(["learned_actions"])
    assert view_rows(projector) == before
    assert loop.app.repository.get(LearnedActions.create_id("acme")).forgotten == [
        str(first.action_id)
    ]


def test_the_rebuilt_view_equals_the_one_built_as_the_log_grew(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    script_pages(model, PATHS)
    run(loop, projector, pages.base_url)
    pages.move("/orders", "/orders-v2")
    script_pages(model, ["/orders-v2"])
    run(loop, projector, pages.base_url)
    before = view_rows(projector)
    assert len(before["learned_actions"]) == 6

    projector.rebuild(["learned_actions"])

    assert view_rows(projector) == before


def test_a_learned_step_whose_expect_is_a_step_definition_is_checked_without_the_model(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    step = StepSpec(STEPS[0], expect='expect body contains "/catalogue"')
    model.calls("http_request", method="GET", url=PATHS[0])
    model.calls("complete_step", summary="opened", evidence=["200"], expect_met=True)
    run(loop, projector, pages.base_url, steps=[step])

    second = run(loop, projector, pages.base_url, steps=[step])

    assert second.status is SessionStatus.COMPLETED
    assert len(model.requests) == 2
    checked = [e for e in loop.app.history(second.id) if isinstance(e, WorkflowSession.Checked)]
    assert [(c.name, c.ok) for c in checked] == [("expect_body_contains", True)]
    assert [u.hit for u in used(loop.app, second.id)] == [True]


def test_a_learned_step_whose_expect_only_a_model_can_judge_asks_only_that(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    step = StepSpec(STEPS[0], expect="the catalogue lists products")
    model.calls("http_request", method="GET", url=PATHS[0])
    model.calls("complete_step", summary="opened", evidence=["200"], expect_met=True)
    model.calls("complete_step", summary="it does", evidence=["200"], expect_met=True)
    run(loop, projector, pages.base_url, steps=[step])

    second = run(loop, projector, pages.base_url, steps=[step])

    assert second.status is SessionStatus.COMPLETED
    assert len(model.requests) == 3  # one question: does the expectation hold
    assert "Judge only whether the step's expectation holds" in json.dumps(model.requests[2])
    assert [u.hit for u in used(loop.app, second.id)] == [True]
    assert pages.asked == [PATHS[0], PATHS[0]]
    assert len(actions(projector, "acme", with_old=True)) == 1  # a judged hit teaches nothing


def test_a_browser_step_is_learned_from_the_page_it_started_on_and_done_again_without_the_model(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, target: str
) -> None:
    model.calls("browser_fill", target="1", value="demo")
    model.calls("browser_fill", target="2", value="{{secrets.DEMO_PASSWORD}}")
    model.calls("browser_click", target='button "Sign in"')
    model.calls("complete_step", summary="signed in", evidence=["the Todos page shows"])
    steps: list[str | StepSpec] = ["open /app/login", "Sign in as demo with the password"]
    first = run(loop, projector, target, steps=steps, executor="browser")
    assert first.status is SessionStatus.COMPLETED, first.error

    second = run(loop, projector, target, steps=steps, executor="browser")

    assert second.status is SessionStatus.COMPLETED, second.error
    assert len(model.requests) == 4
    (learned,) = actions(projector, "acme")
    assert learned.start == f"browser {target} /app/login"
    assert [c["name"] for c in learned.commands] == ["fill", "fill", "click"]
    results = loop.app.history(second.id)
    last = [e for e in results if isinstance(e, WorkflowSession.CommandFinished)][-1]
    assert json.loads(last.output)["url"] == f"{target}/app/todos"  # signed in, as learned


def test_a_learned_step_the_model_judges_not_holding_is_a_miss_the_model_takes_over(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    """The judge says the expectation does not hold: a miss, and the model does the step
    (before, the step failed, and every later run failed at it until someone forgot it)."""
    step = StepSpec(STEPS[0], expect="the catalogue lists products")
    model.calls("http_request", method="GET", url=PATHS[0])
    model.calls("complete_step", summary="opened", evidence=["200"], expect_met=True)
    first = run(loop, projector, pages.base_url, steps=[step])
    model.calls("fail_step", reason="the catalogue is empty")  # the judge
    model.calls("http_request", method="GET", url="/help")
    model.calls("complete_step", summary="listed all", evidence=["200"], expect_met=True)

    second = run(loop, projector, pages.base_url, steps=[step])

    assert second.status is SessionStatus.COMPLETED
    (missed,) = used(loop.app, second.id)
    assert missed.hit is False
    assert missed.miss is not None
    assert missed.miss["got"]["code"] == "STEP_FAILED"
    (relearned,) = actions(projector, "acme")
    assert relearned.source_session_id == second.id
    # what the attempt did: the learned command, then the model's
    assert [c["args"]["url"] for c in relearned.commands] == ["/catalogue", "/help"]
    assert first.status is SessionStatus.COMPLETED


def test_a_step_that_extracts_data_is_not_learned_and_asks_the_model_each_run(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    """Its result is the data the model read off the page: doing its commands again gives
    no data, so it is never learned (an extracting step always goes to the model)."""
    step = StepSpec(
        "Read the help page", extract=Extraction.written({"topic": "string"}), save_as="help"
    )
    for _ in range(2):
        model.calls("http_request", method="GET", url="/help")
        model.calls("complete_step", summary="read it", evidence=["200"], data={"topic": "x"})

    first = run(loop, projector, pages.base_url, steps=[step])
    second = run(loop, projector, pages.base_url, steps=[step])

    assert (first.status, second.status) == (SessionStatus.COMPLETED, SessionStatus.COMPLETED)
    assert len(model.requests) == 4
    assert actions(projector, "acme") == []
    assert used(loop.app, second.id) == []


def test_a_step_whose_model_asked_a_persons_approval_is_never_learned(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    """A person approved what the model did here: a later run must ask again, not do it
    as learned with nobody asked."""
    model.calls("request_approval", question="Open the catalogue?")
    session_id = start_session(loop, STEPS[:1], pages.base_url, approvals="model")
    assert drive(loop, session_id).status is SessionStatus.WAITING
    loop.app.approve(session_id, "yes", actor="bob")
    model.calls("http_request", method="GET", url=PATHS[0])
    model.calls("complete_step", summary="opened", evidence=["200"])
    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    projector.catch_up()

    model.calls("request_approval", question="Open the catalogue?")
    again = start_session(loop, STEPS[:1], pages.base_url, approvals="model")

    assert actions(projector, "acme") == []
    assert drive(loop, again).status is SessionStatus.WAITING  # asked again
    assert used(loop.app, again) == []


def learned_key(session_id: UUID, position: int) -> str:
    return definition_key(session_id, 0, 1, position, "l")


def ran_learned_command(app: Stepline, session_id: UUID, url: str) -> None:
    """The first learned command of step 0 issued and finished, as a run that then died."""
    key = learned_key(session_id, 0)
    args = {"method": "GET", "url": url}
    workloads.issue_command(
        app,
        session_id,
        0,
        command_id="c1",
        executor="http",
        name="request",
        args=args,
        idempotency_key=key,
    )
    workloads.finish_command(app, session_id, 0, command_id="c1", ok=True, output='{"status": 200}')


def test_a_run_that_died_after_a_learned_action_held_completes_the_step_without_the_model(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    script_pages(model, PATHS[:1])
    run(loop, projector, pages.base_url, steps=list(STEPS[:1]))
    (action,) = actions(projector, "acme")
    session_id = start_session(loop, STEPS[:1], pages.base_url)
    workloads.start_step(loop.app, session_id, 0)
    ran_learned_command(loop.app, session_id, PATHS[0])
    loop.app.change(
        session_id,
        lambda s: s.record_learned_action_used(
            0,
            action_id=str(action.action_id),
            action_version=action.version,
            hit=True,
            commands=1,
            tokens_saved=action.tokens,
            seconds_saved=action.seconds,
        ),
    )

    resumed = drive(loop, session_id)

    assert resumed.status is SessionStatus.COMPLETED
    assert len(model.requests) == 2  # the first run's; the resumed run asked nothing
    assert pages.asked == [PATHS[0]]  # the first run's: the resumed run sent nothing


def test_a_resumed_learned_action_skips_only_the_very_commands_that_ran(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    """The run died after the first command of the version it used; a newer version was
    learned meanwhile: the command of the newer one is sent, not taken for the one that ran
    because both answered 200."""
    script_pages(model, PATHS[:1])
    run(loop, projector, pages.base_url, steps=list(STEPS[:1]))
    session_id = start_session(loop, STEPS[:1], pages.base_url)
    workloads.start_step(loop.app, session_id, 0)
    ran_learned_command(loop.app, session_id, PATHS[1])  # an older version's command

    resumed = drive(loop, session_id)

    assert resumed.status is SessionStatus.COMPLETED
    assert pages.asked == [PATHS[0], PATHS[0]]  # the current version's command was sent
    assert [u.hit for u in used(loop.app, session_id)] == [True]


def test_forgets_at_the_same_moment_are_all_recorded(app: Stepline) -> None:
    """Two people forget at once (the tenant's first forgets, so both would create its
    record): each is recorded, none is a conflict."""
    ids = [str(uuid4()) for _ in range(6)]
    barrier = threading.Barrier(len(ids))

    def forget_one(action_id: str) -> None:
        barrier.wait()
        forget(app, "acme", action_id, "alice")

    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(forget_one, ids))

    recorded: LearnedActions = app.repository.get(LearnedActions.create_id("acme"))
    assert sorted(recorded.forgotten) == sorted(ids)


def test_a_judge_that_checks_before_it_judges_is_told_on_every_turn_that_it_only_judges(
    loop: TaskLoop, projector: Projector, model: ScriptedModel, pages: Pages
) -> None:
    step = StepSpec(STEPS[0], expect="the catalogue lists products")
    model.calls("http_request", method="GET", url=PATHS[0])
    model.calls("complete_step", summary="opened", evidence=["200"], expect_met=True)
    run(loop, projector, pages.base_url, steps=[step])
    model.calls("http_request", method="GET", url=PATHS[0])  # the judge looks first
    model.calls("complete_step", summary="it lists them", evidence=["200"], expect_met=True)

    second = run(loop, projector, pages.base_url, steps=[step])

    assert second.status is SessionStatus.COMPLETED
    assert [u.hit for u in used(loop.app, second.id)] == [True]
    assert all("Judge only whether" in model.prompt(n) for n in (2, 3))
