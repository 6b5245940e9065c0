"""The analytics pages in headless Chromium against a real `stepline serve`: after a seeded mix
of runs (a flaky step, a failing version), the tables behind the charts and the tables of
workflows and steps show the API's numbers. Screenshots of each page under test-results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests.analytics_seed import PRICES, WORKFLOW, seed
from tests.e2e import test_dashboard as dashboard
from tests.e2e.test_dashboard import Keys, Serve, sign_in

# The dashboard tests' fixtures: a browser, a page in it, a served cluster, a screenshot folder.
browser, page, serve, shots = dashboard.browser, dashboard.page, dashboard.serve, dashboard.shots

NONE = "\N{EN DASH}"
"""What the pages write for no value."""


def shown(value: Any, suffix: str = "") -> str:
    """A number as the page's scripts write it (JavaScript's String())."""
    if value is None:
        return NONE
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}{suffix}"


def chart_rows(answer: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Each chart's table as the API's answer says it should read."""
    days = answer["days"]
    return {
        "Success rate by day": [[d["day"], shown(d["success_rate"], "%")] for d in days],
        "p95 step duration by day": [[d["day"], shown(d["p95_ms"], " ms")] for d in days],
        "Failures by error code": [[c, shown(n)] for c, n in answer["failed_by_code"].items()],
        "Cost by day": [[d["day"], shown(d["cost"])] for d in days],
    }


def table_rows(page: Page, name: str, count: int) -> list[list[str]]:
    table = page.get_by_role("table", name=name, exact=True)
    expect(table.locator("tbody tr")).to_have_count(count)
    rows: list[list[str]] = table.locator("tbody tr").evaluate_all(
        "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))"
    )
    return rows


def assert_charts(page: Page, answer: dict[str, Any]) -> None:
    for title, expected in chart_rows(answer).items():
        assert table_rows(page, title, len(expected)) == expected, title
        expect(page.get_by_role("img", name=title, exact=True)).to_be_visible()


def test_the_analytics_pages_show_the_apis_numbers_behind_every_chart(
    serve: Serve, fresh_database_url: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    prices = json.dumps({model: price.model_dump() for model, price in PRICES.items()})
    api = serve(0, STEPLINE_API_KEYS=keys.setting, STEPLINE_AI_PRICES=prices)
    store = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
    try:
        seed(store, "acme")
    finally:
        store.close()
    listed = httpx.get(f"{api}/v1/analytics/workflows", headers=keys.headers).json()
    detail = httpx.get(f"{api}/v1/analytics/workflows/{WORKFLOW}", headers=keys.headers).json()
    assert len(listed["items"]) == 3

    page.goto(f"{api}/ui")
    sign_in(page, keys.alice)
    page.get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("link", name="Analytics")).to_have_attribute("aria-current", "page")
    rows = table_rows(page, "Workflow versions, those with flaky steps first", 3)
    assert rows == [
        [
            w["workflow"], "inline" if w["version"] == 0 else str(w["version"]),
            *(shown(w[n]) for n in ("runs", "completed", "failed", "retries", "flaky_steps")),
            shown(w["p50_ms"], " ms"), shown(w["p95_ms"], " ms"), shown(w["cost"]),
        ]
        for w in listed["items"]
    ]  # fmt: skip
    assert_charts(page, listed)
    page.screenshot(path=shots / "analytics.png", full_page=True)

    page.get_by_role("link", name=WORKFLOW).first.click()
    expect(page.get_by_role("heading", name=WORKFLOW, level=1)).to_be_visible()
    steps = table_rows(page, "Steps, flaky first", len(detail["steps"]))
    assert [row[:8] for row in steps] == [
        [
            s["text"], str(s["version"]), s["place"], "Flaky" if s["flaky"] else NONE,
            *(shown(s[n]) for n in ("runs", "completed", "failed", "retries")),
        ]
        for s in detail["steps"]
    ]  # fmt: skip
    assert steps[0][3] == "Flaky"
    assert_charts(page, detail)
    page.screenshot(path=shots / "analytics_workflow.png", full_page=True)

    page.goto(f"{api}/ui/analytics/no%20such%20workflow")
    expect(page.get_by_role("heading", name="Workflow not found")).to_be_visible()
    expect(page.locator("#problem")).to_contain_text("WORKFLOW_NOT_FOUND")
    page.screenshot(path=shots / "analytics_not_found.png", full_page=True)
