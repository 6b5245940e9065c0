from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.limits import LIMITS, Limit
from engine.loop.limits import Limits
from engine.settings import DEFAULT_LIMIT_MAXIMUMS, Settings


def test_defaults_follow_the_original_design(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPLINE_DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.max_concurrent_sessions == 10
    assert settings.session_ttl_ms == 30 * 60 * 1000
    assert settings.streaming_buffer_size == 1_000
    assert settings.snapshot_interval == 100
    assert settings.database_url is None


def test_settings_come_from_stepline_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_SNAPSHOT_INTERVAL", "25")
    monkeypatch.setenv("STEPLINE_LOG_FORMAT", "json")
    settings = Settings()
    assert (settings.snapshot_interval, settings.log_format) == (25, "json")


@pytest.mark.parametrize(
    "timeouts",
    [
        {"workflow_timeout_ms": 60_000, "step_timeout_ms": 120_000},
        {"step_timeout_ms": 20_000, "request_timeout_ms": 30_000},
        {"step_timeout_ms": 20_000, "connection_timeout_ms": 25_000, "request_timeout_ms": 1},
    ],
)
def test_timeouts_must_nest_and_the_error_names_the_values(timeouts: dict[str, int]) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**timeouts)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "workflow >= step >= max(connection, request)" in message
    for name, value in timeouts.items():
        assert f"STEPLINE_{name.upper()}={value}" in message


def test_equal_timeouts_are_allowed() -> None:
    settings = Settings(
        workflow_timeout_ms=30_000,
        step_timeout_ms=30_000,
        connection_timeout_ms=30_000,
        request_timeout_ms=30_000,
    )
    assert settings.step_timeout_ms == 30_000


def test_the_database_url_must_be_postgres() -> None:
    with pytest.raises(ValidationError, match="must be a postgresql:// URL, got sqlite://"):
        Settings(database_url="sqlite:///tmp/x.db")


def test_the_migration_url_must_be_postgres_and_come_with_the_applications() -> None:
    with pytest.raises(ValidationError, match="STEPLINE_MIGRATION_DATABASE_URL must be a post"):
        Settings(database_url="postgresql://app@db/x", migration_database_url="mysql://db/x")
    with pytest.raises(ValidationError, match="needs STEPLINE_DATABASE_URL"):
        Settings(database_url=None, migration_database_url="postgresql://owner@db/x")


def test_the_limit_maximums_cover_every_limit_a_workflow_may_set() -> None:
    assert set(Settings(database_url=None).limit_maximums) == set(LIMITS)


def test_naming_one_limit_maximum_keeps_the_others() -> None:
    settings = Settings(database_url=None, limit_maximums={"token_budget": 500})

    assert settings.limit_maximums["token_budget"] == 500
    assert settings.limit_maximums["retry_backoff_ms"] == DEFAULT_LIMIT_MAXIMUMS["retry_backoff_ms"]


def test_a_limit_maximum_that_names_no_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="tokenbudget"):
        Settings(database_url=None, limit_maximums={"tokenbudget": 1})


@pytest.mark.parametrize("limit", LIMITS.values(), ids=list(LIMITS))
def test_each_limit_is_a_setting_with_its_declared_default_and_bound(
    limit: Limit, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert getattr(Settings(database_url=None), limit.name) == limit.default
    monkeypatch.setenv(limit.env, str(limit.ge - 1))
    with pytest.raises(ValidationError, match=f"greater than or equal to {limit.ge}"):
        Settings(database_url=None)


def test_the_task_loop_has_every_declared_limit_and_no_other() -> None:
    assert [field.name for field in fields(Limits)] == list(LIMITS)


def test_the_readme_lists_each_limit_as_declared() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for limit in LIMITS.values():
        assert f"| `{limit.env}` | `{limit.default}` | {limit.description} |" in readme
