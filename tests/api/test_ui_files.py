"""What the dashboard's pages fetch besides the API: the icon every browser asks for."""

from __future__ import annotations

import re

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
