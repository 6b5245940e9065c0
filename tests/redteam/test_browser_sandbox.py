"""A tenant's browser step against the host: Chromium is nobody, in namespaces of its own, and
opens web pages only. Real Chromium, pages served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from api.http.server import serving_in_background
from domain.session import SessionStatus
from engine.executors import Command
from engine.executors.artifacts import Artifacts
from engine.executors.browser import BrowserExecutor, BrowserLimits
from engine.executors.browser_host import BrowserHost
from engine.loop.builtin_steps import builtin
from engine.loop.task_loop import TaskLoop
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.egress import EgressPolicy
from tests.integration.conftest import drive, start_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail is for workers running as root")

NOBODY = 65534
WORKER_SECRET = f"worker-secret-{uuid4()}"
FILE_SECRET = f"local-file-secret-{uuid4()}"


# ---- what the browser is pointed at ------------------------------------------------------


@pytest.fixture
def local_secret(tmp_path: Path) -> Path:
    """A file only root may read, as the worker's own files are."""
    path = tmp_path / "secret.txt"
    path.write_text(FILE_SECRET)
    path.chmod(0o600)
    return path


def pages(local_secret: Path) -> FastAPI:
    app = FastAPI()
    app.get("/", response_class=HTMLResponse)(
        lambda: "<!doctype html><title>Hello</title><h1>hello from loopback</h1>"
    )
    app.get("/control", response_class=PlainTextResponse)(lambda: "control-ok")
    snoop = f"""<!doctype html><title>Snoop</title>
<iframe src="file://{local_secret}"></iframe><iframe src="file:///etc/hostname"></iframe>
<iframe src="/control"></iframe>
<p id="local">waiting</p><p id="control">waiting</p>
<script>
const read = (url) => fetch(url).then((r) => r.text()).catch((e) => "refused: " + e);
read("file://{local_secret}").then((text) => (document.getElementById("local").textContent = text));
read("/control").then((text) => (document.getElementById("control").textContent = text));
</script>"""
    app.get("/snoop", response_class=HTMLResponse)(lambda: snoop)
    return app


@pytest.fixture
def site(local_secret: Path) -> Iterator[str]:
    with serving_in_background(pages(local_secret)) as url:
        yield url


@pytest.fixture
def host() -> Iterator[BrowserHost]:
    browser_host = BrowserHost(None, keep_parked_s=0)
    yield browser_host
    browser_host.close()


@pytest.fixture
def browser(host: BrowserHost, site: str, tmp_path: Path) -> Iterator[BrowserExecutor]:
    executor = BrowserExecutor(
        host,
        uuid4(),
        site,
        Secrets({}),
        Artifacts(tmp_path / "artifacts"),
        BrowserLimits(),
        EgressPolicy.of(["127.0.0.1"]),  # the test site
    )
    yield executor
    executor.close()


@pytest.fixture
def loop(app: Stepline, tmp_path: Path) -> Iterator[TaskLoop]:
    task_loop = TaskLoop(
        app, Settings(database_url=None, data_dir=tmp_path), builtin(), Secrets({})
    )
    yield task_loop
    task_loop.close()


# ---- the processes Playwright started, seen from the host --------------------------------


@dataclass(frozen=True)
class Process:
    pid: int
    argv: list[str]
    uids: list[int]
    seccomp: int
    pid_namespace: str
    net_namespace: str
    environ: bytes

    @property
    def is_chromium(self) -> bool:
        return Path(self.argv[0]).name.startswith("chrom") if self.argv else False


def started_by_playwright() -> list[Process]:
    """Everything below the Playwright driver(s) this test process runs: Chromium and its jail."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    drivers = [pid for pid in children.get(os.getpid(), []) if b"run-driver" in _cmdline(pid)]
    found, queue = [], [child for driver in drivers for child in children.get(driver, [])]
    while queue:
        pid = queue.pop()
        queue += children.get(pid, [])
        with contextlib.suppress(OSError):  # it ended meanwhile
            found.append(_process(pid))
    return found


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def _process(pid: int) -> Process:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Process(
        pid=pid,
        argv=[part.decode() for part in _cmdline(pid).split(b"\0") if part],
        uids=[int(uid) for uid in status["Uid"].split()],
        seccomp=int(status["Seccomp"]),
        pid_namespace=os.readlink(f"/proc/{pid}/ns/pid"),
        net_namespace=os.readlink(f"/proc/{pid}/ns/net"),
        environ=Path(f"/proc/{pid}/environ").read_bytes(),
    )


def opened_directly(host: BrowserHost, url: str) -> str:
    """What Chromium shows at `url` when told to go there over the protocol, past the
    executor's check — as a page that found a way to a file: URL would."""

    async def visit() -> str:
        tab = await host.open_tab(uuid4(), [], EgressPolicy.of(["127.0.0.1"]))
        try:
            with contextlib.suppress(PlaywrightError):  # e.g. net::ERR_FILE_NOT_FOUND
                await tab.page.goto(url)
            return await content_once_settled(tab.page)
        finally:
            await tab.context.close()

    return host.call(visit(), 60)


