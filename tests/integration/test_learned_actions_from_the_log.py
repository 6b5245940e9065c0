"""learned_actions keeps nothing of a session until the model takes a turn in it (or a learned
action is tried): then it reads the session's earlier events back from the log, sealed as they
are, and what it learns is what it would have learned folding them as they went by, whatever
the batches."""

from __future__ import annotations

from uuid import UUID

from psycopg_pool import ConnectionPool

from domain.learning import starting_point
from domain.session import StepSpec
from engine.live.projector import Projector
from engine.store.app import Stepline
from projections import learned_actions
from tests import workloads
from tests.integration import test_erasure
from tests.integration.test_learned_actions import view_rows

# The erasure tests' fixtures: a sealed application, its pool and views.
sealed, pool, projector = test_erasure.sealed, test_erasure.pool, test_erasure.projector
BASE_URL = "http://127.0.0.1:9"


def started(app: Stepline) -> UUID:
    """A browser session of two steps whose first went to /first without the model, and whose
    second has started."""
    session_id = workloads.create_session(
        app,
        name="orders",
        steps=[StepSpec("Open the first page"), StepSpec("Find the order")],
        tenant="acme",
        actor="alice",
        config={"executor": "browser", "base_url": BASE_URL},
    )
    workloads.start_step(app, session_id, 0)
    navigate(app, session_id, 0, "c0", "/first")
    workloads.complete_step(app, session_id, 0, summary="opened", evidence=[])
    workloads.start_step(app, session_id, 1)
    return session_id


def navigate(app: Stepline, session_id: UUID, index: int, command_id: str, url: str) -> None:
    workloads.issue_command(
        app, session_id, index, command_id=command_id, executor="browser", name="navigate",
        args={"url": url},
    )  # fmt: skip
    output = '{"status": 200}'
    workloads.finish_command(app, session_id, index, command_id=command_id, ok=True, output=output)


def test_a_session_the_model_took_no_turn_in_leaves_the_view_no_rows(
    sealed: Stepline, projector: Projector
) -> None:
    session_id = started(sealed)
    navigate(sealed, session_id, 1, "c1", "/orders")

    projector.catch_up()

    assert view_rows(projector) == {
        table: [] for table in learned_actions.LearnedActionsView.tables
    }


def test_what_a_step_did_before_the_first_turn_is_learned_read_back_from_the_log(
    sealed: Stepline, projector: Projector, pool: ConnectionPool
) -> None:
    session_id = started(sealed)
    navigate(sealed, session_id, 1, "c1", "/orders")
    one_at_a_time = Projector(sealed, pool, batch_size=1)
    one_at_a_time.catch_up()  # the session's events so far, skipped: no turn yet
    workloads.record_turn(sealed, session_id, 1, reasoning="look", model="m", prompt_tokens=5)
    navigate(sealed, session_id, 1, "c2", "/orders/7")
    workloads.complete_step(sealed, session_id, 1, summary="found", evidence=[])
    one_at_a_time.catch_up()
    under_way = view_rows(projector)
    workloads.complete_session(sealed, session_id)
    one_at_a_time.catch_up()
    built_live = view_rows(projector)

    projector.rebuild(["learned_actions"])

    assert view_rows(projector) == built_live
    assert [len(under_way["learning_sessions"]), len(built_live["learning_sessions"])] == [1, 0]
    with pool.connection() as conn:
        [action] = learned_actions.of_tenant(conn, "acme")
    assert action.start == starting_point("browser", BASE_URL, "/first")
    assert [c["args"]["url"] for c in action.commands] == ["/orders", "/orders/7"]
    assert (action.step_text, action.turns, action.tokens) == ("Find the order", 1, 5)
