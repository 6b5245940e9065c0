"""GET /v1/analytics: a seeded mix of runs (a flaky step, a failing version, an inline session)
counted by the API exactly as a recount of the sessions' events counts them; rebuilt alike;
each tenant seeing only its own workflows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.http.analytics import success_rate
from tests.analytics_seed import PRICES, WORKFLOW, read, recount, seed
from tests.api.conftest import Api, ApiFactory

COMPARED = (
    "runs", "completed", "failed", "failed_by_code", "retries", "p50_ms", "p95_ms",
    "prompt_tokens", "completion_tokens", "cost",
)  # fmt: skip


@pytest.fixture
def api(start_api: ApiFactory) -> Api:
    started: Api = start_api(workers=0, ai_prices={m: p.model_dump() for m, p in PRICES.items()})
    return started


def numbers(item: dict[str, Any], *extra: str) -> dict[str, Any]:
    return {name: item[name] for name in (*COMPARED, *extra)}


def test_the_workflows_numbers_equal_a_recount_of_the_log(api: Api) -> None:
    app = api.services.runtime.app
    attempts, turns = read(app, seed(app))
    with api.client("alice") as alice:
        answer = alice.get("/v1/analytics/workflows")
    assert answer.status_code == 200, answer.text
    page = answer.json()
    expected = recount(
        attempts, turns, lambda a: (a.workflow, a.version), lambda t: (t.workflow, t.version)
    )
    assert {(w["workflow"], w["version"]): numbers(w) for w in page["items"]} == {
        group: {name: counted[name] for name in COMPARED} for group, counted in expected.items()
    }
    listed = [(w["workflow"], w["version"], w["flaky_steps"]) for w in page["items"]]
    assert listed == [(WORKFLOW, 1, 1), (WORKFLOW, 2, 1), ("inline smoke", 0, 0)]
    assert page["failed_by_code"] == {"VALIDATION_FAILED": 2}


def test_a_workflows_steps_and_days_equal_a_recount_and_flaky_steps_come_first(
    api: Api,
) -> None:
    app = api.services.runtime.app
    attempts, turns = read(app, seed(app))
    attempts = [a for a in attempts if a.workflow == WORKFLOW]
    turns = [t for t in turns if t.workflow == WORKFLOW]
    with api.client("alice") as alice:
        answer = alice.get(f"/v1/analytics/workflows/{WORKFLOW}")
    assert answer.status_code == 200, answer.text
    detail = answer.json()

    steps = recount(attempts, turns, lambda a: (a.version, a.place), lambda t: (t.version, t.place))
    assert {(s["version"], s["place"]): numbers(s, "flaky") for s in detail["steps"]} == {
        group: {name: counted[name] for name in (*COMPARED, "flaky")}
        for group, counted in steps.items()
    }
    order = [(s["version"], s["place"], s["flaky"]) for s in detail["steps"]]
    assert order == [(1, "1", True), (2, "1", True), (1, "0", False), (2, "0", False)]
    failing = next(s for s in detail["steps"] if (s["version"], s["place"]) == (2, "1"))
    assert (failing["text"], failing["failed_by_code"]) == (
        "GET /pay now",
        {"VALIDATION_FAILED": 2},
    )
    flaky = detail["steps"][0]
    assert (flaky["runs"], flaky["retries"], flaky["completed"]) == (2, 1, 2)

    days = recount(
        attempts,
        turns,
        lambda a: a.started.astimezone(UTC).date().isoformat(),
        lambda t: t.day.isoformat(),
    )
    day_fields = ("runs", "completed", "failed", "p95_ms", "prompt_tokens", "completion_tokens")
    assert {
        d["day"]: {n: d[n] for n in (*day_fields, "cost", "success_rate")} for d in detail["days"]
    } == {
        day: {
            **{name: counted[name] for name in (*day_fields, "cost")},
            "success_rate": success_rate(counted["completed"], counted["failed"]),
        }
        for day, counted in days.items()
    }


def test_a_rebuilt_view_gives_the_same_answers(api: Api) -> None:
    app = api.services.runtime.app
    seed(app)
    with api.client("alice") as alice:
        before = [
            alice.get(p).json()
            for p in ("/v1/analytics/workflows", f"/v1/analytics/workflows/{WORKFLOW}")
        ]
        api.services.runtime.projector.rebuild(["workflow_analytics", "ai_usage"])
        after = [
            alice.get(p).json()
            for p in ("/v1/analytics/workflows", f"/v1/analytics/workflows/{WORKFLOW}")
        ]
    assert before[0]["items"]
    assert after == before


def test_another_tenant_sees_none_of_the_workflows_and_gets_404_for_one(api: Api) -> None:
    app = api.services.runtime.app
    seed(app)
    with api.client("eve") as eve:
        assert eve.get("/v1/analytics/workflows").json()["items"] == []
        missing = eve.get(f"/v1/analytics/workflows/{WORKFLOW}")
    assert missing.status_code == 404
    assert missing.json()["code"] == "WORKFLOW_NOT_FOUND"


def test_a_name_postgresql_cannot_hold_is_a_bad_request(api: Api) -> None:
    with api.client("alice") as alice:
        nul = alice.get("/v1/analytics/workflows/a%00b")
    assert nul.status_code == 422, nul.text


def test_days_outside_since_and_until_count_nothing(api: Api) -> None:
    app = api.services.runtime.app
    seed(app)
    today = datetime.now(UTC).date()
    with api.client("alice") as alice:
        for params in (
            {"since": str(today + timedelta(days=1))},
            {"until": str(today - timedelta(days=1))},
        ):
            page = alice.get("/v1/analytics/workflows", params=params).json()
            assert (page["items"], page["days"]) == ([], []), params
        kept = alice.get(
            "/v1/analytics/workflows", params={"since": str(today), "until": str(today)}
        )
        assert len(kept.json()["items"]) == 3
        assert (
            alice.get("/v1/analytics/workflows", params={"since": "yesterday"}).status_code == 422
        )


def test_the_list_pages_with_a_cursor(api: Api) -> None:
    app = api.services.runtime.app
    seed(app)
    with api.client("alice") as alice:
        first = alice.get("/v1/analytics/workflows", params={"limit": 2}).json()
        second = alice.get(
            "/v1/analytics/workflows", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
        bad = alice.get("/v1/analytics/workflows", params={"cursor": "nonsense!"})
    assert [w["version"] for w in first["items"] + second["items"]] == [1, 2, 0]
    assert second["next_cursor"] is None
    assert bad.status_code == 422
