"""A session's report as a person gets and opens it: fetched from a real `stepline serve` or
written by `stepline sessions report`, then opened from disk in headless Chromium with the
network cut off. The screenshot of the report is left under test-results/<test name>/."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from engine.store.app import Stepline
from tests.e2e.conftest import STEPLINE
from tests.e2e.test_dashboard import Keys, Serve, browser, serve, shots  # noqa: F401 (fixtures)
from tests.e2e.test_sessions_cli import Cli, Keyed, deployment  # noqa: F401 (a fixture)
from tests.integration.conftest import wait_for

FAILING_BROWSER_SESSION = {
    "name": "login page check",
    "executor": "browser",
    "steps": ["open /app/login", 'expect title contains "Nothing like this"'],
    "config": {"max_attempts": 1},
    "labels": {"ticket": "OPS-42"},
}


def failed_browser_session(api: str, key: str, target: str) -> str:
    """A browser session that fails at its check, leaving a failure screenshot; its id."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {**FAILING_BROWSER_SESSION, "base_url": target}
    created = httpx.post(f"{api}/v1/sessions", json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    session_id: str = created.json()["session_id"]

    def status() -> str:
        answer = httpx.get(f"{api}/v1/sessions/{session_id}", headers=headers, timeout=10)
        return str(answer.json()["status"])

    wait_for(lambda: status() == "failed", timeout_s=90, what="the session to fail")
    return session_id


def opened_offline(chromium: Browser, report: Path) -> tuple[Page, list[str], list[str]]:
    """The report opened from disk in a context with no network: the page, the requests it
    tried beyond its own file (aborted), and the console's errors (a CSP refusal is one)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    context.set_default_timeout(20_000)
    tried: list[str] = []
    errors: list[str] = []

    def only_the_file(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            tried.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(report.as_uri())
    return page, tried, errors


def test_a_failed_browser_sessions_report_opens_offline_with_its_screenshot_shown(
    serve: Serve,  # noqa: F811
    target: str,
    browser: Browser,  # noqa: F811
    shots: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    keys = Keys()
    api = serve(1, STEPLINE_API_KEYS=keys.setting)
    session_id = failed_browser_session(api, keys.alice, target)
    answer = httpx.get(
        f"{api}/v1/sessions/{session_id}/report",
        params={"download": "1"},
        headers=keys.headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    report = tmp_path / re.findall(r'filename="([^"]+)"', answer.headers["content-disposition"])[0]
    report.write_bytes(answer.content)

    page, tried, errors = opened_offline(browser, report)
    expect(page.get_by_role("heading", name="login page check", level=1)).to_be_visible()
    steps = page.get_by_role("table", name="Steps")
    expect(steps.locator("tr[data-step-index]")).to_have_count(2)
    expect(steps.locator('tr[data-step-index="0"] .badge')).to_have_text("completed")
    expect(steps.locator('tr[data-step-index="1"]')).to_contain_text("EXPECTATION_FAILED")
    screenshot = steps.get_by_role("img", name=re.compile("Screenshot of step 1"))
    expect(screenshot).to_be_visible()
    images = page.locator("img").evaluate_all(
        "(all) => all.map((img) => [img.complete, img.naturalWidth])"
    )
    assert len(images) == 1
    assert all(complete and width > 0 for complete, width in images)
    expect(page.get_by_role("table", name="Audit trail")).to_contain_text("step 1 failed")
    page.screenshot(path=shots / "report.png", full_page=True)
    assert (tried, errors) == ([], [])
    page.context.close()


def inlined_images(html: str) -> list[str]:
    """The SHA-256 of each image the report inlines."""
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [hashlib.sha256(base64.b64decode(data)).hexdigest() for data in found]


def test_stepline_sessions_report_writes_the_file_from_the_database_or_through_a_server(
    deployment: Keyed,  # noqa: F811
    store: Stepline,  # the tenants may reach the target on loopback
    target: str,
    tmp_path: Path,
) -> None:
    del store
    api = deployment.cluster.api(workers=1)
    session_id = failed_browser_session(api, deployment.alice, target)
    env = deployment.cluster.env
    from_database = Cli(env, "--tenant", "acme")
    through_api = Cli(env, "--api", api, "--key", deployment.alice)
    written = tmp_path / "out" / "report.html"
    written.parent.mkdir()

    said = from_database("report", session_id[:8], "-o", str(written)).stdout
    printed = through_api("report", session_id, "-o", "-").stdout

    assert f"to {written}" in said
    html = written.read_text(encoding="utf-8")
    assert "login page check" in html
    assert "OPS-42" in html
    assert len(inlined_images(html)) == 1
    assert inlined_images(printed) == inlined_images(html)

    default = subprocess.run(
        [STEPLINE, "sessions", "report", session_id, "--tenant", "acme"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"stepline-{session_id[:8]}.html" in default.stdout
    assert (tmp_path / f"stepline-{session_id[:8]}.html").read_text(encoding="utf-8") != ""

    for other in (Cli(env, "--tenant", "globex"), Cli(env, "--api", api, "--key", deployment.bob)):
        refused = other("report", session_id, "-o", str(tmp_path / "theirs.html"), ok=False)
        assert refused.returncode == 2
        assert "SESSION_NOT_FOUND" in refused.stderr
    assert not (tmp_path / "theirs.html").exists()
