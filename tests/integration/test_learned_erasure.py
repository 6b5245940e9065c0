"""An erased session takes the actions it taught with it, and the view stays what a rebuild
gives: the version before is live again, and the uses it counted are counted again."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.session import StepSpec
from engine.live.projector import Projector
from engine.privacy.erasure import Erasure
from engine.store.app import Stepline
from projections import learned_actions
from tests import workloads
from tests.integration import test_erasure
from tests.integration.test_learned_actions import view_rows

# The erasure tests' fixtures: a sealed application, its pool, views and erasure.
sealed, pool, projector, erasure = (
    test_erasure.sealed,
    test_erasure.pool,
    test_erasure.projector,
    test_erasure.erasure,
)
STEP = "Renew the membership"


def taught(app: Stepline, url: str, used: tuple[str, int, bool] | None = None) -> UUID:
    """A session whose one AI step requests `url` and completes, after trying `used` (an
    action id, its version, whether it held) if given."""
    session_id = workloads.create_session(
        app,
        name="renewal",
        steps=[StepSpec(STEP)],
        tenant="acme",
        actor="alice",
        config={"executor": "http", "base_url": "http://127.0.0.1:9"},
    )
    workloads.start_step(app, session_id, 0)
    if used is not None:
        action_id, version, hit = used
        app.change(
            session_id,
            lambda s: s.record_learned_action_used(
                0, action_id=action_id, action_version=version, hit=hit, commands=1
            ),
        )
    if used is None or not used[2]:
        workloads.record_turn(app, session_id, 0, reasoning="renew", model="m", prompt_tokens=9)
        workloads.issue_command(
            app, session_id, 0, command_id="c1", executor="http", name="request",
            args={"method": "POST", "url": url},
        )  # fmt: skip
        output = '{"status": 200}'
        workloads.finish_command(app, session_id, 0, command_id="c1", ok=True, output=output)
    workloads.complete_step(app, session_id, 0, summary="renewed", evidence=[])
    workloads.complete_session(app, session_id)
    return session_id


def versions(projector: Projector) -> list[Any]:
    with projector.pool.connection() as conn:
        return learned_actions.of_tenant(conn, "acme", with_old=True)


def test_erasing_the_session_that_taught_the_live_version_makes_the_one_before_live_again(
    sealed: Stepline, projector: Projector, erasure: Erasure
) -> None:
    taught(sealed, "/renew")
    projector.catch_up()
    (first,) = versions(projector)
    changed = taught(sealed, "/renew-v2", used=(str(first.action_id), first.version, False))
    projector.catch_up()
    (second, _) = versions(projector)
    taught(sealed, "/unused", used=(str(second.action_id), second.version, True))
    taught(sealed, "/unused", used=(str(second.action_id), second.version, True))
    projector.catch_up()

    erasure.erase(changed, "GDPR request 19", "dpo@acme")
    projector.catch_up()

    (left,) = versions(projector)
    assert (left.version, left.superseded, left.misses) == (first.version, False, 1)
    assert [c["args"]["url"] for c in left.commands] == ["/renew"]
    incremental = view_rows(projector)
    projector.rebuild(["learned_actions"])
    assert view_rows(projector) == incremental
