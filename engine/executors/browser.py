"""The browser executor: a session's own Chromium context, driven by plain-language commands.

Commands: navigate, click, fill, press, select, read_page, screenshot, back, and for step
definitions expect_page_contains, expect_title_contains, expect_url_contains, save_text.
Targets resolve as a person would name them: a number from the last page snapshot, `role
"name"`, a label, a button's or link's name, a placeholder, visible text — CSS last. Every result
records the page afterwards (URL, title, a bounded snapshot), so the next turn and a later replay
can compare. A failed command takes a screenshot (every command does with `screenshots: all`),
stored as an artifact and referenced by hash.

Only web pages are opened: a URL whose scheme is not http(s) (file:, chrome:, view-source:, data:,
javascript:...) is refused before the browser is touched, as a browser would read the scheme.

Secrets are substituted here and nowhere else: a field filled with one is masked in screenshots,
a password field never shows its value in a snapshot, and whatever reaches a result is redacted
by the task loop before it is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit
from uuid import UUID

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from domain.extraction import MAX_DATA_CHARS
from engine.executors import (
    SAVED_PLACEHOLDER,
    Command,
    Outcome,
    VariableNotSet,
    View,
    holds_placeholder,
    refused,
    truncated,
    with_variables,
)
from engine.executors.artifacts import Artifacts
from engine.executors.browser_host import BrowserHost, BrowserUnavailable, Tab
from engine.executors.egress_proxy import REFUSED_HEADER
from engine.executors.page_snapshot import REF_ATTRIBUTE, SNAPSHOT_JS, interactive_elements
from engine.executors.sandbox import SandboxUnavailable
from engine.secrets import FILLED, Secrets, SecretUnusable, origin_of
from engine.tenancy.egress import EgressPolicy, Refusal

NUMBERED = re.compile(r"^\[?#?(\d+)\]?$")
ROLE_AND_NAME = re.compile(r'^(?P<role>[a-z]+) "(?P<name>.+)"$')
ACTION_ROLES = ("button", "link", "checkbox", "radio", "tab", "menuitem", "option", "switch")
FIELD_ROLES = ("textbox", "searchbox", "combobox", "spinbutton")
SECRET_MARK = "data-stepline-secret"  # noqa: S105 (an attribute name, not a secret)
POLL_S = 0.1
ELEMENTS_IN_MESSAGE = 40
"""Of the page's elements an ELEMENT_NOT_FOUND message lists (its details hold them all)."""
WEB_SCHEMES = frozenset({"http", "https"})
BLANK = "about:blank"
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
TABS_AND_NEWLINES = re.compile(r"[\t\n\r]")
C0_AND_SPACE = "".join(map(chr, range(0x21)))
VIEW_MAX_BYTES = 1_000_000
"""The largest image a model is shown (vision): the viewport as PNG, else as JPEG, else none."""
VIEW_JPEG_QUALITY = 60
SECRET_SHOWN = "the page shows a secret's value, so no screenshot is sent this turn"  # noqa: S105
SHOWN_TEXT_JS = """(mark) => {
  const texts = [document.body ? document.body.innerText : ""];
  const visit = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) {
        texts.push(el.shadowRoot.textContent ?? "");
        visit(el.shadowRoot);
      }
      const field = ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
      if (field && !el.hasAttribute(mark) && el.type !== "password") texts.push(el.value ?? "");
    }
  };
  visit(document);
  return texts;
}"""
"""What a frame shows a person as text: its text, its shadow roots' and its fields' values
(not those masked, nor a password field's, drawn as dots)."""
TUNNEL_FAILED = "net::ERR_TUNNEL_CONNECTION_FAILED"
"""Chromium's error when the proxy refuses a CONNECT (https, wss)."""


@dataclass(frozen=True)
class BrowserLimits:
    action_timeout_ms: int = 5_000
    navigation_timeout_ms: int = 30_000
    expect_timeout_ms: int = 2_000
    snapshot_chars: int = 1_500
    """Of the page snapshot each result records; `read_page` returns up to max_output_chars."""
    max_output_chars: int = 4_000
    screenshots_all: bool = False


