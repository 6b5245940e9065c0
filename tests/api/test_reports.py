"""GET /v1/sessions/{id}/report over HTTP: one self-contained HTML file of a session, to its
own tenant only, with its screenshots inlined, nothing that runs or loads, and every text a
tenant wrote escaped."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx

from api.http.session_report import CONTENT_SECURITY_POLICY
from tests.api.conftest import Api, ApiFactory, shell_workflow
from tests.api.test_sessions import create
from tests.conftest import MASTER_KEY
from tests.waiting import eventually

ENDED = {"completed", "failed", "cancelled", "expired"}


@dataclass
class Parsed(HTMLParser):
    """The elements of a page: each tag with its attributes, and the text between them."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parsed(html: str) -> Parsed:
    page = Parsed()
    page.feed(html)
    page.close()
    return page


def ended(client: httpx.Client, session_id: str) -> str:
    status: str = eventually(
        lambda: (s := client.get(f"/v1/sessions/{session_id}").json()["status"]) in ENDED and s,
        "the session ends",
        60,
    )
    return status


def assert_self_contained(page: Parsed) -> None:
    """Nothing in it runs or loads from anywhere: no script, no handler, no link, no frame;
    images are data: URIs only."""
    assert page.named("script") == []
    assert [tag for tag, _ in page.tags if tag in {"link", "iframe", "object", "embed"}] == []
    assert [(tag, a) for tag, attrs in page.tags for a in attrs if a.startswith("on")] == []
    assert all(
        (img.get("src") or "").startswith("data:image/png;base64,") for img in page.named("img")
    )


def test_a_browser_sessions_report_inlines_its_screenshot_beside_the_failed_step(
    api: Api, target: str
) -> None:
    workflow = {
        "name": "expects too much",
        "executor": "browser",
        "base_url": target,
        "steps": ["open /app/login", 'expect page contains "Welcome back"'],
        "labels": {"team": "web"},
    }
    with api.client("alice") as alice:
        session_id = create(alice, workflow)
        assert ended(alice, session_id) == "failed"
        [shot] = [
            artifact
            for event in alice.get(f"/v1/sessions/{session_id}/events").json()["items"]
            for artifact in event["data"].get("artifacts", [])
        ]
        answer = alice.get(f"/v1/sessions/{session_id}/report")
        downloaded = alice.get(f"/v1/sessions/{session_id}/report", params={"download": "1"})

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "content-disposition" not in answer.headers
    page = parsed(answer.text)
    assert_self_contained(page)
    [img] = page.named("img")
    inlined = base64.b64decode((img["src"] or "").removeprefix("data:image/png;base64,"))
    assert hashlib.sha256(inlined).hexdigest() == shot["hash"]
    assert img["alt"] == (
        "Screenshot of step 1, attempt 1: browser.expect_page_contains (failure screenshot)"
    )
    rows = [
        (attrs.get("data-step-index"), attrs.get("data-shots-of")) for attrs in page.named("tr")
    ]
    assert rows.index((None, "1")) == rows.index(("1", None)) + 1  # right after its step
    text = " ".join(page.text)
    for shown in ("expects too much", "EXPECTATION_FAILED", "team=web", "open /app/login"):
        assert shown in text
    assert 'created "expects too much" with 2 steps' in text  # the audit trail

    assert downloaded.headers["content-disposition"] == (
        f'attachment; filename="stepline-{session_id[:8]}.html"'
    )


def test_another_tenant_is_told_the_report_is_not_there_as_the_session_is_not(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve:
        session_id = create(alice, shell_workflow("true"))
        report = eve.get(f"/v1/sessions/{session_id}/report")
        session = eve.get(f"/v1/sessions/{session_id}")
        unknown = alice.get("/v1/sessions/00000000-0000-4000-8000-000000000000/report")

    assert (report.status_code, session.status_code) == (404, 404)
    assert report.headers["content-type"] == "application/problem+json"
    same = ("code", "message", "details", "status")
    assert {k: report.json()[k] for k in same} == {k: session.json()[k] for k in same}
    assert (unknown.status_code, unknown.json()["code"]) == (404, "SESSION_NOT_FOUND")


MARKUP = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def test_markup_in_a_step_a_name_or_a_label_is_shown_as_text(api: Api) -> None:
    workflow = shell_workflow("true", name=f"name {MARKUP}", labels={"team": MARKUP})
    workflow["steps"].append(f"run `echo {MARKUP}`")
    with api.client("alice") as alice:
        session_id = create(alice, workflow)
        ended(alice, session_id)
        html = alice.get(f"/v1/sessions/{session_id}/report").text

    page = parsed(html)
    assert_self_contained(page)
    assert page.named("img") == []  # the step's <img> is text, not an element
    assert MARKUP not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    text = "".join(page.text)
    assert f"name {MARKUP}" in text
    assert f"team={MARKUP}" in text
    assert f"run `echo {MARKUP}`" in text


def test_an_erased_sessions_report_is_its_tombstone(start_api: ApiFactory) -> None:
    api = start_api(master_key=MASTER_KEY)
    step = "run `echo the secret plan`"
    with api.client("alice") as alice:
        session_id = create(alice, shell_workflow("echo the secret plan", name="the secret plan"))
        ended(alice, session_id)
        erased = alice.request(
            "DELETE", f"/v1/sessions/{session_id}/data", json={"reason": "asked to forget"}
        )
        assert erased.status_code == 200, erased.text
        answer = alice.get(f"/v1/sessions/{session_id}/report")

    assert answer.status_code == 200, answer.text
    assert "secret plan" not in answer.text
    assert step not in answer.text
    text = " ".join(" ".join(parsed(answer.text).text).split())
    assert "This session was erased at" in text
    assert "asked to forget" in text
    assert "No steps: the session was erased." in text
    assert "erased: asked to forget" in text  # the audit trail keeps who erased it and why
