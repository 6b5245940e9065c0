"""The hot routes (`api.http.hot_routes`) answer exactly what FastAPI's routes answer.

Each request is sent twice: in the plain form the layer takes itself, and in a form it hands
on to FastAPI (the id in capitals, a JSON type with a suffix), and the answers compared."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from api.http.hot_routes import HotRoutes, id_in, sends_json
from tests.api.conftest import Api, ApiFactory, shell_workflow
from tests.api.test_errors import assert_problem
from tests.api.test_sessions import create, stream

BY_FASTAPI = "application/vnd.stepline+json"
"""A JSON type FastAPI decodes as JSON, which the hot layer leaves to it."""
PER_ANSWER = {"date", "content-length"}
"""Headers that differ between two answers for no reason of the routes'."""
PER_PROBLEM = ("id", "timestamp")
"""A problem's fields that differ between two answers: its own id, and when it was made."""


def same_headers(hot: httpx.Response, by_fastapi: httpx.Response) -> None:
    assert {k: v for k, v in hot.headers.items() if k not in PER_ANSWER} == {
        k: v for k, v in by_fastapi.headers.items() if k not in PER_ANSWER
    }


def without(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in fields}


def test_a_plain_read_answers_what_fastapi_answers(api: Api) -> None:
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("echo hi"))
        stream(alice, session_id)
        hot = alice.get(f"/v1/sessions/{session_id}")
        by_fastapi = alice.get(f"/v1/sessions/{session_id.upper()}")
    assert (hot.status_code, hot.json()["status"]) == (200, "completed")
    assert hot.content == by_fastapi.content
    same_headers(hot, by_fastapi)


def test_a_plain_read_of_no_such_session_is_the_same_problem(api: Api) -> None:
    missing = str(uuid4())
    with api.client("alice") as alice:
        hot = alice.get(f"/v1/sessions/{missing}")
        by_fastapi = alice.get(f"/v1/sessions/{missing.upper()}")
    problem = assert_problem(hot, 404, "SESSION_NOT_FOUND")
    assert without(problem, *PER_PROBLEM) == without(by_fastapi.json(), *PER_PROBLEM)
    same_headers(hot, by_fastapi)