class Problem(Exception):
    """A command that cannot be done as asked: its error code and message."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass
class Done:
    """What a command found, before the page's state is added."""

    fields: dict[str, Any]
    snapshot_chars: int | None = None


class BrowserExecutor:
    kind = "browser"
    checks = frozenset({"expect_page_contains", "expect_title_contains", "expect_url_contains"})

    def __init__(  # noqa: PLR0917 (built in one place, by the browser kind)
        self,
        host: BrowserHost,
        session_id: UUID,
        base_url: str | None,
        secrets: Secrets,
        artifacts: Artifacts,
        limits: BrowserLimits,
        egress: EgressPolicy,
    ) -> None:
        self.host = host
        self.egress = egress
        self.session_id = session_id
        self.base_url = base_url
        self.secrets = secrets
        self.artifacts = artifacts
        self.limits = limits
        self.variables: dict[str, Any] = {}
        self.last_url: str | None = None
        """The page's URL after the last command, recorded or run: recovery re-opens it."""
        self.restarted_at: str | None = None
        """Set when a fresh context re-opened `last_url`, until the model has been told."""
        self._tab: Tab | None = None
        self._cookies: list[dict[str, Any]] = []
        self._handlers: dict[str, Callable[..., Awaitable[Done]]] = {
            "navigate": self._navigate,
            "click": self._click,
            "fill": self._fill,
            "press": self._press,
            "select": self._select,
            "read_page": self._read_page,
            "screenshot": self._screenshot,
            "back": self._back,
            "expect_page_contains": self._expect_page_contains,
            "expect_title_contains": self._expect_title_contains,
            "expect_url_contains": self._expect_url_contains,
            "save_text": self._save_text,
            "read_rows": self._read_rows,
        }
        self._shots: list[tuple[bytes, str]] = []
        self._typing_secret = False
        """Whether the running command's arguments hold a `{{secrets.…}}` placeholder."""
        self._destination = ""
        """The origin the running command's secrets were filled in for."""

    # ---- running a command --------------------------------------------------------------

    def run(self, command: Command) -> Outcome:
        handler = self._handlers.get(command.name)
        if handler is None:
            return Outcome.failed("UNKNOWN_COMMAND", f"the browser executor has no {command.name}")
        args, refusal = self._arguments(command)
        if refusal is not None:
            return refusal
        self._typing_secret = bool(FILLED.search(str(command.args.get("value", ""))))
        self._shots = []
        timeout_s = (self.limits.navigation_timeout_ms + self.limits.action_timeout_ms) / 1000 + 10
        try:
            outcome = self.host.call(self._perform(command.name, handler, args), timeout_s)
        except BrowserUnavailable as error:
            return Outcome.failed(error.code, str(error))
        except SandboxUnavailable as error:
            return Outcome.failed("SANDBOX_UNAVAILABLE", str(error))
        except TimeoutError as error:
            return Outcome.failed("BROWSER_TIMEOUT", str(error))
        stored = tuple(
            self.artifacts.put(content, "image/png", kind) for content, kind in self._shots
        )
        return replace(outcome, artifacts=stored)

    def _arguments(self, command: Command) -> tuple[dict[str, Any], Outcome | None]:
        """The command's arguments with its variables filled in (its secrets once the page is
        known), or why it may not run."""
        try:
            args: dict[str, Any] = with_variables(command.args, self.variables)
        except VariableNotSet as error:
            return {}, refused(error)
        return args, self._refusal(command.name, args)

    def _refusal(self, name: str, args: dict[str, Any]) -> Outcome | None:
        """A navigation to anything but a web page, refused before the browser is touched."""
        url = args.get("url")
        if name != "navigate" or not isinstance(url, str) or is_web_page(self._target(url)):
            return None
        return Outcome.failed(
            "URL_SCHEME_REFUSED",
            f"a browser step opens only http(s) pages and {BLANK}, not {url!r}",
            url=url,
        )

    def _target(self, url: str) -> str:
        return urljoin(self.base_url or "", url)

    async def _perform(
        self,
        name: str,
        handler: Callable[..., Awaitable[Done]],
        args: dict[str, Any],
    ) -> Outcome:
        try:
            page = await self._page(reopen=name not in ("navigate", "screenshot"))
        except PlaywrightError as error:  # the last page could not be re-opened
            return Outcome.failed("BROWSER_COMMAND_FAILED", _first_line(error))
        try:
            done = await handler(page, **self._filled(name, args, page))
        except TypeError as error:
            return Outcome.failed("INVALID_COMMAND", f"bad arguments for {name}: {error}")
        except Problem as problem:
            await self._shoot(page, "failure_screenshot")
            return Outcome.failed(
                problem.code, str(problem), **problem.details, **await self._page_state(page)
            )
        except PlaywrightTimeout as error:
            await self._shoot(page, "failure_screenshot")
            return Outcome.failed(
                "BROWSER_TIMEOUT", _first_line(error), **await self._page_state(page)
            )
        except PlaywrightError as error:
            await self._shoot(page, "failure_screenshot")
            return Outcome.failed(
                "BROWSER_COMMAND_FAILED", _first_line(error), **await self._page_state(page)
            )
        if self.limits.screenshots_all and name != "screenshot":
            await self._shoot(page, "screenshot")
        state = await self._page_state(page, done.snapshot_chars or self.limits.snapshot_chars)
        return Outcome.of(True, **done.fields, **state)

    def _filled(self, name: str, args: dict[str, Any], page: Page) -> dict[str, Any]:
        """The arguments with their secrets filled in for where they go: the page navigated
        to, else the page now open. Nothing is done with them when one may not go there."""
        if name == "navigate":
            self._destination = origin_of(urljoin(self.base_url or "", str(args.get("url"))))
        else:
            self._destination = origin_of(page.url)
        try:
            filled: dict[str, Any] = self.secrets.filled(args, self._destination)
        except SecretUnusable as error:
            raise Problem(error.code, error.message, **error.details) from None
        if name == "navigate" and self.secrets.reach_of(filled.get("url")) is not None:
            # Chromium follows any redirect with it: it would leave its origins unseen.
            raise Problem(
                "SECRET_ORIGIN_REFUSED",
                "a secret bound to origins is not put in a page's address, which may redirect "
                "it anywhere; fill it into the page's field instead",
                destination=self._destination,
            )
        return filled

    async def _page(self, *, reopen: bool) -> Page:
        if self._tab is None or self._tab.page.is_closed():
            self._tab = await self.host.open_tab(self.session_id, self._cookies, self.egress)
            self._tab.context.set_default_timeout(self.limits.action_timeout_ms)
            self._tab.context.set_default_navigation_timeout(self.limits.navigation_timeout_ms)
            if reopen and not self._tab.reused and self.last_url and is_web_page(self.last_url):
                await self._tab.page.goto(self.last_url)
                self.restarted_at = self.last_url
        return self._tab.page

    async def _page_state(self, page: Page, snapshot_chars: int | None = None) -> dict[str, Any]:
        limit = snapshot_chars or self.limits.snapshot_chars
        try:
            snapshot = await page.evaluate(SNAPSHOT_JS, limit)
            title = await page.title()
            self._cookies = [dict(c) for c in await page.context.cookies()]
        except PlaywrightError:  # navigating right now, or the page is gone
            snapshot, title = "(the page could not be read)", ""
        self.last_url = page.url
        return {"url": page.url, "title": title, "page": snapshot}

    async def _shoot(self, page: Page, kind: str) -> None:
        try:
            masked = page.locator(f"[{SECRET_MARK}]")
            content = await page.screenshot(type="png", mask=[masked], timeout=5_000)
        except PlaywrightError:
            return  # no screenshot is better than a second failure
        self._shots.append((content, kind))

    # ---- the commands -------------------------------------------------------------------

    async def _navigate(self, page: Page, url: str) -> Done:
        target = self._target(url)  # is_web_page, checked by `run`
        refused_before = self._refusal_count()
        try:
            response = await page.goto(target)
        except PlaywrightError as error:
            refused = self._refusal_for(target, refused_before)
            if refused is None and TUNNEL_FAILED in str(error):  # a redirect's target, refused
                refused = self._refusal_for(None, refused_before)
            if refused is not None:
                raise Problem("EGRESS_REFUSED", refused.message, **refused.details()) from None
            raise
        if response is not None and response.headers.get(REFUSED_HEADER.lower()):
            refused = self._refusal_for(response.url, refused_before)
            if refused is not None:  # the proxy's 403 stands in for a plain-HTTP page
                raise Problem("EGRESS_REFUSED", refused.message, **refused.details())
        return Done({"status": response.status if response is not None else None})

    def _refusal_count(self) -> int:
        return self._tab.proxy.refusal_count() if self._tab is not None else 0

    def _refusal_for(self, url: str | None, since: int) -> Refusal | None:
        """The context's proxy's latest refusal (since the mark `since`) of `url`'s host and
        port, or of anything when `url` is None."""
        refusals = self._tab.proxy.refusals_since(since) if self._tab is not None else []
        if url is not None:
            wanted = urlsplit(url)
            port = wanted.port or (443 if wanted.scheme == "https" else 80)
            refusals = [r for r in refusals if (r.host, r.port) == (wanted.hostname, port)]
        return refusals[-1] if refusals else None

    async def _click(self, page: Page, target: str) -> Done:
        element = await self._resolve(page, target, ACTION_ROLES)
        await element.click()
        await _settle(page)
        return Done({"clicked": target})

    async def _fill(self, page: Page, target: str, value: str) -> Done:
        element = await self._resolve(page, target, FIELD_ROLES)
        if not self._typing_secret:
            await element.fill(value)
            return Done({"filled": target})
        # The secret was filled in for the page's origin: hold this very element, so that a
        # page that navigated since (a script, a redirect) gets nothing.
        field = await element.element_handle()
        document = await field.evaluate("(el) => el.ownerDocument.location.origin")
        if document != self._destination:
            raise Problem(
                "SECRET_ORIGIN_REFUSED",
                f"the page moved to {document} since the secret was filled in for "
                f"{self._destination}; nothing was filled",
            )
        await field.fill(value)
        await field.evaluate(f"(el) => el.setAttribute('{SECRET_MARK}', '')")  # masked later
        return Done({"filled": target})

    async def _press(self, page: Page, key: str) -> Done:
        await page.keyboard.press(key)
        await _settle(page)
        return Done({"pressed": key})

    async def _select(self, page: Page, target: str, option: str) -> Done:
        element = await self._resolve(page, target, ("combobox", "listbox"))
        chosen = await element.select_option(option)
        return Done({"selected": chosen})

    async def _read_page(self, page: Page) -> Done:
        return Done({}, snapshot_chars=self.limits.max_output_chars)

    async def _screenshot(self, page: Page) -> Done:
        await self._shoot(page, "screenshot")
        return Done({"screenshot": "stored as an artifact" if self._shots else "not taken"})

    async def _back(self, page: Page) -> Done:
        response = await page.go_back()
        return Done({"went_back": response is not None or page.url != "about:blank"})

    async def _expect_page_contains(self, page: Page, text: str) -> Done:
        async def body() -> str:
            return await page.locator("body").inner_text()

        await self._expect("page", text, body)
        return Done({"found": text})

    async def _expect_title_contains(self, page: Page, text: str) -> Done:
        await self._expect("title", text, page.title)
        return Done({"found": text})

    async def _expect_url_contains(self, page: Page, text: str) -> Done:
        async def url() -> str:
            return page.url

        await self._expect("URL", text, url)
        return Done({"found": text})

    async def _expect(self, what: str, text: str, read: Callable[[], Awaitable[str]]) -> None:
        """Wait up to the expect timeout for `text` to show: pages update after a command."""
        deadline = time.monotonic() + self.limits.expect_timeout_ms / 1000
        while True:
            try:
                seen = await read()
            except PlaywrightError:
                seen = ""
            if text in seen:
                return
            if time.monotonic() > deadline:
                raise Problem(
                    "EXPECTATION_FAILED",
                    f"the {what} does not contain {text!r}",
                    seen=truncated(seen, 200),
                )
            await asyncio.sleep(POLL_S)

    async def _save_text(self, page: Page, target: str, name: str) -> Done:
        element = await self._resolve(page, target, FIELD_ROLES)
        editable = await element.evaluate("(el) => 'value' in el && el.tagName !== 'BUTTON'")
        text = await element.input_value() if editable else await element.inner_text()
        if holds_placeholder(text):
            raise Problem("EXTRACTION_INVALID", f"{target!r} cannot be saved: {SAVED_PLACEHOLDER}")
        self.variables[name] = text.strip()
        return Done({"saved": name, "value": text.strip()})

    async def _read_rows(self, page: Page, rows: str, fields: dict[str, str]) -> Done:
        """Each element `rows` selects, as its fields' text (null where a field's selector
        finds nothing in it, cut at MAX_FIELD_CHARS); rows with none of the fields (a table's
        header) left out. More than a recorded result may hold is a failure, not cut short:
        the step's data would be wrong without saying so."""
        found = await page.evaluate(READ_ROWS_JS, [rows, fields, MAX_ROWS, MAX_FIELD_CHARS])
        size, limit = len(json.dumps(found, ensure_ascii=False)), MAX_DATA_CHARS
        if size > limit:
            raise Problem(
                "EXTRACTION_INVALID",
                f"the {len(found)} rows read come to {size} characters, over the {limit} a "
                "step's data may hold: select fewer rows or fields",
                rows=len(found),
                chars=size,
                limit=limit,
            )
        return Done({"rows": found})

    # ---- finding elements ---------------------------------------------------------------

    async def _resolve(self, page: Page, target: str, roles: tuple[str, ...]) -> Locator:
        """The first element `target` names, trying the most precise readings first."""
        for candidates in _readings(page, target, roles):
            try:
                if await candidates.count():
                    return candidates.first
            except PlaywrightError:
                continue  # e.g. the target is not valid CSS
        elements = await self._elements(page)
        raise Problem(
            "ELEMENT_NOT_FOUND", _not_found(target, elements), target=target, elements=elements
        )

    async def _elements(self, page: Page) -> list[str]:
        """The page's numbered elements, as the model's snapshot shows them."""
        try:
            snapshot = await page.evaluate(SNAPSHOT_JS, self.limits.max_output_chars)
        except PlaywrightError:
            return []
        return interactive_elements(snapshot)

    # ---- placeholders, recovery, the model ----------------------------------------------

    def restore(self, command: Command, output: str) -> None:
        try:
            recorded = json.loads(output)
        except json.JSONDecodeError:
            return
        if not isinstance(recorded, dict):
            return
        url = recorded.get("url")
        if isinstance(url, str) and url != BLANK and is_web_page(url):
            self.last_url = url
        if command.name == "save_text" and "saved" in recorded:
            self.variables[recorded["saved"]] = recorded.get("value")

    def state(self) -> dict[str, Any] | None:
        return {"cookies": self._cookies} if self._cookies else None

    def load_state(self, state: dict[str, Any]) -> None:
        self._cookies = list(state.get("cookies", []))

    def briefing(self) -> str | None:
        """The page as it is now, and whether the browser was restarted, for the first turn."""
        if self._tab is None and self.last_url is None:
            return "The browser has no page open yet: start with browser_navigate."
        try:
            state = self.host.call(self._briefing_state(), self.limits.navigation_timeout_ms / 1000)
        except (BrowserUnavailable, SandboxUnavailable, TimeoutError, PlaywrightError) as error:
            return f"The browser could not show the page: {error}"
        note = ""
        if self.restarted_at is not None:
            note = (
                f"The browser was restarted since the last command (its worker stopped) and "
                f"re-opened {self.restarted_at}; cookies were restored where they were kept. "
                "Check the page before acting.\n"
            )
            self.restarted_at = None
        return f"{note}The page now ({state['url']}, title {state['title']!r}):\n{state['page']}"

    def view(self) -> View | None:
        """The page as a model that can see is shown it (vision): the viewport only (the
        context's, 1280x720 CSS pixels), at one image pixel per CSS pixel, fields holding a
        secret masked, as PNG, or JPEG when the PNG is over VIEW_MAX_BYTES; none when that is
        over too, or no page is open. Stored as a `model_view` artifact once the turn that
        showed it is recorded. Withheld when the page shows a secret's value anywhere else
        (its text, a field's value): only fields a secret was typed into are masked."""
        if self._tab is None and self.last_url is None:
            return None
        try:
            return self.host.call(self._view_shot(), self.limits.navigation_timeout_ms / 1000)
        except (BrowserUnavailable, SandboxUnavailable, TimeoutError, PlaywrightError):
            return None

    async def _view_shot(self) -> View | None:
        page = await self._page(reopen=True)
        if await self._shows_a_secret(page):
            return View.withheld_because(SECRET_SHOWN)
        masked = [page.locator(f"[{SECRET_MARK}]")]
        shot = await page.screenshot(type="png", scale="css", mask=masked, timeout=5_000)
        media_type = "image/png"
        if len(shot) > VIEW_MAX_BYTES:
            shot = await page.screenshot(
                type="jpeg", quality=VIEW_JPEG_QUALITY, scale="css", mask=masked, timeout=5_000
            )
            media_type = "image/jpeg"
        if len(shot) > VIEW_MAX_BYTES:
            return None
        if await self._shows_a_secret(page):  # shown while the screenshot was taken
            return View.withheld_because(SECRET_SHOWN)
        keep = partial(self.artifacts.put, shot, media_type, "model_view")
        return View(shot, media_type, keep)

    async def _shows_a_secret(self, page: Page) -> bool:
        """Whether any frame's text, or a field's value not masked or hidden as a password,
        holds a secret's value (in any of its encodings) or a one-time code filled in; a
        frame that cannot be read counts as showing one."""
        texts: list[str] = []
        for frame in page.frames:
            try:
                texts.extend(await frame.evaluate(SHOWN_TEXT_JS, SECRET_MARK))
            except PlaywrightError:
                return True
        shown = "\n".join(texts)
        return self.secrets.redact(shown) != shown

    async def _briefing_state(self) -> dict[str, Any]:
        page = await self._page(reopen=True)
        return await self._page_state(page, self.limits.max_output_chars)

    def close(self, *, ended: bool = True) -> None:
        if self._tab is not None:
            self.host.release(self.session_id, self._tab, keep=not ended)
            self._tab = None

    def tools(self) -> list[dict[str, Any]]:
        return [_tool(name, *spec) for name, spec in TOOLS.items()]

    def command_for_tool(self, name: str, arguments: dict[str, Any]) -> Command | None:
        if not name.startswith("browser_") or name.removeprefix("browser_") not in TOOLS:
            return None
        return Command("browser", name.removeprefix("browser_"), arguments)