async def content_once_settled(page: Page, timeout_s: float = 10) -> str:
    """The page's HTML; a failed navigation goes on to commit an error page meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await page.content()
        except PlaywrightError:
            if time.monotonic() > deadline:
                raise
            await page.wait_for_load_state()
            await asyncio.sleep(0.05)


# ---- the tests -----------------------------------------------------------------------------


def test_every_chromium_process_is_nobody_in_a_pid_namespace_of_its_own(
    browser: BrowserExecutor,
) -> None:
    assert browser.run(Command("browser", "navigate", {"url": "/"})).ok

    processes = started_by_playwright()

    chromium = [p for p in processes if p.is_chromium]
    assert len(chromium) >= 3, processes  # the browser, its zygotes, the page's renderer
    assert [p for p in processes if p.uids != [NOBODY] * 4] == []
    ours = os.readlink("/proc/self/ns/pid")
    assert [p for p in chromium if p.pid_namespace == ours] == []


def test_chromium_keeps_its_own_sandbox_inside_the_jail(browser: BrowserExecutor) -> None:
    assert browser.run(Command("browser", "navigate", {"url": "/"})).ok

    processes = started_by_playwright()

    renderers = [p for p in processes if "--type=renderer" in " ".join(p.argv)]
    assert renderers, processes
    host_network = os.readlink("/proc/self/ns/net")
    assert [(p.seccomp, p.net_namespace == host_network) for p in renderers] == [
        (2, False)  # seccomp-bpf filtering, no network of their own
    ] * len(renderers)


def test_the_workers_environment_is_not_in_chromium(
    browser: BrowserExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_SECRET_X", WORKER_SECRET)  # before Chromium starts

    assert browser.run(Command("browser", "navigate", {"url": "/"})).ok

    processes = started_by_playwright()
    assert [p for p in processes if p.is_chromium]
    leaking = [p.argv[:1] for p in processes if WORKER_SECRET.encode() in p.environ]
    assert leaking == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file:///proc/self/environ",
        f"file:///proc/{os.getpid()}/environ",
        "FILE:///etc/passwd",
        "chrome://version",
        "view-source:http://127.0.0.1:1/",
        "data:text/html,<script>alert(1)</script>",
        "javascript:alert(document.cookie)",
        "filesystem:http://127.0.0.1:1/temporary/x",
    ],
)
def test_a_step_cannot_open_anything_but_a_web_page(loop: TaskLoop, site: str, url: str) -> None:
    session_id = start_session(loop, [f"open {url}"], site, executor="browser")

    session = drive(loop, session_id)

    assert session.status is SessionStatus.FAILED
    assert session.steps[0].error is not None
    assert session.steps[0].error["code"] == "URL_SCHEME_REFUSED"
    assert started_by_playwright() == []  # refused before a browser was started


@pytest.mark.parametrize(
    "url",
    ["  file:///etc/passwd", "fi\tle:///etc/passwd", "\x00file:///etc/passwd", "vIeW-SoUrCe:/"],
)
def test_a_navigation_spelled_to_slip_past_the_check_is_refused(
    browser: BrowserExecutor, url: str
) -> None:
    outcome = browser.run(Command("browser", "navigate", {"url": url}))

    assert outcome.error is not None
    assert outcome.error.code == "URL_SCHEME_REFUSED"
    assert started_by_playwright() == []


def test_a_web_page_cannot_read_local_files(host: BrowserHost, site: str) -> None:
    async def snoop() -> tuple[str, str, list[str], str]:
        tab = await host.open_tab(uuid4(), [], EgressPolicy.of(["127.0.0.1"]))
        try:
            await tab.page.goto(f"{site}/snoop")
            await tab.page.wait_for_function(
                "['local', 'control'].every((id) => "
                "document.getElementById(id).textContent !== 'waiting')"
            )
            local = await tab.page.inner_text("#local")
            control = await tab.page.inner_text("#control")
            framed = [frame.url for frame in tab.page.frames[1:]]
            control_frame = tab.page.frames[-1]
            await control_frame.wait_for_load_state()
            return local, control, framed, await control_frame.inner_text("body")
        finally:
            await tab.context.close()

    local, control, framed, control_framed = host.call(snoop(), 60)

    # Controls: the page's script ran and fetched from its origin, and frames load.
    assert (control, control_framed) == ("control-ok", "control-ok")
    assert local.startswith("refused: ")
    assert framed == ["", "", f"{site}/control"]  # the file: frames never committed


@pytest.mark.parametrize(
    ("path", "leak"),
    [("{secret}", FILE_SECRET), ("{directory}/", "secret.txt"), ("/etc/passwd", "root:x:0:0")],
    ids=["a root-only file", "a directory listing", "/etc/passwd"],
)
def test_chromium_sees_none_of_the_hosts_files_even_at_a_file_url(
    host: BrowserHost, local_secret: Path, path: str, leak: str
) -> None:
    url = "file://" + path.format(secret=local_secret, directory=local_secret.parent)

    shown = opened_directly(host, url)

    assert leak not in shown


def test_as_root_without_bubblewrap_chromium_is_not_started(
    browser: BrowserExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # no bwrap, no setpriv
    browser.host.configured_path = Path("/usr/bin/chromium")

    outcome = browser.run(Command("browser", "navigate", {"url": "/"}))

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "SANDBOX_UNAVAILABLE"
    assert "bubblewrap" in outcome.error.message
    assert started_by_playwright() == []
