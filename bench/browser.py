"""The browser executor's cost per command, next to a bare Playwright script in the same run.

    python -m bench.browser [--clicks N]

A local page with a counter button, on loopback. The baseline is a bare Playwright script (sync
API, same Chromium) that clicks the button and reads the page's text, N times. Then the same
clicks through `BrowserExecutor.run` (target resolution by name, the numbered page snapshot,
cookies kept), and through the whole task loop: a session of N `click "Count"` steps recorded
on PostgreSQL, each command durably issued before it runs.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.sync_api import sync_playwright

from api.http.server import serving_in_background
from bench.appends import bench_database
from domain.dev_mode import DEV_TENANT
from domain.session import StepSpec
from domain.tenant import ANY_HOST
from engine.executors import Command
from engine.executors.artifacts import Artifacts
from engine.executors.browser import BrowserExecutor, BrowserLimits
from engine.executors.browser_host import BrowserHost, find_chromium
from engine.executors.browser_jail import chromium_launch
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.tenancy.egress import EgressPolicy
from tests import workloads

PAGE = """<!doctype html><title>Counter</title><h1>Counter</h1>
<p>Clicked <span id="n">0</span> times.</p>
<button onclick="n.textContent = +n.textContent + 1">Count</button>"""


def counter_app() -> FastAPI:
    app = FastAPI()
    app.get("/", response_class=HTMLResponse)(lambda: PAGE)
    return app


def timed(label: str, clicks: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    per_click_ms = (time.perf_counter() - started) / clicks * 1000
    print(f"{label:44s}{per_click_ms:8.2f} ms/click")
    return per_click_ms


def bare_playwright(url: str, clicks: int) -> float:
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as jail_dir:
        launch = chromium_launch(find_chromium(None), sandbox=True, jail_dir=Path(jail_dir))
        browser = playwright.chromium.launch(**launch.options())
        page = browser.new_context().new_page()
        page.goto(url)
        button = page.get_by_role("button", name="Count")

        def click_and_read() -> None:
            for _ in range(clicks):
                button.click()
                page.locator("body").inner_text()

        click_and_read()  # warm up
        result = timed("bare Playwright: click + page text", clicks, click_and_read)
        browser.close()
        return result


def executor_alone(url: str, clicks: int) -> float:
    host = BrowserHost(None, keep_parked_s=0)
    with tempfile.TemporaryDirectory() as directory:
        executor = BrowserExecutor(
            host,
            uuid4(),
            url,
            Secrets({}),
            Artifacts(Path(directory)),
            BrowserLimits(),
            EgressPolicy.of([ANY_HOST]),  # the page is on loopback
        )
        try:
            executor.run(Command("browser", "navigate", {"url": "/"}))
            click = Command("browser", "click", {"target": "Count"})

            def run_clicks() -> None:
                for _ in range(clicks):
                    outcome = executor.run(click)
                    assert outcome.ok, outcome.output

            run_clicks()  # warm up
            return timed("BrowserExecutor.run(click) + snapshot", clicks, run_clicks)
        finally:
            executor.close()
            host.close()


def through_the_task_loop(url: str, clicks: int) -> float:
    with bench_database() as database_url, tempfile.TemporaryDirectory() as directory:
        app = Stepline(eventsourcing_env(database_url))
        settings = Settings(database_url=None, data_dir=Path(directory))
        loop = TaskLoop(app, settings, builtin(), Secrets({}))
        try:
            steps = [StepSpec("open /")] + [StepSpec('click "Count"')] * clicks
            config = session_config(settings, {"executor": "browser", "base_url": url})
            warm = workloads.create_session(
                app, name="warm", steps=steps[:3], tenant=DEV_TENANT, actor="bench", config=config
            )
            loop.drive(warm, threading.Event())
            session_id = workloads.create_session(
                app, name="bench", steps=steps, tenant=DEV_TENANT, actor="bench", config=config
            )
            label = "a session of click steps, on PostgreSQL"
            result = timed(label, clicks, lambda: loop.drive(session_id, threading.Event()))
            assert app.get_session(session_id).status.value == "completed"
            return result
        finally:
            loop.close()
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200)
    args = parser.parse_args()
    with serving_in_background(counter_app()) as url:
        print(f"{args.clicks} clicks on a local page, Chromium {find_chromium(None)}, one run")
        bare = bare_playwright(url, args.clicks)
        alone = executor_alone(url, args.clicks)
        looped = through_the_task_loop(url, args.clicks)
    print(
        f"executor: {alone / bare:.1f}x a bare click ({alone - bare:+.2f} ms: finding the target "
        f"by name, the numbered snapshot, cookies); as steps of a session: {looped / bare:.1f}x"
    )


if __name__ == "__main__":
    main()