def _not_found(target: str, elements: list[str]) -> str:
    """Said to whoever named the target, a person's step or the model: what there is."""
    if not elements:
        return f"nothing on the page matches {target!r}, and it has no element to act on"
    listed = elements[:ELEMENTS_IN_MESSAGE]
    more = len(elements) - len(listed)
    rest = f"\n(and {more} more, in details.elements)" if more else ""
    return f"nothing on the page matches {target!r}; its elements are:\n" + "\n".join(listed) + rest


def is_web_page(url: str) -> bool:
    """Whether `url` is http(s) or about:blank, its scheme read as a browser reads it: C0
    controls and spaces around it ignored, tabs and newlines inside it dropped."""
    cleaned = TABS_AND_NEWLINES.sub("", url).strip(C0_AND_SPACE)
    scheme, colon, _ = cleaned.partition(":")
    if cleaned.lower() == BLANK:
        return True
    return bool(colon) and SCHEME.fullmatch(scheme) is not None and scheme.lower() in WEB_SCHEMES


def _readings(page: Page, target: str, roles: tuple[str, ...]) -> list[Locator]:
    """What `target` may mean, most precise first: each reading one query."""
    numbered = NUMBERED.fullmatch(target.strip())
    if numbered:
        return [page.locator(f'[{REF_ATTRIBUTE}="{numbered.group(1)}"]')]
    named = ROLE_AND_NAME.fullmatch(target.strip())
    if named:
        role, name = named["role"], named["name"]
        return [
            page.get_by_role(role, name=name, exact=True),  # type: ignore[arg-type]
            page.get_by_role(role, name=name),  # type: ignore[arg-type]
        ]

    def by_name(exact: bool) -> Locator:
        found = page.get_by_label(target, exact=exact).or_(
            page.get_by_placeholder(target, exact=exact)
        )
        for role in roles:
            found = found.or_(page.get_by_role(role, name=target, exact=exact))  # type: ignore[arg-type]
        return found

    return [
        by_name(exact=True),
        page.get_by_text(target, exact=True),
        by_name(exact=False),
        page.get_by_text(target),
        page.locator(target),
    ]


