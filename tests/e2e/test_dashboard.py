"""The dashboard in a real browser: headless Chromium (the system one, driven by Playwright)
against a real `stepline serve` on loopback, whose workers run real sessions against the
example app. Elements are found by role and label, as a person using a screen reader would.
Each test leaves a screenshot of every page it visits under test-results/<test name>/."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import APIResponse, Browser, Page, Route, expect, sync_playwright

from api.http.auth import new_key
from engine.executors.browser_host import find_chromium, launch_arguments
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests.conftest import MASTER_KEY, allow_local_targets
from tests.e2e.conftest import STEPLINE, Cluster
from tests.integration.conftest import wait_for
from tests.waiting import eventually
from tests.webhook_receiver import Receiver

RESULTS = Path(__file__).resolve().parents[2] / "test-results"
SLOW_STEP = "GET /slow?ms={ms}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    configured = os.environ.get("STEPLINE_BROWSER_PATH")
    executable = find_chromium(Path(configured) if configured else None)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=launch_arguments(sandbox=True)
        )
        yield chromium
        chromium.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    directory = RESULTS / re.sub(r"[^\w.-]", "_", request.node.name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


Serve = Callable[..., str]


@pytest.fixture
def serve(fresh_database_url: str, tmp_path: Path) -> Iterator[Serve]:
    """Start `stepline serve` with `workers` slots and the given settings; its base URL."""
    clusters: list[Cluster] = []

    def start(workers: int, **settings: str) -> str:
        clusters.append(Cluster(fresh_database_url, tmp_path, **settings))
        base_url = clusters[-1].api(workers=workers)
        store = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
        allow_local_targets(store)  # the sessions' targets are on loopback
        store.close()
        return base_url

    yield start
    for cluster in clusters:
        cluster.stop_all()


class Keys:
    """Two tenants' API keys, and the STEPLINE_API_KEYS entry that serves them."""

    def __init__(self) -> None:
        self.alice, alice_sha = new_key()
        self.bob, bob_sha = new_key()
        self.setting = json.dumps(
            {
                "alice": {"tenant": "acme", "sha256": alice_sha},
                "bob": {"tenant": "globex", "sha256": bob_sha},
            }
        )

    @property
    def headers(self) -> dict[str, str]:
        """Alice's."""
        return {"Authorization": f"Bearer {self.alice}"}


def create_session(
    api: str, key: str | None, target: str, name: str, steps: int, ms: int, **extra: Any
) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "name": name,
        "steps": [SLOW_STEP.format(ms=ms)] * steps,
        "executor": "http",
        "base_url": target,
        **extra,
    }
    answer = httpx.post(f"{api}/v1/sessions", json=body, headers=headers, timeout=10)
    assert answer.status_code == 201, answer.text
    session_id: str = answer.json()["session_id"]
    return session_id


def event_versions(api: str, key: str | None, session_id: str) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(
        f"{api}/v1/sessions/{session_id}/events", params={"limit": 1000}, headers=headers
    )
    return [e["version"] for e in answer.json()["items"]]


def sign_in(page: Page, key: str) -> None:
    dialog = page.get_by_role("dialog", name="API key")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API key").fill(key)
    dialog.get_by_role("button", name="Use key").click()
    expect(dialog).to_be_hidden()


def timeline_versions(page: Page) -> list[int]:
    items = page.get_by_role("list", name="Timeline").locator("li[data-version]")
    return [int(v) for v in items.evaluate_all("(all) => all.map((li) => li.dataset.version)")]


def progress_of(page: Page, name: str) -> float:
    bar = page.get_by_role("progressbar", name=f"Progress of {name}")
    return float(bar.get_attribute("value") or 0)


def test_an_operator_sees_progress_live_and_pauses_and_resumes_a_session(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    api = serve(2, STEPLINE_API_KEYS=keys.setting)
    # Long enough steps that it still runs when the page pauses it: on an idle machine that
    # is about 2 s in (3 steps of 600 ms); a loaded one takes several times as long.
    session_id = create_session(
        api, keys.alice, target, "nightly import", steps=12, ms=1500, labels={"team": "ops"}
    )

    page.goto(f"{api}/ui")
    sign_in(page, keys.alice)
    row = page.get_by_role("row").filter(has_text="nightly import")
    expect(row).to_contain_text("team=ops")
    page.evaluate("window.notReloaded = true")
    first = progress_of(page, "nightly import")
    wait_for(lambda: progress_of(page, "nightly import") > first, what="progress to advance")
    assert page.evaluate("window.notReloaded") is True
    expect(row.get_by_text("running")).to_be_visible()
    page.screenshot(path=shots / "sessions.png", full_page=True)

    row.get_by_role("link", name="nightly import").click()
    expect(page.get_by_role("heading", name="nightly import", level=1)).to_be_visible()
    seen = len(timeline_versions(page))
    wait_for(lambda: len(timeline_versions(page)) > seen, what="the timeline to grow")

    page.get_by_label("Reason").fill("checking the import")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#status")).to_have_text("paused")
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline.locator("li.Paused")).to_contain_text("reason: checking the import")
    expect(timeline.locator("li.Paused")).to_contain_text("by alice")
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()
    steps = page.get_by_role("table", name="Steps")
    expect(steps.locator("tbody .badge.running")).to_have_count(0)  # a step under way: paused
    page.screenshot(path=shots / "session-paused.png", full_page=True)

    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    expect(page.get_by_role("status")).to_have_text(re.compile("ended"))
    expect(steps.locator("tbody tr")).to_have_count(12)
    expect(steps.locator("tbody .badge.completed")).to_have_count(12)
    assert timeline_versions(page) == event_versions(api, keys.alice, session_id)
    page.screenshot(path=shots / "session-completed.png", full_page=True)


