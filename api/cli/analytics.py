"""What `stepline analytics` does: the tables of /v1/analytics (workflow versions, or one
workflow's versions and steps, flaky first; and every day), from the database (as --tenant)
or through a server (--api, --key), as `stepline workflows` reads its registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from api.http.analytics import (
        DayAnalytics,
        Outcomes,
        WorkflowAnalyticsDetail,
        WorkflowAnalyticsPage,
    )
    from engine.bootstrap import Runtime

NONE = "-"
PAGE = 200


class AnalyticsSource(Protocol):
    def workflows(self, since: date | None, until: date | None) -> WorkflowAnalyticsPage: ...

    def workflow(
        self, name: str, since: date | None, until: date | None
    ) -> WorkflowAnalyticsDetail: ...


class DatabaseAnalytics:
    """The same functions as the API's routes, on the database, as `tenant`."""

    def __init__(self, runtime: Runtime, tenant: str, actor: str) -> None:
        self.runtime, self.tenant = runtime, tenant

    def _catch_up(self) -> None:
        from api.http.analytics import VIEWS  # noqa: PLC0415

        self.runtime.projector.catch_up(list(VIEWS))

    def workflows(self, since: date | None, until: date | None) -> WorkflowAnalyticsPage:
        from api.http.analytics import workflows_page  # noqa: PLC0415
        from projections.workflow_analytics import Selection  # noqa: PLC0415

        selection = Selection(self.tenant, None, since, until)
        return workflows_page(self.runtime, selection, PAGE, None, self._catch_up)

    def workflow(
        self, name: str, since: date | None, until: date | None
    ) -> WorkflowAnalyticsDetail:
        from api.http.analytics import workflow_detail  # noqa: PLC0415
        from projections.workflow_analytics import Selection  # noqa: PLC0415

        return workflow_detail(
            self.runtime, Selection(self.tenant, name, since, until), self._catch_up
        )


def _days(since: date | None, until: date | None) -> dict[str, str]:
    return {k: v.isoformat() for k, v in (("since", since), ("until", until)) if v is not None}


def _server(api_url: str, key: str | None) -> AnalyticsSource:
    from urllib.parse import quote  # noqa: PLC0415

    from api.cli.session_sources import ApiSessions  # noqa: PLC0415
    from api.http.analytics import WorkflowAnalyticsDetail, WorkflowAnalyticsPage  # noqa: PLC0415

    class ApiAnalytics(ApiSessions):
        """The same through a server's HTTP API."""

        def workflows(self, since: date | None, until: date | None) -> WorkflowAnalyticsPage:
            params = {**_days(since, until), "limit": PAGE}
            answer = self._json("GET", "/v1/analytics/workflows", params=params)
            return WorkflowAnalyticsPage.model_validate(answer)

        def workflow(
            self, name: str, since: date | None, until: date | None
        ) -> WorkflowAnalyticsDetail:
            path = f"/v1/analytics/workflows/{quote(name, safe='')}"
            answer = self._json("GET", path, params=_days(since, until))
            return WorkflowAnalyticsDetail.model_validate(answer)

    return ApiAnalytics(api_url, key)


@contextmanager
def opened(api_url: str | None, key: str | None, tenant: str | None) -> Iterator[AnalyticsSource]:
    """The server at `api_url` with `key`, or else the database as `tenant`."""
    from api.cli.sessions import opened_either  # noqa: PLC0415

    with opened_either(api_url, key, tenant, _server, DatabaseAnalytics) as source:
        yield source


# ---- printing -------------------------------------------------------------------------------


def _value(value: Any, suffix: str = "") -> str:
    return NONE if value is None else f"{value}{suffix}"


OUTCOME_COLUMNS = (
    "Runs", "Completed", "Failed", "Retries", "Failed by code", "p50", "p95", "Tokens", "Cost",
)  # fmt: skip


def _outcomes(item: Outcomes) -> list[str]:
    codes = ", ".join(f"{code}: {count}" for code, count in item.failed_by_code.items())
    return [
        *(str(n) for n in (item.runs, item.completed, item.failed, item.retries)),
        codes or NONE,
        _value(item.p50_ms, " ms"),
        _value(item.p95_ms, " ms"),
        str(item.prompt_tokens + item.completion_tokens),
        _value(item.cost),
    ]


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> None:
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from api.cli.support import console  # noqa: PLC0415

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


def _version(number: int) -> str:
    return "inline" if number == 0 else str(number)


def _print_days(days: list[DayAnalytics]) -> None:
    _table(
        "By day (UTC)",
        ("Day", "Runs", "Completed", "Failed", "Success rate", "p95", "Tokens", "Cost"),
        [
            [
                d.day.isoformat(), str(d.runs), str(d.completed), str(d.failed),
                _value(d.success_rate, "%"), _value(d.p95_ms, " ms"),
                str(d.prompt_tokens + d.completion_tokens), _value(d.cost),
            ]
            for d in days
        ],
    )  # fmt: skip


def show(
    source: AnalyticsSource,
    workflow: str | None,
    since: date | None,
    until: date | None,
    as_json: bool,
) -> None:
    """Print the tenant's workflow versions, or one workflow's versions and steps; then the
    days. As JSON: the API's answer."""
    answer: BaseModel
    if workflow is None:
        page = source.workflows(since, until)
        answer = page
        rows = [
            [w.workflow, _version(w.version), str(w.flaky_steps), *_outcomes(w)] for w in page.items
        ]
        columns: tuple[str, ...] = ("Workflow", "Version", "Flaky steps", *OUTCOME_COLUMNS)
        tables: list[tuple[str, tuple[str, ...], list[list[str]]]] = [
            ("Workflow versions, flaky first", columns, rows)
        ]
        days = page.days
    else:
        detail = source.workflow(workflow, since, until)
        answer = detail
        versions = [
            [_version(v.version), str(v.flaky_steps), *_outcomes(v)] for v in detail.versions
        ]
        steps = [
            [s.text, _version(s.version), s.place, "flaky" if s.flaky else NONE, *_outcomes(s)]
            for s in detail.steps
        ]
        step_columns = ("Step", "Version", "Place", "Flaky", *OUTCOME_COLUMNS)
        tables = [
            (f"{workflow}: versions", ("Version", "Flaky steps", *OUTCOME_COLUMNS), versions),
            (f"{workflow}: steps, flaky first", step_columns, steps),
        ]
        days = detail.days
    if as_json:
        print(answer.model_dump_json())
        return
    for title, columns, rows in tables:
        _table(title, columns, rows)
    _print_days(days)