async def _settle(page: Page) -> None:
    """Let a navigation the action started finish loading (Playwright waits for it to begin)."""
    with contextlib.suppress(PlaywrightError):
        await page.wait_for_load_state("load")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


MAX_ROWS = 1_000
MAX_FIELD_CHARS = 2_000
READ_ROWS_JS = """([rows, fields, limit, fieldChars]) => {
  const cut = (text) => text.length <= fieldChars ? text
    : `${text.slice(0, fieldChars)}… [${text.length - fieldChars} more characters]`;
  const read = (found) => {
    if (found.matches("input[type=checkbox], input[type=radio]")) return String(found.checked);
    if (["INPUT", "SELECT", "TEXTAREA"].includes(found.tagName)) return cut(found.value);
    return cut((found.innerText ?? found.textContent ?? "").trim());
  };
  return Array.from(document.querySelectorAll(rows))
    .slice(0, limit)
    .map((row) => Object.fromEntries(Object.entries(fields).map(([name, selector]) => {
      const found = row.querySelector(selector);
      return [name, found ? read(found) : null];
    })))
    .filter((row) => Object.values(row).some((value) => value !== null));
}"""
"""A step's extraction by selectors (see `engine.loop.extraction`): a field is its element's
text; a checkbox's or radio's, whether it is checked; a form field's, its value."""


