"""Which URLs a browser step may open, read as a browser reads them."""

from __future__ import annotations

import pytest

from engine.executors.browser import is_web_page


@pytest.mark.parametrize(
    ("url", "opened"),
    [
        ("http://127.0.0.1:8000/", True),
        ("HTTPS://example.test/a", True),
        ("about:blank", True),
        (" \tht\ntp://127.0.0.1/", True),  # as Chromium reads it: http
        ("about:srcdoc", False),
        ("/relative/without/base", False),
        ("\x00file:///etc/passwd", False),
        ("java\nscript:alert(1)", False),
        ("blob:http://127.0.0.1/uuid", False),
        ("ws://127.0.0.1/", False),
    ],
)
def test_only_http_pages_and_about_blank_are_web_pages(url: str, opened: bool) -> None:
    assert is_web_page(url) is opened
