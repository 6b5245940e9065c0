"""The learned-actions page in headless Chromium against a real `stepline serve`: an AI step's
learned action is listed with its commands for its tenant only, and forgotten from the page."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.e2e import test_dashboard as dashboard
from tests.e2e.test_dashboard import Keys, Serve, sign_in
from tests.integration.conftest import wait_for
from tests.scripted_model import ScriptedModel

# The dashboard tests' fixtures: a browser, a page in it, a served cluster, a screenshot folder.
browser, page, serve, shots = dashboard.browser, dashboard.page, dashboard.serve, dashboard.shots


def test_the_learned_page_lists_a_tenants_learned_actions_and_forgets_one(
    serve: Serve, target: str, model: ScriptedModel, page: Page, shots: Path
) -> None:
    keys = Keys()
    model.calls("http_request", method="GET", url="/login")
    model.calls("complete_step", summary="the sign-in page is up")
    api = serve(
        1,
        STEPLINE_API_KEYS=keys.setting,
        STEPLINE_AI_MODEL="scripted-model",
        STEPLINE_AI_BASE_URL=model.base_url,
        STEPLINE_AI_API_KEY="test-key",
    )
    body = {"name": "learning", "steps": ["Open the sign-in page"], "base_url": target}
    created = httpx.post(f"{api}/v1/sessions", json=body, headers=keys.headers, timeout=10)
    assert created.status_code == 201, created.text
    session = f"{api}/v1/sessions/{created.json()['session_id']}"
    wait_for(
        lambda: httpx.get(session, headers=keys.headers).json()["status"] == "completed",
        what="the session to complete",
    )

    page.goto(f"{api}/ui/learned")
    sign_in(page, keys.alice)
    row = page.get_by_role("row").filter(has_text="Open the sign-in page")
    expect(row.get_by_role("listitem")).to_contain_text('http.request {"url":"/login"')
    expect(row.locator(".badge.completed")).to_have_text("live")
    page.screenshot(path=shots / "learned.png", full_page=True)
    row.get_by_role("button", name="Forget Open the sign-in page").click()
    expect(page.locator("#empty")).to_be_visible()
    page.get_by_label("Show superseded and forgotten versions").check()
    expect(row.locator(".badge.cancelled")).to_have_text("forgotten")

    other = {"Authorization": f"Bearer {keys.bob}"}
    assert httpx.get(f"{api}/v1/learned-actions", headers=other).json()["items"] == []
