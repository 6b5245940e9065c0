"""`stepline serve` as a person starts it: it says where it answers."""

from __future__ import annotations

import re

import httpx

from tests.e2e.conftest import Cluster
from tests.integration.conftest import wait_for

ANNOUNCED = re.compile(
    r"serving on (?P<base>http://127\.0\.0\.1:\d+)\n\s+dashboard\s+(?P<ui>\S+)\n"
    r"\s+API docs\s+(?P<docs>\S+)"
)


def test_serve_prints_its_url_the_dashboard_and_the_docs_once_it_answers(
    cluster: Cluster,
) -> None:
    cluster.start("serve", "--port", "0", "--workers", "0")  # port 0: the one bound is printed
    log = cluster.logs / "serve-0.log"

    wait_for(lambda: ANNOUNCED.search(log.read_text()) is not None, 60, "the addresses")

    found = ANNOUNCED.search(log.read_text())
    assert found is not None
    base, ui, docs = found["base"], found["ui"], found["docs"]
    assert (ui, docs) == (f"{base}/ui", f"{base}/docs")
    assert not base.endswith(":0")
    assert httpx.get(ui, follow_redirects=True).status_code == 200
    assert httpx.get(docs).status_code == 200
