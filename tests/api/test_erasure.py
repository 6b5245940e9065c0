"""DELETE /v1/sessions/{id}/data over HTTP: a running session is cancelled, then erased, and
then refuses replay and fork."""

from __future__ import annotations

from tests.api.conftest import ApiFactory, shell_workflow
from tests.api.test_sessions import create
from tests.conftest import MASTER_KEY
from tests.waiting import eventually


def test_a_running_session_erased_over_http_is_cancelled_first_then_refuses_a_replay(
    start_api: ApiFactory,
) -> None:
    api = start_api(master_key=MASTER_KEY)
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("sleep 5"))
        eventually(
            lambda: alice.get(f"/v1/sessions/{session_id}").json()["status"] == "running",
            "the session runs",
            30,
        )

        erased = alice.request(
            "DELETE", f"/v1/sessions/{session_id}/data", json={"reason": "asked to forget"}
        )
        replayed = alice.post(f"/v1/sessions/{session_id}/replay", json={})
        forked = alice.post(f"/v1/sessions/{session_id}/fork", json={"from_step": 0})

    assert erased.status_code == 200, erased.text
    assert erased.json() == {"session_id": session_id, "cancelled": True, "shredded": True}
    assert (replayed.status_code, replayed.json()["code"]) == (410, "SESSION_ERASED")
    assert (forked.status_code, forked.json()["code"]) == (410, "SESSION_ERASED")
