"""The executor kinds: one registry read by workflow files, the API, the task loop, recovery.

`builtin_kinds()` gives a task loop its own set: the browser kind holds the process's Chromium
(launched on first use), the HTTP kind the connections its sessions keep alive; the task loop
closes them with the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from uuid import UUID

from domain.tenant import Policy
from engine.executors import Executor
from engine.executors.artifacts import artifacts_of
from engine.executors.http import HttpExecutor
from engine.executors.http_pool import ConnectionPools
from engine.executors.shell import ShellExecutor, ShellLimits
from engine.secrets import Secrets
from engine.settings import Settings
from engine.tenancy.egress import EgressPolicy

if TYPE_CHECKING:
    from engine.executors.browser_host import BrowserHost


@dataclass(frozen=True)
class ExecutorSetup:
    """What an executor is built from, once per session run."""

    session_id: UUID
    config: Mapping[str, Any]
    settings: Settings
    secrets: Secrets
    policy: Policy = field(default_factory=Policy)
    """The session's tenant's policy: its shell programs and egress allow-list."""
    tenant: str | None = None
    """The session's tenant: executors keep what they share between sessions per tenant."""


def http_executor(setup: ExecutorSetup, pools: ConnectionPools | None = None) -> Executor:
    """An HTTP executor sending on the connections `pools` keeps for the session's tenant
    and egress policy; without `pools` (or a tenant), on connections of its own."""
    settings = setup.settings
    allow = tuple(setup.policy.egress_allow)
    transport = None
    if pools is not None and setup.tenant is not None:
        transport = pools.lease(setup.tenant, allow)
    egress = EgressPolicy.of(allow) if transport is None else transport.policy
    try:
        return HttpExecutor(
            setup.config.get("base_url"),
            setup.secrets,
            egress=egress,
            transport=transport,
            timeout_s=settings.request_timeout_ms / 1000,
            connect_timeout_s=settings.connection_timeout_ms / 1000,
            max_output_chars=settings.max_output_chars,
            fail_on_error_status=setup.config.get("http_errors", "fail") == "fail",
            traced=settings.otel_endpoint is not None,
        )
    except BaseException:
        if transport is not None:  # an executor never built gives its pool back at once
            transport.close()
        raise


class HttpKind:
    """HTTP executors whose sessions of one tenant and egress policy share kept-alive
    connections (http_pool), closed with the task loop."""

    def __init__(self) -> None:
        self.pools = ConnectionPools()

    def __call__(self, setup: ExecutorSetup) -> Executor:
        return http_executor(setup, self.pools)

    def close(self) -> None:
        self.pools.close()


def shell_executor(setup: ExecutorSetup) -> Executor:
    settings = setup.settings
    # The tenant's programs, narrowed by the workflow's own list (checked at creation).
    narrowed = setup.config.get("shell_allow")
    allowed = [p for p in setup.policy.shell_allow if narrowed is None or p in narrowed]
    return ShellExecutor(
        Path(settings.data_dir) / "work" / str(setup.session_id),
        setup.secrets,
        ShellLimits(
            timeout_s=settings.request_timeout_ms / 1000,
            max_output_chars=settings.max_output_chars,
            allowed_programs=tuple(allowed),
            bwrap_path=settings.bwrap_path,
        ),
    )


def mcp_executor(setup: ExecutorSetup) -> Executor:
    """The session's MCP server's tools. The SDK is imported here: a process whose sessions
    use no MCP server does without it."""
    from engine.executors.mcp_config import McpServer  # noqa: PLC0415
    from engine.executors.mcp_tools import McpExecutor, McpLimits, python_paths  # noqa: PLC0415

    settings = setup.settings
    given = setup.config.get("mcp")
    narrowed = setup.config.get("shell_allow")
    allowed = [p for p in setup.policy.shell_allow if narrowed is None or p in narrowed]
    # A server lives as long as the session's run: its CPU time is the workflow's timeout.
    workflow_ms = setup.config.get("workflow_timeout_ms") or settings.workflow_timeout_ms
    limits = McpLimits(
        timeout_s=settings.request_timeout_ms / 1000,
        cpu_s=max(1, -(-int(workflow_ms) // 1000)),
        max_output_chars=settings.max_output_chars,
        allowed_programs=tuple(allowed),
        bwrap_path=settings.bwrap_path,
        read_only=tuple(
            dict.fromkeys([*python_paths(), *(p.resolve() for p in settings.mcp_paths)])
        ),
    )
    return McpExecutor(
        None if given is None else McpServer.model_validate(given),
        setup.secrets,
        Path(settings.data_dir) / "work" / str(setup.session_id),
        limits,
        EgressPolicy.of(setup.policy.egress_allow),
    )


class BrowserKind:
    """Browser executors, all on the one Chromium of this process. Playwright is imported on
    first use: a process that never opens a page does without it."""

    def __init__(self) -> None:
        self.host: BrowserHost | None = None
        self._lock = threading.Lock()

    def __call__(self, setup: ExecutorSetup) -> Executor:
        from engine.executors.browser import BrowserExecutor, BrowserLimits  # noqa: PLC0415
        from engine.executors.browser_host import BrowserHost  # noqa: PLC0415

        settings = setup.settings
        with self._lock:  # sessions start in threads of their own
            if self.host is None:
                self.host = BrowserHost(
                    settings.browser_path,
                    settings.browser_keep_paused_s,
                    settings.browser_sandbox,
                    settings.bwrap_path,
                )
        limits = BrowserLimits(
            action_timeout_ms=settings.browser_action_timeout_ms,
            navigation_timeout_ms=settings.request_timeout_ms,
            expect_timeout_ms=settings.browser_expect_timeout_ms,
            snapshot_chars=settings.browser_snapshot_chars,
            max_output_chars=settings.max_output_chars,
            screenshots_all=setup.config.get("screenshots") == "all",
        )
        return BrowserExecutor(
            self.host,
            setup.session_id,
            setup.config.get("base_url"),
            setup.secrets,
            artifacts_of(Path(settings.data_dir), setup.session_id),
            limits,
            EgressPolicy.of(setup.policy.egress_allow),
        )

    def close(self) -> None:
        if self.host is not None:
            self.host.close()


ExecutorKind = Callable[[ExecutorSetup], Executor]
ExecutorName = Literal["http", "shell", "browser", "mcp"]
"""The kinds a workflow may name; the schemas of workflow files and of the API use this."""

EXECUTOR_NAMES: tuple[ExecutorName, ...] = get_args(ExecutorName)
DEFAULT_EXECUTOR: ExecutorName = "http"


def builtin_kinds() -> dict[str, ExecutorKind]:
    kinds: dict[str, ExecutorKind] = {
        "http": HttpKind(),
        "shell": shell_executor,
        "browser": BrowserKind(),
        "mcp": mcp_executor,
    }
    assert set(get_args(ExecutorName)) == set(kinds), "name every kind once, here"
    return kinds