TOOLS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "navigate": (
        "Open a URL (absolute, or a path relative to the workflow's base URL).",
        {"url": {"type": "string"}},
        ["url"],
    ),
    "click": (
        "Click an element: its number from the page snapshot (e.g. '4'), or its role and "
        "name (e.g. 'button \"Add\"'), label, or visible text.",
        {"target": {"type": "string"}},
        ["target"],
    ),
    "fill": (
        "Type a value into a field (replacing what is there): the field's number, label or "
        "placeholder. Use {{secrets.NAME}} for secret values and {{vars.name}} for saved ones.",
        {"target": {"type": "string"}, "value": {"type": "string"}},
        ["target", "value"],
    ),
    "press": (
        "Press a key on the focused element, e.g. 'Enter', 'Tab', 'Escape', 'Control+A'.",
        {"key": {"type": "string"}},
        ["key"],
    ),
    "select": (
        "Choose an option of a select box, by its visible text or value.",
        {"target": {"type": "string"}, "option": {"type": "string"}},
        ["target", "option"],
    ),
    "read_page": (
        "Read the page: its text, and its interactive elements numbered for click and fill.",
        {},
        [],
    ),
    "screenshot": ("Take a screenshot of the page, stored for the people watching.", {}, []),
    "back": ("Go back to the previous page.", {}, []),
}


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": f"browser_{name}",
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }
