"""What the dashboard's pages fetch besides the API: the icon every browser asks for, and the
statuses its scripts compare with."""

from __future__ import annotations

import json
import re
from typing import Any

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