def test_batches_and_the_audit_trail_are_shown_to_their_tenant(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    api = serve(2, STEPLINE_API_KEYS=keys.setting)
    sessions = [
        {"name": f"export {n}", "steps": ["GET /slow?ms=50"], "base_url": target} for n in range(3)
    ]
    created = httpx.post(
        f"{api}/v1/batches",
        json={"sessions": sessions},
        headers={"Authorization": f"Bearer {keys.alice}"},
    )
    assert created.status_code == 201, created.text
    batch_id = created.json()["batch_id"]

    page.goto(f"{api}/ui/batches")
    sign_in(page, keys.alice)
    row = page.get_by_role("row").filter(has_text=f"Batch {batch_id[:8]}")
    expect(row).to_contain_text("3/3 ended", timeout=30_000)
    expect(row).to_contain_text("alice")
    page.screenshot(path=shots / "batches.png", full_page=True)

    row.get_by_role("link").click()
    members = page.get_by_role("table", name="Sessions of the batch")
    expect(members.locator(".badge.completed")).to_have_count(3)
    page.screenshot(path=shots / "batch.png", full_page=True)

    page.get_by_role("link", name="Audit trail").click()
    trail = page.get_by_role("table", name=re.compile("Every state change"))
    expect(trail.locator("tbody tr").first).to_be_visible()
    listed = [int(p) for p in trail.locator("tbody tr td:first-child").all_inner_texts()]
    assert len(listed) > 1
    assert listed == sorted(listed, reverse=True)  # the newest first
    page.get_by_label("Hide the events of steps").check()
    page.get_by_role("button", name="Apply filters").click()
    expect(trail.get_by_role("cell", name="StepStarted", exact=True)).to_have_count(0)
    expect(trail.get_by_role("cell", name="Completed", exact=True).first).to_be_visible()
    page.get_by_label("Hide the events of steps").uncheck()
    page.get_by_label("Event type").fill("Batch.Created")
    page.get_by_role("button", name="Apply filters").click()
    expect(trail.locator("tbody tr")).to_have_count(1)
    expect(trail).to_contain_text("created a batch of 3 sessions")
    expect(trail).to_contain_text("alice")
    assert "event_type=Batch.Created" in page.url  # a filtered view can be shared
    page.screenshot(path=shots / "audit.png", full_page=True)


def test_the_audit_page_shows_the_head_of_the_chain_and_its_last_verification(
    serve: Serve, target: str, page: Page, shots: Path, fresh_database_url: str
) -> None:
    keys = Keys()
    api = serve(0, STEPLINE_API_KEYS=keys.setting)
    create_session(api, keys.alice, target, "chained", steps=1, ms=10)
    verified = subprocess.run(
        [STEPLINE, "audit", "verify", "--json"],
        env={**os.environ, "STEPLINE_DATABASE_URL": fresh_database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    head = json.loads(verified.stdout)

    page.goto(f"{api}/ui/audit")
    sign_in(page, keys.alice)
    chain = page.get_by_role("region", name="The log's hash chain")
    expect(chain.get_by_text(head["last_hash"])).to_be_visible()
    expect(chain).to_contain_text(f"position {head['last_position']}")
    expect(chain).to_contain_text(f"the chain holds (positions 1 to {head['last_position']})")
    page.screenshot(path=shots / "audit-head.png", full_page=True)


def test_another_tenant_sees_none_of_the_sessions(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    api = serve(1, STEPLINE_API_KEYS=keys.setting)
    session_id = create_session(api, keys.alice, target, "acme payroll", steps=1, ms=10)

    page.goto(f"{api}/ui")
    sign_in(page, keys.bob)
    expect(page.get_by_text("No sessions match.")).to_be_visible()
    expect(page.get_by_role("table", name=re.compile("Sessions"))).not_to_contain_text(
        "acme payroll"
    )
    page.screenshot(path=shots / "sessions-other-tenant.png", full_page=True)

    page.goto(f"{api}/ui/sessions/{session_id}")
    expect(page.get_by_role("heading", name="Session not found")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("SESSION_NOT_FOUND")
    expect(page.get_by_text("acme payroll")).to_have_count(0)
    page.screenshot(path=shots / "session-other-tenant.png", full_page=True)
    for path in ("", "/steps", "/events", "/stream"):
        answer = httpx.get(
            f"{api}/v1/sessions/{session_id}{path}",
            headers={"Authorization": f"Bearer {keys.bob}"},
        )
        assert answer.status_code == 404, path


def test_a_stream_dropped_by_the_server_resumes_with_every_event_once(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    # A subscriber more than one event behind is cut off by the server and told to resume
    # from the log: with a one-event buffer, every step's commit (several events) drops it.
    api = serve(1, STEPLINE_STREAMING_BUFFER_SIZE="1")  # no keys: dev mode on loopback needs none
    # Two drops need two commits while the page follows (it waits 0.5 s before its first
    # resume): 8 s of steps leave room for a page that is slow to load on a loaded machine.
    session_id = create_session(api, None, target, "flaky network", steps=8, ms=1000)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/stream") else None)
    page.goto(f"{api}/ui/sessions/{session_id}")
    state = page.get_by_role("status")
    expect(state).to_have_attribute("data-state", "ended", timeout=60_000)
    expect(page.get_by_role("dialog", name="API key")).to_be_hidden()

    versions = timeline_versions(page)
    assert versions == event_versions(api, None, session_id)
    assert versions == list(range(1, len(versions) + 1))
    assert len(streams) >= 3, f"the stream was dropped only {len(streams) - 1} times"
    assert int(state.get_attribute("data-reconnects") or 0) == len(streams) - 1
    page.screenshot(path=shots / "session-after-drops.png", full_page=True)


def test_an_answer_that_comes_late_never_shows_an_ended_session_running_again(
    serve: Serve, target: str, page: Page
) -> None:
    """The page refreshes on a timer, on events and on its buttons, so two reads of the
    session can be under way at once. One asked while the session ran, answered only after a
    newer one showed it ended (and the page stopped refreshing), is dropped."""
    api = serve(1)  # dev mode: no key to enter
    session_id = create_session(api, None, target, "late answer", steps=6, ms=1000)
    held: list[tuple[Route, APIResponse]] = []

    def hold_the_first_refresh(route: Route) -> None:
        if held:
            route.continue_()
        else:  # read now (the session running), answered at the end
            held.append((route, route.fetch()))

    page.goto(f"{api}/ui/sessions/{session_id}")
    expect(page.locator("#status")).to_have_text("running")  # the first read, let through
    page.route(f"**/v1/sessions/{session_id}", hold_the_first_refresh)
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    assert len(held) == 1
    route, answered_running = held[0]
    assert answered_running.json()["status"] == "running"
    with page.expect_response(f"**/v1/sessions/{session_id}"):
        route.fulfill(response=answered_running)
    page.wait_for_timeout(1000)  # for the page to act on it (at once, were it to)
    assert page.locator("#status").inner_text() == "completed"


def test_a_failed_session_says_why_in_the_list_and_at_the_top_of_its_page(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(1)  # dev mode: no key to enter
    body = {
        "name": "status check",
        "executor": "http",
        "base_url": target,
        "steps": ["GET /slow?ms=10", "expect status 404"],
        "config": {"max_attempts": 1},
    }
    created = httpx.post(f"{api}/v1/sessions", json=body, timeout=10)
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    why = "EXPECTATION_FAILED: expected status 404, got 200"

    page.goto(f"{api}/ui")
    row = page.get_by_role("row").filter(has_text="status check")
    expect(row).to_contain_text(why, timeout=60_000)
    expect(row.get_by_text("failed", exact=True)).to_be_visible()
    expect(row).to_contain_text(session_id[:8])
    page.screenshot(path=shots / "sessions-failed.png", full_page=True)

    row.get_by_role("link", name="status check").click()
    expect(page.locator("#failure")).to_have_text(f"Failed because {why}")
    steps = page.get_by_role("table", name="Steps")
    expect(steps.locator('tr[data-step-index="0"]')).to_contain_text("GET /slow?ms=10 → 200")
    expect(steps.locator('tr[data-step-index="1"]')).to_contain_text("expect status 404: failed")
    expect(page.get_by_role("list", name="Events of step 1").locator("li.Checked")).to_have_count(1)
    page.screenshot(path=shots / "session-failed.png", full_page=True)


def test_a_session_gone_on_past_a_failed_step_shows_it_and_each_steps_own_policy(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(1)
    body = {
        "name": "goes on",
        "executor": "http",
        "base_url": target,
        "steps": [
            {"text": "GET /todos", "on_failure": "continue"},  # 401: not signed in
            {"text": "GET /login", "retries": 2, "timeout_ms": 5000},
        ],
        "config": {"max_attempts": 1},
    }
    created = httpx.post(f"{api}/v1/sessions", json=body, timeout=10)
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]

    page.goto(f"{api}/ui/sessions/{session_id}")
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#progress-text")).to_have_text(
        "1/2 steps (100%), 1 failed and went on past"
    )
    steps = page.get_by_role("table", name="Steps")
    failed, completed = (steps.locator(f'tr[data-step-index="{i}"]') for i in (0, 1))
    expect(failed).to_contain_text("on_failure continue")
    expect(failed).to_contain_text("failed continued")
    expect(failed).to_contain_text("HTTP_STATUS_ERROR")
    expect(completed).to_contain_text("retries 2, timeout_ms 5000")
    page.screenshot(path=shots / "session-continued.png", full_page=True)


def test_a_session_shows_its_skipped_steps_and_where_each_step_came_from(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(1)
    template = {"name": "look", "steps": ["GET /login?look=1"]}
    pushed = httpx.post(f"{api}/v1/workflows", json=template, timeout=10)
    assert pushed.status_code in (200, 201), pushed.text
    body = {
        "name": "loops",
        "executor": "http",
        "base_url": target,
        "inputs": {"names": {"type": "array", "default": ["ada", "bob"]}},
        "steps": [
            {"text": "GET /login", "if": "len(inputs.names) == 0"},
            {"for_each": "name in inputs.names", "steps": ["GET /login?name={{name}}"]},
            {"use": "look"},
        ],
    }
    created = httpx.post(f"{api}/v1/sessions", json=body, timeout=10)
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]

    page.goto(f"{api}/ui/sessions/{session_id}")
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#progress-text")).to_have_text("4/5 steps (100%), 1 skipped")
    steps = page.get_by_role("table", name="Steps")
    skipped = steps.locator('tr[data-step-index="0"]')
    expect(skipped).to_contain_text("if len(inputs.names) == 0")
    expect(skipped.locator(".badge")).to_have_text("skipped")
    expect(steps.locator('tr[data-step-index="3"]')).to_contain_text(
        "GET /login?name=bobfor each name in inputs.names: 2 of 2"
    )
    expect(steps.locator('tr[data-step-index="4"]')).to_contain_text("from template look@1")
    page.screenshot(path=shots / "session-loop.png", full_page=True)


def test_a_browser_sessions_screenshots_are_thumbnails_beside_their_command_opened_on_click(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    api = serve(1, STEPLINE_API_KEYS=keys.setting)
    body = {
        "name": "login page check",
        "executor": "browser",
        "base_url": target,
        "steps": ["open /app/login", 'expect title contains "Nothing like this"'],
        "config": {"max_attempts": 1},
    }
    headers = {"Authorization": f"Bearer {keys.alice}"}
    created = httpx.post(f"{api}/v1/sessions", json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text

    page.goto(f"{api}/ui/sessions/{created.json()['session_id']}")
    sign_in(page, keys.alice)
    expect(page.locator("#status")).to_have_text("failed", timeout=60_000)
    check = page.get_by_role("list", name="Events of step 1").locator("li.Checked")
    thumbnail = check.get_by_role("img", name=re.compile("Screenshot of step 1"))
    expect(thumbnail).to_be_visible()
    natural, shown = thumbnail.evaluate("(img) => [img.naturalWidth, img.clientWidth]")
    assert 0 < shown < natural  # the PNG itself arrived, fetched with the key, shown small
    expect(page.get_by_role("table", name="Steps")).to_contain_text("EXPECTATION_FAILED")
    page.screenshot(path=shots / "browser-session.png", full_page=True)

    thumbnail.click()
    opened = page.get_by_role("dialog", name=re.compile("Screenshot of step 1"))
    expect(opened).to_be_visible()
    full = opened.get_by_role("img", name=re.compile("full size"))
    assert full.evaluate("(img) => [img.naturalWidth, img.clientWidth]") == [natural, natural]
    page.screenshot(path=shots / "browser-screenshot-opened.png")
    opened.get_by_role("button", name="Close").click()
    expect(opened).to_be_hidden()


def test_a_session_is_replayed_and_forked_from_its_page_and_its_lineage_links_them(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(2)  # dev mode: no key to enter
    source = create_session(api, None, target, "recorded run", steps=3, ms=10)
    wait_for(
        lambda: httpx.get(f"{api}/v1/sessions/{source}").json()["status"] == "completed",
        what="the source to complete",
    )

    page.goto(f"{api}/ui/sessions/{source}")
    expect(page.locator("#status")).to_have_text("completed")
    page.get_by_label("strict").check()
    page.get_by_role("button", name="Replay without the model").click()
    page.wait_for_url(re.compile(r"/ui/sessions/(?!" + source + ")"))
    replay = page.url.rsplit("/", 1)[1]
    expect(page.locator("#status")).to_have_text("completed")
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline.locator("li.StepReplayed")).to_have_count(3)
    lineage = page.get_by_role("list", name="Replays and forks")
    expect(lineage.get_by_role("link", name="recorded run")).to_have_count(2)
    expect(lineage.locator(f'li[data-session-id="{replay}"]')).to_contain_text("replay")
    expect(lineage.locator('[aria-current="page"]')).to_have_attribute(
        "href", f"/ui/sessions/{replay}"
    )
    page.screenshot(path=shots / "replay.png", full_page=True)

    page.get_by_label("Fork from step").fill("2")
    page.get_by_role("button", name="Fork").click()
    page.wait_for_url(re.compile(r"/ui/sessions/(?!" + replay + ")"))
    fork = page.url.rsplit("/", 1)[1]
    expect(page.locator("#status")).to_have_text("completed")
    steps = page.get_by_role("table", name="Steps")
    expect(steps.locator("tbody .badge.completed")).to_have_count(3)
    expect(
        lineage.locator(f'li[data-session-id="{replay}"] li[data-session-id="{fork}"]')
    ).to_contain_text("fork")
    page.screenshot(path=shots / "fork.png", full_page=True)
    forked = httpx.get(f"{api}/v1/sessions/{fork}/steps").json()
    assert [s["attempts"] for s in forked] == [0, 0, 1]  # steps 0 and 1 were not run again


def test_schedules_are_listed_and_paused_and_a_session_shows_each_webhook_attempt(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    receiver = Receiver(answers=[500])
    alice = {"Authorization": f"Bearer {keys.alice}"}
    with receiver.serving() as hook_url:
        api = serve(
            2,
            STEPLINE_API_KEYS=keys.setting,
            STEPLINE_MASTER_KEY=MASTER_KEY,
            STEPLINE_WEBHOOK_FIRST_RETRY_MS="100",
        )
        receiver.secret = httpx.post(f"{api}/v1/webhook-secret", headers=alice).json()["secret"]
        workflow = {"name": "export", "steps": [SLOW_STEP.format(ms=10)], "base_url": target}
        body = {"name": "hourly export", "workflow": workflow, "every": "2s"}
        body["webhook"] = {"url": hook_url}
        created = httpx.post(f"{api}/v1/schedules", json=body, headers=alice)
        assert created.status_code == 201, created.text

        page.goto(f"{api}/ui/schedules")
        sign_in(page, keys.alice)
        row = page.get_by_role("row").filter(has_text="hourly export")
        expect(row).to_contain_text("every 2s")
        expect(row.get_by_role("link", name=re.compile(r"^[1-9]\d* sessions$"))).to_be_visible(
            timeout=30_000
        )
        row.get_by_role("button", name="Pause hourly export").click()
        expect(row.locator(".badge.paused")).to_be_visible()
        expect(row.get_by_role("button", name="Resume hourly export")).to_be_visible()
        page.screenshot(path=shots / "schedules.png", full_page=True)

        retried = eventually(
            lambda: [r for r in receiver.got() if r.answered == 500], "a refused delivery"
        )
        session_id = retried[0].payload["data"]["session_id"]
        # That delivery's own retry, before the receiver goes: on a slow machine a later
        # firing's delivery may come first, and the retry would find nobody listening.
        refused = retried[0].webhook_id
        eventually(
            lambda: [r for r in receiver.got() if r.webhook_id == refused and r.answered == 200],
            "the delivery tried again",
        )
    page.goto(f"{api}/ui/sessions/{session_id}")
    webhooks = page.get_by_role("list", name="Webhooks")
    expect(webhooks).to_contain_text("delivered", timeout=30_000)
    attempts = webhooks.get_by_role("list", name="Attempts of session.completed")
    expect(attempts.locator("li")).to_have_count(2)
    expect(attempts.locator("li").first).to_contain_text("500")
    expect(attempts.locator("li").last).to_contain_text("200")
    expect(webhooks).to_contain_text(retried[0].webhook_id)
    page.screenshot(path=shots / "session-webhooks.png", full_page=True)


def test_an_approver_sees_what_sessions_wait_for_and_approves_or_rejects_them(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    api = serve(2, STEPLINE_API_KEYS=keys.setting)
    steps = ["wait for approval: Send 1200 EUR? within 2h", "GET /slow?ms=10"]
    for name in ("send payment", "refund"):
        body = {"name": name, "steps": steps, "executor": "http", "base_url": target}
        answer = httpx.post(f"{api}/v1/sessions", json=body, headers=keys.headers)
        assert answer.status_code == 201, answer.text
    refund = answer.json()["session_id"]

    page.goto(f"{api}/ui?status=waiting")
    sign_in(page, keys.alice)
    row = page.get_by_role("row").filter(has_text="send payment")
    expect(row.locator(".badge.waiting")).to_be_visible(timeout=30_000)
    expect(row).to_contain_text("Waiting for approval: Send 1200 EUR? (until")
    expect(page.get_by_role("row").filter(has_text="refund")).to_contain_text("waiting")
    page.screenshot(path=shots / "sessions-waiting.png", full_page=True)

    row.get_by_role("link", name="send payment").click()
    expect(page.locator("#waiting-for")).to_contain_text("Waiting for approval: Send 1200 EUR?")
    decision = page.get_by_role("form", name="Answer the approval")
    decision.get_by_label("Comment").fill("checked the invoice")
    page.screenshot(path=shots / "session-waiting.png", full_page=True)
    decision.get_by_role("button", name="Approve").click()
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline.locator("li.WaitEnded")).to_contain_text("approval approved")
    expect(timeline.locator("li.WaitEnded")).to_contain_text("checked the invoice")
    expect(timeline.locator("li.WaitEnded")).to_contain_text("by alice")
    expect(page.get_by_role("form", name="Answer the approval")).to_be_hidden()

    page.goto(f"{api}/ui/sessions/{refund}")
    decision = page.get_by_role("form", name="Answer the approval")
    decision.get_by_label("Comment").fill("not this month")
    decision.get_by_role("button", name="Reject").click()
    expect(page.locator("#status")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#failure")).to_contain_text("APPROVAL_REJECTED")
    expect(page.locator("#failure")).to_contain_text("not this month")
    page.screenshot(path=shots / "session-rejected.png", full_page=True)
    assert timeline_versions(page) == event_versions(api, keys.alice, refund)


# ---- the workflow registry's pages --------------------------------------------------------

XSS = '<img src=x onerror="window.pwned = true">'


def registered_workflow(target: str, step: str = "GET /slow?ms={{inputs.delay}}") -> dict[str, Any]:
    """A workflow document with an input of each kind the run form makes a control for."""
    return {
        "name": "nightly export",
        "base_url": target,
        "inputs": {
            "delay": {
                "type": "integer",
                "minimum": 1,
                "default": 10,
                "description": "how long the page waits, in ms",
            },
            "verbose": {"type": "boolean", "default": False},
            "headers": {"type": "object", "default": {}},
        },
        "steps": ["GET /slow?ms=5", step, "expect status 200"],
    }


def push(api: str, key: str | None, document: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(f"{api}/v1/workflows", json=document, headers=headers)
    assert answer.status_code == 201, answer.text
    version: dict[str, Any] = answer.json()
    return version


def test_the_workflows_page_lists_the_tenants_workflows_and_none_of_another_tenants(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    keys = Keys()
    api = serve(0, STEPLINE_API_KEYS=keys.setting)
    push(api, keys.alice, registered_workflow(target))
    push(api, keys.alice, registered_workflow(target, "GET /slow?ms=20"))
    push(api, keys.bob, {**registered_workflow(target), "name": "globex report"})

    page.goto(f"{api}/ui")
    sign_in(page, keys.alice)
    page.get_by_role("link", name="Workflows").click()
    listed = page.get_by_role("table", name=re.compile("Registered workflows"))
    row = listed.get_by_role("row").filter(has_text="nightly export")
    expect(row.get_by_role("cell").nth(0)).to_have_text("2")  # the current version
    expect(row.get_by_role("cell").nth(1)).to_have_text("2")  # versions
    expect(listed).not_to_contain_text("globex report")
    expect(page.get_by_role("link", name="Workflows")).to_have_attribute("aria-current", "page")
    page.screenshot(path=shots / "workflows.png", full_page=True)
    row.get_by_role("link", name="nightly export").click()
    expect(page.get_by_role("heading", name="nightly export", level=1)).to_be_visible()
    assert page.url == f"{api}/ui/workflows/nightly%20export"

    page.goto(f"{api}/ui/workflows/globex report")
    expect(page.get_by_role("heading", name="Workflow not found")).to_be_visible()
    expect(page.locator("#problem")).to_contain_text("WORKFLOW_NOT_FOUND")
    expect(page.get_by_role("table", name="Versions, oldest first")).to_be_hidden()


def test_a_workflows_page_shows_its_versions_and_diffs_them_and_rolls_one_back(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(0)  # dev mode: no key to enter
    one = push(api, None, registered_workflow(target))
    two = push(api, None, registered_workflow(target, "GET /slow?ms=20"))

    page.goto(f"{api}/ui/workflows/nightly export")
    versions = page.get_by_role("table", name="Versions, oldest first")
    expect(versions.locator("tbody tr")).to_have_count(2)
    first, second = (versions.locator(f'tr[data-version="{n}"]') for n in (1, 2))
    expect(first).to_contain_text(one["sha256"][:12])
    expect(second).to_contain_text(two["sha256"][:12])
    expect(second.locator(".badge.current")).to_have_text("current")
    expect(first.locator(".badge.current")).to_have_count(0)
    expect(page.get_by_role("heading", name="Version 2 (current)")).to_be_visible()
    expect(page.locator("#document")).to_contain_text('"GET /slow?ms=20"')

    diff = page.locator("#diff")
    expect(diff.locator(".removed")).to_have_text(['-    "GET /slow?ms={{inputs.delay}}",'])
    expect(diff.locator(".added")).to_have_text(['+    "GET /slow?ms=20",'])
    expect(diff.locator(".file")).to_have_text(["--- nightly export@1", "+++ nightly export@2"])
    expect(diff.locator(".context").first).to_be_visible()
    page.screenshot(path=shots / "workflow-diff.png", full_page=True)
    compare = page.get_by_role("form", name="Choose the versions to compare")
    compare.get_by_label("From").select_option("Version 2")
    compare.get_by_label("To").select_option("Version 1")
    compare.get_by_role("button", name="Show the diff").click()
    expect(diff.locator(".added")).to_have_text(['+    "GET /slow?ms={{inputs.delay}}",'])
    assert "from=2&to=1" in page.url  # a diff can be shared

    versions.get_by_role("link", name="Version 1").click()
    expect(page.get_by_role("heading", name="Version 1", exact=True)).to_be_visible()
    expect(page.locator("#document")).to_contain_text('"GET /slow?ms={{inputs.delay}}"')
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Roll back to this version").click()
    expect(first.locator(".badge.current")).to_have_text("current")
    expect(second.locator(".badge.current")).to_have_count(0)
    expect(page.get_by_role("button", name="Roll back to this version")).to_be_disabled()
    page.screenshot(path=shots / "workflow-rolled-back.png", full_page=True)
    assert httpx.get(f"{api}/v1/workflows/nightly export").json()["current_version"] == 1


def test_a_workflow_version_runs_from_its_page_with_typed_inputs_and_refusals_are_shown(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(1)  # dev mode: no key to enter
    one = push(api, None, registered_workflow(target))
    push(api, None, registered_workflow(target, "GET /slow?ms=20"))

    page.goto(f"{api}/ui/workflows/nightly export?version=1")
    run = page.get_by_role("form", name="Run version 1")
    expect(run.get_by_label("delay")).to_have_value("10")
    expect(run.get_by_label("delay")).to_have_accessible_description(
        "integer, default 10: how long the page waits, in ms"
    )
    refused = run.get_by_role("alert")
    run.get_by_label("delay").fill("0")
    run.get_by_role("button", name="Run").click()
    expect(refused).to_contain_text("INPUT_INVALID: input delay: 0 is less than the minimum of 1")
    expect(run.get_by_label("delay")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=shots / "workflow-run-refused.png", full_page=True)

    run.get_by_label("delay").fill("soon")
    run.get_by_role("button", name="Run").click()
    expect(refused).to_have_text('Not sent: input delay: "soon" is not a number')
    run.get_by_label("delay").fill("25")
    run.get_by_label("headers").fill('{"x": 1')
    run.get_by_role("button", name="Run").click()
    expect(refused).to_contain_text("Not sent: input headers is not JSON")
    assert httpx.get(f"{api}/v1/sessions").json()["items"] == []

    run.get_by_label("headers").fill('{"x": 1}')
    run.get_by_label("verbose").check()
    run.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/ui/sessions/[0-9a-f-]{36}$"))
    session_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name="nightly export", level=1)).to_be_visible()
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    page.screenshot(path=shots / "workflow-run-session.png", full_page=True)
    created = httpx.get(f"{api}/v1/sessions/{session_id}/events").json()["items"][0]["data"]
    assert created["config"]["workflow"] == {
        "name": "nightly export",
        "version": 1,
        "sha256": one["sha256"],
    }
    assert created["config"]["inputs"] == {"delay": 25, "verbose": True, "headers": {"x": 1}}
    assert created["steps"][1]["text"] == "GET /slow?ms=25"


def test_markup_in_a_workflow_document_or_its_address_is_shown_as_text(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(0)  # dev mode: no key to enter
    marked = registered_workflow(target)
    marked["labels"] = {"team": XSS}
    marked["inputs"]["delay"]["description"] = XSS
    marked["inputs"]["mode"] = {"type": "string", "enum": [XSS, "plain"], "default": XSS}
    push(api, None, registered_workflow(target))
    push(api, None, marked)

    page.goto(f"{api}/ui/workflows/nightly export")
    as_json = f'"team": {json.dumps(XSS)}'
    expect(page.locator("#document")).to_contain_text(as_json)
    expect(page.locator("#diff .added").filter(has_text=as_json)).to_have_count(1)
    run = page.get_by_role("form", name="Run version 2")
    expect(run.get_by_label("delay")).to_have_accessible_description(re.compile(re.escape(XSS)))
    expect(run.get_by_label("mode")).to_have_value("0")  # the default, XSS, chosen
    expect(run.get_by_label("mode").locator("option").nth(1)).to_have_text(XSS)
    page.screenshot(path=shots / "workflow-markup.png", full_page=True)
    assert page.locator("img").count() == 0
    assert page.evaluate("window.pwned") is None

    page.goto(f"{api}/ui/workflows/{XSS}")
    expect(page.get_by_role("heading", name="Workflow not found")).to_be_visible()
    expect(page.locator("#problem")).to_contain_text("WORKFLOW_NOT_FOUND")
    expect(page.locator("#problem")).to_contain_text(XSS)
    assert page.locator("img").count() == 0
    assert page.evaluate("window.pwned") is None
