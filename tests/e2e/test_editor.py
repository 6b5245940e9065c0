"""The workflow editor in a real browser against a real `stepline serve` and the example app:
a workflow written with the keyboard alone, checked by the API as it is typed, reordered by
keyboard and by drag, saved as versions with their diff shown, tried and forked; and its YAML
pane, which reads back exactly what it writes. Screenshots under test-results/<test name>/."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from playwright.sync_api import Locator, Page, Route, expect

from tests.e2e import test_dashboard as dashboard
from tests.e2e.test_dashboard import Serve

# The dashboard tests' fixtures: a browser, a page in it, a served cluster, a screenshot folder.
browser, page, serve, shots = dashboard.browser, dashboard.page, dashboard.serve, dashboard.shots

STEPS = [
    ("GET /login", "expect status 200"),
    ('POST /effects with {"name": "from the editor"}', "expect status 201"),
    ("GET /effects", ""),
    ("GET /slow?ms=5", ""),
]


FOCUSED_NAME = """() => {
  const focused = document.activeElement;
  return focused.textContent.trim() || focused.labels?.[0]?.textContent.trim();
}"""
EMITTED_AGAIN = """async (text) => {
  const yaml = await import("/ui/static/yaml.js");
  return yaml.emit(yaml.parse(text));
}"""


def tab_to(page: Page, name: str, most: int = 30) -> None:
    """Press Tab until the control named `name` has the focus, as a keyboard user would."""
    for _ in range(most):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED_NAME)
        if focused == name:
            return
    raise AssertionError(f"no control named {name!r} within {most} tabs")


def step(page: Page, n: int) -> Locator:
    return page.get_by_role("group", name=f"Step {n}", exact=True)


def yaml_pane(page: Page) -> Locator:
    return page.get_by_role("textbox", name="YAML")


def step_texts(page: Page) -> list[Any]:
    """The steps' texts as the YAML pane says them (read by PyYAML, as the server would)."""
    document = yaml.safe_load(yaml_pane(page).input_value())
    return [s if isinstance(s, str) else s["text"] for s in document["steps"]]


def write_by_keyboard(page: Page, target: str) -> None:
    """Name, base URL and four steps, typed and tabbed through: no click, no fill."""
    page.get_by_role("textbox", name="Workflow name").focus()
    page.keyboard.type("editor demo")
    tab_to(page, "Base URL")
    page.keyboard.type(target)
    # The steps are the editor script's: on a loaded machine it may not have run yet, and
    # Tab would go round the page looking for a field that is not there.
    expect(step(page, 1).get_by_label("Text")).to_be_visible()
    tab_to(page, "Text")
    for n, (text, expectation) in enumerate(STEPS, start=1):
        page.keyboard.type(text)
        page.keyboard.press("Tab")
        page.keyboard.type(expectation)
        if n < len(STEPS):
            tab_to(page, "Add step")
            page.keyboard.press("Enter")  # the new step's text has the focus
            expect(step(page, n + 1).get_by_label("Text")).to_be_focused()


def save_by_keyboard(page: Page) -> Locator:
    """Save, and the confirm dialog it opens (its Save button has the focus)."""
    page.get_by_role("button", name="Save", exact=True).focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Save a new version?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Save")).to_be_focused()
    return dialog