def test_another_tenants_session_is_not_found_by_a_plain_read(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        session_id = create(alice, shell_workflow("true"))
        assert_problem(eve.get(f"/v1/sessions/{session_id}"), 404, "SESSION_NOT_FOUND")


def test_a_plain_create_answers_what_fastapi_answers(api: Api) -> None:
    body = shell_workflow("true")
    with api.client("alice") as alice:
        hot = alice.post("/v1/sessions", json=body)
        by_fastapi = alice.post(
            "/v1/sessions",
            content=httpx.Request("POST", "/", json=body).content,
            headers={"Content-Type": BY_FASTAPI},
        )
    assert hot.status_code == by_fastapi.status_code == 201
    assert hot.headers.keys() == by_fastapi.headers.keys()
    created, other = hot.json(), by_fastapi.json()
    assert list(created) == list(other)
    changing = ("session_id", "stream_url", "created_at")
    assert without(created, *changing) == without(other, *changing)
    assert hot.headers["location"] == f"/v1/sessions/{created['session_id']}"
    assert created["stream_url"] == f"/v1/sessions/{created['session_id']}/stream"


@pytest.mark.parametrize(
    "content", [b'{"name": "x", "steps": 5}', b'{"name": "x", "steps": [', b"", b"[" * 5_000]
)
def test_a_body_fastapi_must_judge_is_refused_as_fastapi_refuses_it(
    api: Api, content: bytes
) -> None:
    with api.client("alice") as alice:
        hot = alice.post(
            "/v1/sessions", content=content, headers={"Content-Type": "application/json"}
        )
        by_fastapi = alice.post(
            "/v1/sessions", content=content, headers={"Content-Type": BY_FASTAPI}
        )
        assert alice.get("/v1/sessions").json()["items"] == []
    assert hot.status_code == by_fastapi.status_code
    assert hot.status_code in (400, 422)
    assert without(hot.json(), *PER_PROBLEM) == without(by_fastapi.json(), *PER_PROBLEM)


def test_each_refused_key_counts_once_and_a_body_that_is_not_json_before_the_key(
    start_api: ApiFactory,
) -> None:
    """As FastAPI: a body that is not JSON is refused before the key is looked at (and counts
    nothing); a wrong key with JSON, valid or not, is refused and counts once."""
    api: Api = start_api(workers=0, auth_failures_per_minute=3)
    wrong = {"Authorization": "Bearer sk_guess_0"}
    with api.client(None) as guesser, api.client("alice") as alice:
        not_json = guesser.post(
            "/v1/sessions", content=b"{", headers={**wrong, "Content-Type": "application/json"}
        )
        valid = guesser.post("/v1/sessions", json=shell_workflow("true"), headers=wrong)
        invalid = guesser.post("/v1/sessions", json={"steps": 5}, headers=wrong)
        assert_problem(not_json, 422, "VALIDATION_FAILED")
        assert_problem(valid, 401, "UNAUTHORIZED")
        assert_problem(invalid, 401, "UNAUTHORIZED")
        assert valid.headers["www-authenticate"] == "Bearer"
        assert alice.get(f"/v1/sessions/{uuid4()}").status_code == 404  # two failures: let in
        assert_problem(guesser.get(f"/v1/sessions/{uuid4()}", headers=wrong), 401, "UNAUTHORIZED")
        assert_problem(alice.get(f"/v1/sessions/{uuid4()}"), 429, "TOO_MANY_AUTH_FAILURES")


def test_the_hot_layer_takes_ids_as_given_out_and_json_bodies_only() -> None:
    given_out = uuid4()
    assert id_in(f"/v1/sessions/{given_out}") == given_out
    assert id_in(f"/v1/sessions/{str(given_out).upper()}") is None
    assert id_in(f"/v1/sessions/{given_out.hex}") is None
    assert id_in(f"/v1/sessions/{given_out}/steps") is None
    assert id_in("/v1/sessions/" + "z" * 36) is None
    assert id_in(f"/v1/sessions/{{{str(given_out)[:34]}}}") is None
    assert isinstance(id_in(f"/v1/sessions/{UUID(int=0)}"), UUID)

    def scope(*types: str) -> dict[str, Any]:
        return {"headers": [(b"content-type", t.encode()) for t in types]}

    assert sends_json(scope("application/json"))
    assert sends_json(scope("Application/JSON; charset=utf-8"))
    assert sends_json(scope("application/json", "text/plain"))  # the first, as Starlette reads
    assert not sends_json(scope())
    assert not sends_json(scope(BY_FASTAPI))
    assert not sends_json(scope("text/plain", "application/json"))


class Counted:
    """The app the hot layer hands on to (FastAPI's router, real), counting what reaches it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reached: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.reached.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def test_the_plain_forms_are_answered_by_the_layer_and_the_others_by_fastapi(api: Api) -> None:
    """What the comparisons above cannot show: which layer answered. The running app's hot
    layer hands on to FastAPI's inner layers and routes through a pass-through that counts
    the requests reaching them."""
    layer: Any = api.app.middleware_stack
    while not isinstance(layer, HotRoutes):
        layer = layer.app
    fastapi = Counted(layer.app)
    layer.app = fastapi
    with api.client("alice") as alice:
        created = alice.post("/v1/sessions", json=shell_workflow("true"))
        session_id = created.json()["session_id"]
        read = alice.get(f"/v1/sessions/{session_id}")
        upper = alice.get(f"/v1/sessions/{session_id.upper()}")
        queried = alice.get(f"/v1/sessions/{session_id}?fields=status")
        invalid = alice.post("/v1/sessions", json={"steps": 5})
    assert [r.status_code for r in (created, read, upper, queried)] == [201, 200, 200, 200]
    assert_problem(invalid, 422, "VALIDATION_FAILED")
    assert fastapi.reached == [
        f"GET /v1/sessions/{session_id.upper()}",
        f"GET /v1/sessions/{session_id}",  # with a query string
        "POST /v1/sessions",  # a body FastAPI judges, replayed to it
    ]
