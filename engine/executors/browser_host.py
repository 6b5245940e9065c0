"""One Chromium per process, shared by its sessions, each in a context of its own.

Playwright's objects belong to the event loop that made them, so the host runs one asyncio loop
in a thread of its own and every session's browser work runs there as coroutines (`call`); the
session threads wait on the result. Chromium is the system's (Debian's `chromium`, or
`STEPLINE_BROWSER_PATH`), never a downloaded build, launched on first use and again if it dies.

A worker running as root starts Chromium only inside a jail (uid 65534, namespaces of its own,
see `browser_jail`), or not at all.

A session's context (its cookies, storage, open page) is closed when the session ends; when a
run stops without ending (a pause, a stop) it is parked for `keep_parked_s`, so a session resumed
in the same process soon after finds its page as it left it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from engine.executors.browser_jail import ChromiumLaunch, chromium_launch
from engine.executors.egress_proxy import EgressProxy
from engine.executors.sandbox import SANDBOX_UID, is_root
from engine.logs import LOGGER_NAME
from engine.tenancy.egress import EgressPolicy

log = logging.getLogger(LOGGER_NAME)

T = TypeVar("T")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "install Chromium (Debian/Ubuntu: apt-get install -y chromium) or set STEPLINE_BROWSER_PATH "
    "to a Chromium or Chrome executable"
)


class BrowserUnavailable(Exception):
    """No browser could be started; the message says what to install or set."""

    code = "BROWSER_UNAVAILABLE"


def find_chromium(configured: Path | None) -> str:
    if configured is not None:
        if not os.access(configured, os.X_OK):
            raise BrowserUnavailable(f"STEPLINE_BROWSER_PATH={configured} is not an executable")
        return str(configured)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable(f"no Chromium found on PATH: {INSTALL_HINT}")


def egress_arguments(refusing_proxy: str) -> list[str]:
    """Chromium's own ways past a context's proxy, closed: traffic outside any context goes to
    a proxy that refuses everything, loopback is proxied too (Chromium bypasses it by
    default), WebRTC sends no UDP around the proxy, and no name is resolved locally."""
    return [
        f"--proxy-server={refusing_proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",  # what Chromium 156 reads
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",  # older builds' name
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]


def launch_arguments(sandbox: bool) -> list[str]:
    """For a Playwright launch of our own pages outside BrowserHost (the dashboard's tests),
    never a tenant's: Chromium refuses to run as root with its sandbox on; outside root it keeps
    it unless told otherwise (a container that denies it user namespaces)."""
    return [] if sandbox and not is_root() else ["--no-sandbox"]


@dataclass
class Tab:
    """A session's browser context and its page."""

    context: BrowserContext
    page: Page
    proxy: EgressProxy
    """The context's way out, with its session's egress policy."""
    reused: bool = False
    """True when the page was parked by an earlier run of the session in this process."""


class BrowserHost:
    def __init__(
        self,
        executable: Path | None,
        keep_parked_s: float,
        sandbox: bool = True,
        bwrap_path: str | None = None,
    ) -> None:
        self.configured_path = executable
        self.bwrap_path = bwrap_path
        self.keep_parked_s = keep_parked_s
        self.sandbox = sandbox
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._parked: dict[UUID, tuple[Tab, asyncio.TimerHandle]] = {}
        self._refusing_proxy: EgressProxy | None = None
        self._closing: set[asyncio.Future[None]] = set()

    # ---- the loop thread ----------------------------------------------------------------

    def call(self, work: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `work` on the browser's loop and wait for it; cancelled if it overruns."""
        future = asyncio.run_coroutine_threadsafe(work, self._started())
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the browser did not answer within {timeout_s:.0f} s") from None

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="stepline-browser", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Close every context and the browser; stop the loop thread."""
        with self._start_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shut_down(), loop).result(30)
        except (concurrent.futures.TimeoutError, PlaywrightError) as error:
            log.warning("The browser did not shut down cleanly: %s", error)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    async def _shut_down(self) -> None:
        for tab, timer in self._parked.values():
            timer.cancel()
            await _close_quietly(tab)
        self._parked.clear()
        if self._browser is not None:
            await self._browser.close()
            self._browser = None
        if self._refusing_proxy is not None:
            self._refusing_proxy.close()
            self._refusing_proxy = None
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None

    # ---- on the loop: browsers and tabs -------------------------------------------------

    async def browser(self) -> Browser:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        executable = find_chromium(self.configured_path)
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        # The jail script is needed only until Chromium is exec'd: gone once it answers.
        with tempfile.TemporaryDirectory(prefix="stepline-chromium-") as jail_dir:
            launch = self._launch(executable, Path(jail_dir))
            try:
                self._browser = await self._playwright.chromium.launch(
                    **launch.options(), headless=True, args=self._egress_arguments()
                )
            except PlaywrightError as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise BrowserUnavailable(f"{executable} did not start: {first_line}") from None
        log.info(
            "Browser started: %s %s%s",
            executable,
            self._browser.version,
            f" (in its jail, as uid {SANDBOX_UID})" if launch.jailed else "",
        )
        return self._browser

    def _launch(self, executable: str, jail_dir: Path) -> ChromiumLaunch:
        launch = chromium_launch(executable, self.sandbox, jail_dir, self.bwrap_path)
        if not self.sandbox:
            log.warning(
                "Running Chromium without its sandbox (STEPLINE_BROWSER_SANDBOX=false)%s",
                ", inside its jail" if launch.jailed else "",
            )
        return launch

    def _egress_arguments(self) -> list[str]:
        if self._refusing_proxy is None:
            self._refusing_proxy = EgressProxy(EgressPolicy.refusing_all())
        return egress_arguments(self._refusing_proxy.server)

    async def open_tab(
        self, session_id: UUID, cookies: list[dict[str, Any]], egress: EgressPolicy
    ) -> Tab:
        """The session's parked tab if there is one, else a new context (with `cookies`); its
        traffic goes out through a proxy of its own that enforces `egress`."""
        parked = self._parked.pop(session_id, None)
        if parked is not None:
            tab, timer = parked
            timer.cancel()
            if tab.context.browser is not None and tab.context.browser.is_connected():
                tab.proxy.policy = egress
                return Tab(tab.context, tab.page, tab.proxy, reused=True)
            await _close_quietly(tab)
        browser = await self.browser()
        proxy = EgressProxy(egress)
        try:
            context = await browser.new_context(
                accept_downloads=False,
                service_workers="block",
                proxy={"server": proxy.server, "bypass": "<-loopback>"},
            )
            if cookies:
                await context.add_cookies(cookies)  # type: ignore[arg-type]
            return Tab(context, await context.new_page(), proxy)
        except BaseException:
            proxy.close()
            raise

    def release(self, session_id: UUID, tab: Tab, *, keep: bool) -> None:
        """The run is over: close the tab, or park it for a resume in this process."""
        loop = self._loop
        if loop is None:
            return
        if keep and self.keep_parked_s > 0:
            loop.call_soon_threadsafe(self._park, session_id, tab)
        else:
            asyncio.run_coroutine_threadsafe(_close_quietly(tab), loop)

    def _park(self, session_id: UUID, tab: Tab) -> None:
        assert self._loop is not None
        timer = self._loop.call_later(self.keep_parked_s, self._expire, session_id)
        self._parked[session_id] = (tab, timer)

    def _expire(self, session_id: UUID) -> None:
        parked = self._parked.pop(session_id, None)
        if parked is not None:
            self._closing.add(task := asyncio.ensure_future(_close_quietly(parked[0])))
            task.add_done_callback(self._closing.discard)


async def _close_quietly(tab: Tab) -> None:
    with contextlib.suppress(PlaywrightError):  # the browser is already gone
        await tab.context.close()
    tab.proxy.close()