def test_a_workflow_is_written_by_keyboard_checked_reordered_saved_tried_and_forked(
    serve: Serve, target: str, page: Page, shots: Path
) -> None:
    api = serve(1)  # dev mode: no key to enter
    page.goto(f"{api}/ui/workflows")
    page.get_by_role("link", name="New workflow").click()
    expect(page.get_by_role("heading", name="New workflow", level=1)).to_be_visible()

    write_by_keyboard(page, target)
    expect(step(page, 1).locator(".runs-as")).to_have_text(
        "Runs as: Definition: http.request GET /login; http.expect_status 200"
    )
    expect(step(page, 3).locator(".runs-as")).to_have_text(
        "Runs as: Definition: http.request GET /effects"
    )
    expect(page.get_by_role("status").filter(has_text="Checked")).to_have_text(
        "Checked: the registry would take it."
    )
    assert step_texts(page) == [text for text, _ in STEPS]
    page.screenshot(path=shots / "editor-new.png", full_page=True)

    # A condition the API refuses: its message at that step, gone once it is taken away.
    condition = step(page, 4).get_by_label("If")
    condition.focus()
    page.keyboard.type("__import__('os')")
    refusal = step(page, 4).locator(".why")
    expect(refusal).to_have_text(
        "VALIDATION_FAILED: steps[3].if: __import__('os'): the only function is len(...) "
        "(at column 1)"
    )
    expect(step(page, 4).get_by_label("Text")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("status").filter(has_text="Checked")).to_have_text(
        "Checked: 1 problem."
    )
    page.screenshot(path=shots / "editor-invalid.png", full_page=True)
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")
    expect(refusal).to_be_hidden()
    expect(step(page, 4).locator(".runs-as")).to_have_text(
        "Runs as: Definition: http.request GET /slow?ms=5"
    )

    # Reordered by keyboard (Alt+Arrow, then a Move button), then by drag, and back.
    step(page, 4).get_by_label("Text").focus()
    page.keyboard.press("Alt+ArrowUp")
    expect(page.locator("#announce")).to_have_text("Step 4 moved to position 3 of 4.")
    expect(step(page, 3).get_by_label("Text")).to_be_focused()
    assert step_texts(page) == ["GET /login", STEPS[1][0], "GET /slow?ms=5", "GET /effects"]
    step(page, 3).get_by_role("button", name="Move step 3 down").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#announce")).to_have_text("Step 3 moved to position 4 of 4.")
    assert step_texts(page) == [text for text, _ in STEPS]
    step(page, 1).locator(".handle").drag_to(step(page, 3))
    expect(page.locator("#announce")).to_have_text("Step 1 moved to position 3 of 4.")
    assert step_texts(page) == [STEPS[1][0], "GET /effects", "GET /login", "GET /slow?ms=5"]
    step(page, 3).locator(".handle").drag_to(step(page, 1))
    expect(step(page, 1).get_by_label("Text")).to_have_value("GET /login")
    assert step_texts(page) == [text for text, _ in STEPS]

    # Version 1, then 2 with its diff shown, then an identical save that makes none.
    dialog = save_by_keyboard(page)
    expect(dialog.locator(".added").first).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#saved")).to_have_text("Version 1 saved.")
    assert page.url == f"{api}/ui/workflows/editor%20demo/edit"
    step(page, 4).get_by_label("Text").focus()
    page.keyboard.press("End")
    page.keyboard.type("0")
    dialog = save_by_keyboard(page)
    expect(dialog).to_contain_text("Changes from version 1:")
    expect(dialog.locator(".removed")).to_have_text(["-  - GET /slow?ms=5"])
    expect(dialog.locator(".added")).to_have_text(["+  - GET /slow?ms=50"])
    page.screenshot(path=shots / "editor-diff.png", full_page=True)
    page.keyboard.press("Enter")
    expect(page.locator("#saved")).to_have_text("Version 2 saved.")
    save_by_keyboard(page)
    expect(page.get_by_role("dialog")).to_contain_text("No changes from version 2.")
    page.keyboard.press("Enter")
    expect(page.locator("#saved")).to_have_text("Unchanged: version 2 is the current one.")
    registered = httpx.get(f"{api}/v1/workflows/editor demo/versions/2").json()
    assert yaml.safe_load(yaml_pane(page).input_value()) == registered["document"]

    # Try runs the saved version; "Run from step" forks that try.
    page.get_by_role("button", name="Try the saved version").click()
    page.wait_for_url(re.compile(r"/ui/sessions/[0-9a-f-]{36}$"))
    tried = page.url.rsplit("/", 1)[1]
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    created = httpx.get(f"{api}/v1/sessions/{tried}/events").json()["items"][0]["data"]
    assert created["config"]["workflow"]["version"] == 2
    effects = httpx.get(f"{target}/effects").json()
    assert "from the editor" in str(effects)

    page.goto(f"{api}/ui/workflows/editor demo")
    page.get_by_role("link", name="Edit this workflow").click()
    expect(page.get_by_role("heading", name="Edit editor demo", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Loaded")).to_have_text("Loaded version 2.")
    expect(step(page, 4).get_by_label("Text")).to_have_value("GET /slow?ms=50")
    page.screenshot(path=shots / "editor-edit.png", full_page=True)
    page.get_by_label("Run from step").fill("3")
    page.get_by_role("button", name="Run the last try from this step").click()
    page.wait_for_url(re.compile(r"/ui/sessions/[0-9a-f-]{36}$"))
    assert page.url.rsplit("/", 1)[1] != tried
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)


TYPED = """\
name: typed in
base_url: http://127.0.0.1:9
inputs:
  who:
    type: string
    default: bob
steps:
- GET /login
- text: GET /effects
  expect: expect status 200
  retries: 2
  on_failure: continue
- for_each: item in vars.items
  steps:
  - GET /slow?ms=1
"""


def test_the_yaml_pane_reads_back_exactly_what_it_writes_and_fills_the_form(
    serve: Serve, page: Page, shots: Path
) -> None:
    api = serve(0)
    page.goto(f"{api}/ui/workflows/new")
    pane = yaml_pane(page)
    pane.fill(TYPED)
    expect(page.get_by_role("textbox", name="Workflow name")).to_have_value("typed in")
    expect(step(page, 2).get_by_label("Expect")).to_have_value("expect status 200")
    expect(step(page, 2).get_by_label("Retries")).to_have_value("2")
    expect(step(page, 2).get_by_label("On failure")).to_have_value("continue")
    expect(step(page, 3)).to_contain_text("Loop: for each item in vars.items")
    expect(step(page, 3).locator(".runs-as")).to_have_text(
        "Runs as: Loop: a loop: for each item in vars.items"
    )
    inputs = page.get_by_role("group", name="Input 1")
    expect(inputs.get_by_label("Default")).to_have_value("bob")
    assert pane.input_value() == TYPED  # the pane is left as typed

    # A form edit writes the YAML in the editor's style; read back, it is the same bytes.
    name = page.get_by_role("textbox", name="Workflow name")
    name.press("End")
    name.press("Backspace")
    name.type("n")
    written = pane.input_value()
    assert written != TYPED
    assert yaml.safe_load(written) == yaml.safe_load(TYPED)
    pane.fill("")
    pane.fill(written)
    expect(page.get_by_role("status").filter(has_text="Read into")).to_be_visible()
    name.press("End")
    name.press("Backspace")
    name.type("n")
    assert pane.input_value() == written
    assert page.evaluate(EMITTED_AGAIN, written) == written

    # What the editor cannot read is said, and the form is left as it was.
    pane.fill("name: &anchor typed\nsteps:\n- GET /login\n")
    status = page.locator("#yaml-status")
    expect(status).to_contain_text("line 1:")
    expect(status).to_contain_text("Edit this in a file, or write it as JSON.")
    expect(pane).to_have_attribute("aria-invalid", "true")
    expect(name).to_have_value("typed in")
    page.screenshot(path=shots / "editor-yaml-refused.png", full_page=True)
    pane.fill('{"name": "as json", "steps": ["GET /login"]}')
    expect(name).to_have_value("as json")
    expect(pane).not_to_have_attribute("aria-invalid", "true")


TRICKY = {
    "name": "tricky: yes",
    "labels": {"on": "yes", "team": "a: b", "x y": "Off", "note": "ends with a colon:"},
    "inputs": {
        "delay": {"type": "integer", "default": 10, "description": "how long # in ms"},
        "tags": {"type": "array", "default": ["a", 1.5, None, -3, True, {}]},
    },
    "steps": [
        "GET /slow?ms={{inputs.delay}}",
        {"text": 'POST /effects with {"name": "x"}', "if": 'inputs.env == "prod"'},
        "click the 'Sign in' button",
        "https://example.com/a#b",
        "multi\nline\ttab",
        "",
        "007",
        "1e3",
        "- a dash",
        "null",
        "\u00fcn\u00efcode \u2028 \x7f",
        [["nested"]],
        [],
    ],
}


def test_the_yaml_the_editor_writes_is_read_by_pyyaml_as_the_same_document(
    serve: Serve, page: Page
) -> None:
    api = serve(0)
    page.goto(f"{api}/ui/workflows/new")
    written = page.evaluate(
        """async (document) => {
          const yaml = await import("/ui/static/yaml.js");
          const text = yaml.emit(document);
          return { text, again: yaml.emit(yaml.parse(text)), back: yaml.parse(text) };
        }""",
        TRICKY,
    )
    assert yaml.safe_load(written["text"]) == TRICKY
    assert written["back"] == TRICKY
    assert written["again"] == written["text"]


def test_a_diff_of_documents_of_hundreds_of_thousands_of_lines_is_shown_whole(
    serve: Serve, page: Page
) -> None:
    """Past the cells the shortest diff may take, a changed middle is all removed then all
    added: more lines than a call takes arguments, so the diff is built and shown line by
    line (a spread into one call threw a RangeError and showed nothing)."""
    api = serve(0)
    page.goto(f"{api}/ui/workflows/new")
    shown = page.evaluate(
        """async (count) => {
          const diff = await import("/ui/static/diff.js");
          const before = Array.from({ length: count }, (_, i) => `before ${i}`);
          const after = Array.from({ length: count }, (_, i) => `after ${i}`);
          const lines = diff.unifiedDiff(["same", ...before], ["same", ...after]);
          const node = document.createElement("pre");
          diff.showUnified(node, lines);
          return {
            lines: lines.length,
            removed: node.querySelectorAll(".removed").length,
            added: node.querySelectorAll(".added").length,
            hunk: lines[2].text,
          };
        }""",
        200_000,
    )
    assert shown == {
        "lines": 4 + 400_000,
        "removed": 200_000,
        "added": 200_000,
        "hunk": "@@ -1,200001 +1,200001 @@",
    }


def test_what_is_typed_before_the_editor_has_loaded_is_kept(serve: Serve, page: Page) -> None:
    """A fast typist on a slow page: the name and base URL typed while the editor's script
    was still on its way are the workflow's, not wiped by the empty document it starts with."""
    api = serve(1)
    held: list[Route] = []
    page.route("**/ui/static/editor.js", lambda route: held.append(route))  # noqa: PLW0108 (Playwright tags its handler: a bound builtin cannot be)
    page.goto(f"{api}/ui/workflows/new", wait_until="commit")
    page.get_by_role("textbox", name="Workflow name").focus()
    page.keyboard.type("typed early")
    page.get_by_role("textbox", name="Base URL").focus()
    page.keyboard.type("http://127.0.0.1:9")
    expect(page.get_by_role("group", name="Step 1", exact=True)).to_have_count(0)
    deadline = time.monotonic() + 20  # the request reaches its handler while Playwright waits
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert len(held) == 1  # the script had not run: the form had no step yet
    held[0].continue_()

    expect(step(page, 1).get_by_label("Text")).to_be_visible()
    expect(page.get_by_role("textbox", name="Workflow name")).to_have_value("typed early")
    expect(page.get_by_role("textbox", name="Base URL")).to_have_value("http://127.0.0.1:9")
    expect(yaml_pane(page)).to_have_value(re.compile(r"^name: typed early\nbase_url: "))
