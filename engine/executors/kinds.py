"""The executor kinds: one registry read by workflow files, the API, the task loop, recovery."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from uuid import UUID

from engine.executors import Executor
from engine.executors.http import HttpExecutor
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.secrets import Secrets
from engine.settings import Settings


@dataclass(frozen=True)
class ExecutorSetup:
    """What an executor is built from, once per session run."""

    session_id: UUID
    config: Mapping[str, Any]
    settings: Settings
    secrets: Secrets


def http_executor(setup: ExecutorSetup) -> Executor:
    settings = setup.settings
    return HttpExecutor(
        setup.config.get("base_url"),
        setup.secrets,
        timeout_s=settings.request_timeout_ms / 1000,
        connect_timeout_s=settings.connection_timeout_ms / 1000,
        max_output_chars=settings.max_output_chars,
    )


def shell_executor(setup: ExecutorSetup) -> Executor:
    settings = setup.settings
    allowed = setup.config.get("shell_allow") or settings.shell_allow
    return ShellExecutor(
        Path(settings.data_dir) / "work" / str(setup.session_id),
        setup.secrets,
        ShellLimits(
            timeout_s=settings.request_timeout_ms / 1000,
            max_output_chars=settings.max_output_chars,
            allowed_programs=tuple(allowed),
        ),
    )


ExecutorKind = Callable[[ExecutorSetup], Executor]
ExecutorName = Literal["http", "shell"]
"""The kinds a workflow may name; the schemas of workflow files and of the API use this."""

EXECUTOR_KINDS: dict[str, ExecutorKind] = {"http": http_executor, "shell": shell_executor}
DEFAULT_EXECUTOR: ExecutorName = "http"

assert set(get_args(ExecutorName)) == set(EXECUTOR_KINDS), "name every kind once, here"
