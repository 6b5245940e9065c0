"""`stepline analytics` on the database: the API's numbers (a recount of the log), as JSON and
as tables, flaky steps first; another tenant's workflow not found."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from tests.analytics_seed import WORKFLOW, read, recount, seed
from tests.integration.test_cli_schedules import stepline

COMPARED = ("runs", "completed", "failed", "failed_by_code", "retries", "p50_ms", "p95_ms", "cost")


def test_the_analytics_printed_equal_a_recount_of_the_log(fresh_database_url: str) -> None:
    app = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
    try:
        attempts, turns = read(app, seed(app))
    finally:
        app.close()
    acme = ("--tenant", "acme")

    listed = stepline(fresh_database_url, "analytics", *acme, "--json")
    steps = stepline(fresh_database_url, "analytics", "--workflow", WORKFLOW, *acme)
    tomorrow = str(datetime.now(UTC).date() + timedelta(days=1))
    later = stepline(fresh_database_url, "analytics", "--since", tomorrow, *acme, "--json")
    elsewhere = stepline(
        fresh_database_url, "analytics", "--workflow", WORKFLOW, "--tenant", "globex"
    )

    assert listed.returncode == 0, listed.stderr
    expected = recount(
        attempts, turns, lambda a: (a.workflow, a.version), lambda t: (t.workflow, t.version), {}
    )
    assert {
        (w["workflow"], w["version"]): {name: w[name] for name in COMPARED}
        for w in json.loads(listed.stdout)["items"]
    } == {group: {name: c[name] for name in COMPARED} for group, c in expected.items()}
    assert steps.returncode == 0, steps.stderr
    rows = [line for line in steps.stdout.splitlines() if "GET /" in line]
    assert ["flaky" in row for row in rows] == [True, True, False, False]
    assert "GET /pay now" in rows[1]
    assert "VALIDATION_FAILED: 2" in rows[1]
    assert json.loads(later.stdout)["items"] == []
    assert elsewhere.returncode == 2
    assert "WORKFLOW_NOT_FOUND" in elsewhere.stderr + elsewhere.stdout
