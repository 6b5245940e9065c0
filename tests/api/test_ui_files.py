"""What the dashboard's pages fetch besides the API: the icon every browser asks for, and the
statuses its scripts compare with; and that neither the pages nor their scripts make markup of
what a tenant wrote."""

from __future__ import annotations

import json
import re
from typing import Any

from api.http.ui import FILES
from domain.session import ENDED, SessionStatus, StepViewStatus
from tests.api.conftest import Api


def test_the_favicon_is_served_to_anyone(api: Api) -> None:
    with api.client(None) as anyone:
        icon = anyone.get("/favicon.ico")
        assert icon.status_code == 200
        assert icon.headers["content-type"] == "image/x-icon"
        assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file's header

        page = anyone.get("/ui")
        linked = re.search(r'<link rel="icon" href="([^"]+)"', page.text)
        assert linked is not None
        svg = anyone.get(linked[1])
        assert svg.status_code == 200
        assert svg.headers["content-type"].startswith("image/svg+xml")


def exported(module: str) -> dict[str, Any]:
    """The module's `export const NAME = Object.freeze(<JSON>);` lines, as Python values."""
    found = re.findall(r"^export const (\w+) = Object\.freeze\((.*)\);$", module, re.MULTILINE)
    return {name: json.loads(value) for name, value in found}


def test_the_dashboard_scripts_import_the_domains_statuses_from_the_server(api: Api) -> None:
    with api.client(None) as anyone:
        served = anyone.get("/ui/static/statuses.js")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/javascript")
    assert exported(served.text) == {
        "SessionStatus": {status.name: status.value for status in SessionStatus},
        "StepStatus": {status.name: status.value for status in StepViewStatus},
        "ENDED": sorted(status.value for status in ENDED),
    }


def test_the_sessions_page_filters_by_every_session_status(api: Api) -> None:
    with api.client(None) as anyone:
        page = anyone.get("/ui").text
    select = re.search(r'<select name="status">(.*?)</select>', page, re.DOTALL)
    assert select is not None
    offered = re.findall(r'<option value="([^"]*)">', select[1])
    assert offered == ["", *(status.value for status in SessionStatus)]


STATIC = FILES / "static"
MARKUP_WRITERS = re.compile(
    r"\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|"
    r"DOMParser)\b"
)


def test_no_dashboard_script_turns_text_into_markup() -> None:
    """Sessions, workflows and their documents are tenants' data: the scripts build elements
    and set text, so nothing a tenant wrote becomes an element (Swagger UI's bundle aside)."""
    scripts = [path for path in STATIC.glob("*.js") if not path.name.startswith("swagger-ui")]
    assert {"workflows.js", "workflow.js", "diff.js", "editor.js", "yaml.js"} <= {
        path.name for path in scripts
    }
    writers = {path.name: MARKUP_WRITERS.findall(path.read_text()) for path in scripts}
    assert {name: found for name, found in writers.items() if found} == {}


def test_the_workflow_pages_are_linked_from_the_nav_and_escape_the_name_in_the_address(
    api: Api,
) -> None:
    with api.client(None) as anyone:
        listed = anyone.get("/ui/workflows")
        shown = anyone.get("/ui/workflows/%3Cimg%20src%3Dx%20onerror%3D%22alert(1)%22%3E")
    for page in (listed, shown):
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert '<a href="/ui/workflows" aria-current="page">Workflows</a>' in page.text
    assert 'data-workflow-name="&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"' in shown.text
    assert "<img" not in shown.text


def test_the_editor_pages_are_served_with_the_csp_and_escape_the_name_in_the_address(
    api: Api,
) -> None:
    with api.client(None) as anyone:
        new = anyone.get("/ui/workflows/new")
        edit = anyone.get("/ui/workflows/%3Cimg%20src%3Dx%3E/edit")
        listed = anyone.get("/ui/workflows").text
        shown = anyone.get("/ui/workflows/nightly%20export").text
    for page in (new, edit):
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert '<script type="module" src="/ui/static/editor.js"></script>' in page.text
        assert '<a href="/ui/workflows" aria-current="page">Workflows</a>' in page.text
    assert 'data-workflow-name=""' in new.text
    assert 'data-workflow-name="&lt;img src=x&gt;"' in edit.text
    assert "<img" not in edit.text
    assert '<a href="/ui/workflows/new">New workflow</a>' in listed
    assert 'href="/ui/workflows/nightly%20export/edit">Edit this workflow</a>' in shown
