"""Stepline's settings: every `STEPLINE_*` variable, validated once at start-up."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.limits import LIMITS
from engine.executors.shell import DEFAULT_ALLOWED

DEFAULT_LIMIT_MAXIMUMS = {limit.name: limit.maximum for limit in LIMITS.values()}
"""The most a workflow may ask for, unless the operator sets otherwise."""


def _limit(name: str) -> Any:
    """The setting of one of the task loop's limits, as `domain.limits` declares it."""
    limit = LIMITS[name]
    return Field(default=limit.default, ge=limit.ge, description=limit.description)


class ModelPrice(BaseModel):
    """What a model costs, per 1,000 tokens, in whatever currency the operator bills in."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_1k: float = Field(ge=0)
    completion_per_1k: float = Field(ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return round(
            (prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k)
            / 1000,
            6,
        )


class ApiKey(BaseModel):
    """One API key: the tenant it acts for and the SHA-256 of the key (never the key)."""

    tenant: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("stepline"))


class Settings(BaseSettings):
    """Defaults follow the original step-processor design."""

    model_config = SettingsConfigDict(env_prefix="STEPLINE_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL of the event store; unset starts the embedded server",
    )
    migration_database_url: str | None = Field(
        default=None,
        description="postgresql:// URL of the schema's owner: when set, the schema is made and "
        "migrated through it, and STEPLINE_DATABASE_URL (the application role, which may not "
        "rewrite the log: `stepline db grants`) serves for everything else",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="where the embedded PostgreSQL keeps its data",
    )
    db_connections: int = Field(
        default=8,
        ge=3,
        description="PostgreSQL connections one process holds at most: half for the event "
        "store, half for the views, leases and the LISTEN connection",
    )
    snapshot_interval: int = Field(default=100, ge=1, description="snapshot every N events")
    session_cache_size: int = Field(
        default=1_000, ge=0, description="sessions kept in memory between commands (0: none)"
    )

    max_concurrent_sessions: int = Field(
        default=10, ge=1, description="sessions one worker process drives at once"
    )
    worker_processes: int = Field(
        default=1,
        ge=0,
        description="worker processes `stepline serve` drives its sessions in (its slots "
        "shared out among them); 0 drives them in the serving process itself",
    )
    max_active_sessions: int = Field(
        default=1_000, ge=1, description="pending + running sessions before creation is refused"
    )
    tenant_max_running: int | None = Field(
        default=20,
        ge=1,
        description="sessions of one tenant running at once, all workers (a tenant's policy "
        "may set its own); empty: no limit",
    )
    tenant_max_streams: int | None = Field(
        default=20, ge=1, description="live SSE streams one tenant may hold open at once"
    )
    requests_per_minute: int | None = Field(
        default=600, ge=1, description="API requests one key may make a minute"
    )
    limit_maximums: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_LIMIT_MAXIMUMS),
        description="the most a workflow's config may set each limit to (a tenant's policy "
        "may set its own)",
    )
    lease_ms: int = Field(default=15_000, ge=300, description="session lease; renewed every third")
    session_ttl_ms: int = Field(default=1_800_000, ge=1)
    streaming_buffer_size: int = Field(default=1_000, ge=1)

    connection_timeout_ms: int = Field(default=10_000, ge=1)
    request_timeout_ms: int = Field(default=30_000, ge=1)

    # The task loop's limits (`domain.limits`); a workflow's `config:` overrides each.
    max_turns_per_step: int = _limit("max_turns_per_step")
    step_timeout_ms: int = _limit("step_timeout_ms")
    workflow_timeout_ms: int = _limit("workflow_timeout_ms")
    max_consecutive_failures: int = _limit("max_consecutive_failures")
    max_repeated_commands: int = _limit("max_repeated_commands")
    token_budget: int = _limit("token_budget")
    max_attempts: int = _limit("max_attempts")
    retry_backoff_ms: int = _limit("retry_backoff_ms")
    context_char_budget: int = _limit("context_char_budget")

    max_output_chars: int = Field(default=4_000, ge=100, description="per recorded output")
    shell_allow: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED), description="programs the shell may run"
    )
    # The shell sandbox.
    bwrap_path: str | None = Field(
        default=None,
        description="bubblewrap, the sandbox of shell commands and (as root) of Chromium; "
        "default: bwrap on PATH",
    )
    mcp_paths: list[Path] = Field(
        default_factory=list,
        description="what a stdio MCP server's jail may read besides its work directory and "
        "Stepline's own Python (e.g. the directory of the servers' scripts); read-only",
    )

    browser_path: Path | None = Field(
        default=None, description="Chromium for the browser executor; default: found on PATH"
    )
    browser_sandbox: bool = Field(
        default=True,
        description="false: Chromium runs with --no-sandbox (as root, still inside its jail)",
    )
    browser_action_timeout_ms: int = Field(default=5_000, ge=100, description="click, fill...")
    browser_expect_timeout_ms: int = Field(
        default=2_000, ge=0, description="how long `expect page contains` waits for the text"
    )
    browser_snapshot_chars: int = Field(
        default=1_500, ge=200, description="of the page snapshot each browser result records"
    )
    browser_keep_paused_s: float = Field(
        default=300.0, ge=0, description="a paused session's browser context stays open this long"
    )

    ai_model: str | None = Field(default=None, description="set to enable the AI path")
    ai_base_url: str | None = Field(default=None, description="an OpenAI-compatible server")
    ai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STEPLINE_AI_API_KEY", "OPENAI_API_KEY")
    )
    ai_timeout_s: float = Field(default=60.0, gt=0)
    ai_max_retries: int = Field(default=3, ge=0)
    ai_conversation: Literal["summary", "messages"] = Field(
        default="summary",
        description="summary: the step's history restated in one user message; messages: "
        "the API's own assistant tool calls and tool results",
    )
    ai_vision: bool = Field(
        default=False,
        description="show the model the browser's screenshot with each turn (image parts; only "
        "for models that accept images); a workflow's config.vision wins",
    )
    ai_pause_on_outage: bool = Field(
        default=True, description="pause, not fail, on a 429/5xx/timeout/unreachable provider"
    )
    ai_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='{"model": {"prompt_per_1k": 0.15, "completion_per_1k": 0.6}}; a model '
        "not listed has its tokens counted and its cost null",
    )
    tenant_daily_tokens: int | None = Field(
        default=None,
        ge=1,
        description="a tenant's model tokens per UTC day; a session that would go over pauses",
    )

    api_keys: dict[str, ApiKey] = Field(
        default_factory=dict, description='{"key name": {"tenant": ..., "sha256": ...}}'
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    signal_max_bytes: int = Field(
        default=65_536, ge=2, description="the largest signal body, as JSON, a session takes"
    )
    create_rate_per_minute: int = Field(default=120, ge=1, description="per tenant")
    sse_heartbeat_s: float = Field(default=15.0, gt=0)

    # Secrets
    master_key: SecretStr | None = Field(
        default=None,
        description="32 random bytes in base64 or URL-safe base64 (`stepline secrets key` "
        "prints one): stored secrets are encrypted under it. Unset in dev mode (no API keys): "
        "a key file, data_dir/master.key (0600), made on first use",
    )

    fork_state_ttl_s: int = Field(
        default=86_400,
        ge=0,
        description="how long an ended session's executor state (cookies, sealed under the "
        "master key) is kept for its forks; 0: forgotten when it ends",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="sessions that ended more than this many days ago are erased (their data "
        "keys destroyed, their views reduced to tombstones) by the sweep; unset: kept",
    )

    # Schedules and completion webhooks.
    schedule_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="a schedule with catch_up: none lets a firing go once it is this late "
        "(missed while nothing ran)",
    )
    webhook_timeout_ms: int = Field(
        default=10_000, ge=100, description="how long a webhook's receiver has to answer"
    )
    webhook_first_retry_ms: int = Field(
        default=5_000,
        ge=10,
        description="the wait before a failed webhook's second attempt; each later wait is "
        "twice the one before, at most an hour",
    )
    webhook_retry_for_s: int = Field(
        default=86_400,
        ge=1,
        description="how long after it was queued a webhook is still tried; then it is given "
        "up on (a WebhookDeliveryFailed event in the session's log)",
    )

    # Limits and edges of the API (streams, failed keys, the operator's metrics key, hosts).
    key_max_streams: int | None = Field(
        default=10, ge=1, description="live SSE streams one API key may hold open at once"
    )
    auth_failures_per_minute: int = Field(
        default=30,
        ge=1,
        description="failed authentications from one client address in a minute before "
        "every request from it is refused (429) until the minute has passed",
    )
    metrics_key_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the operator's key for the full /health and /metrics (never "
        "a tenant's key); unset: only the metrics port (`serve --metrics-port`) shows them",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host headers the API answers, comma-separated (`*` any); empty: the "
        "loopback names in dev mode, any host once API keys are configured",
    )

    audit_head_interval_s: float = Field(
        default=600.0,
        gt=0,
        description="the log's head (position and hash) is logged this often, by one process "
        "of the deployment, for the operator to keep elsewhere",
    )

    otel_endpoint: str | None = Field(
        default=None,
        description="an OpenTelemetry collector's OTLP/HTTP base URL (http://collector:4318): "
        "set, each session is a trace exported there (to /v1/traces); unset: no tracing",
    )
    otel_trace_url: str | None = Field(
        default=None,
        pattern=r"\{trace_id\}",
        description="where a trace is viewed, `{trace_id}` in it replaced by the session's "
        "trace id (http://jaeger:16686/trace/{trace_id}): the dashboard links there",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator(
        "database_url",
        "migration_database_url",
        "ai_model",
        "ai_base_url",
        "tenant_max_running",
        "tenant_max_streams",
        "requests_per_minute",
        "tenant_daily_tokens",
        "browser_path",
        "master_key",
        "key_max_streams",
        "metrics_key_sha256",
        "otel_endpoint",
        "otel_trace_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`STEPLINE_DATABASE_URL=` clears the setting rather than naming an empty URL."""
        return None if value == "" else value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @model_validator(mode="after")
    def _metrics_key_is_no_tenants(self) -> Settings:
        """The operator's key sees every tenant's figures: it must not be a tenant's key."""
        if self.metrics_key_sha256 in {key.sha256 for key in self.api_keys.values()}:
            raise ValueError(
                "STEPLINE_METRICS_KEY_SHA256 is a tenant's API key; use a key of its own"
            )
        return self

    @property
    def dev_mode(self) -> bool:
        """No API keys: the server answers only on loopback, every request as one tenant."""
        return not self.api_keys

    @field_validator("limit_maximums")
    @classmethod
    def _known_limits_over_the_defaults(cls, given: dict[str, int]) -> dict[str, int]:
        """Naming one maximum keeps the others: an operator lowers one limit, not all."""
        unknown = sorted(set(given) - set(DEFAULT_LIMIT_MAXIMUMS))
        if unknown:
            raise ValueError(
                f"STEPLINE_LIMIT_MAXIMUMS names no limit {', '.join(unknown)}; the limits are "
                f"{', '.join(DEFAULT_LIMIT_MAXIMUMS)}"
            )
        return {**DEFAULT_LIMIT_MAXIMUMS, **given}

    @model_validator(mode="after")
    def _timeouts_nest(self) -> Settings:
        """workflow >= step >= max(connection, request), as the original design requires."""
        io_timeout = max(self.connection_timeout_ms, self.request_timeout_ms)
        if not self.workflow_timeout_ms >= self.step_timeout_ms >= io_timeout:
            raise ValueError(
                "timeouts must satisfy workflow >= step >= max(connection, request), got "
                f"STEPLINE_WORKFLOW_TIMEOUT_MS={self.workflow_timeout_ms}, "
                f"STEPLINE_STEP_TIMEOUT_MS={self.step_timeout_ms}, "
                f"STEPLINE_CONNECTION_TIMEOUT_MS={self.connection_timeout_ms}, "
                f"STEPLINE_REQUEST_TIMEOUT_MS={self.request_timeout_ms}"
            )
        return self

    @model_validator(mode="after")
    def _ai_is_reachable(self) -> Settings:
        if self.ai_model and self.ai_api_key is None and self.ai_base_url is None:
            raise ValueError(
                f"STEPLINE_AI_MODEL={self.ai_model} needs STEPLINE_AI_API_KEY (or OPENAI_API_KEY), "
                "or STEPLINE_AI_BASE_URL for a local OpenAI-compatible server"
            )
        return self

    @model_validator(mode="after")
    def _master_key_is_32_bytes(self) -> Settings:
        """Checked here, not on the field, so that no error message can repeat the key."""
        if self.master_key is not None and len(self.master_key_bytes() or b"") != 32:
            raise ValueError(
                "STEPLINE_MASTER_KEY must be 32 bytes in base64 or URL-safe base64; make one "
                "with `stepline secrets key`"
            )
        return self

    def master_key_bytes(self) -> bytes | None:
        """STEPLINE_MASTER_KEY decoded; None when unset or not base64."""
        if self.master_key is None:
            return None
        text = self.master_key.get_secret_value().strip().replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error:
            return None

    @field_validator("otel_endpoint")
    @classmethod
    def _otel_endpoint_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                "STEPLINE_OTEL_ENDPOINT must be an http:// or https:// URL (the collector's "
                "OTLP/HTTP port, 4318 by default)"
            )
        return value

    @model_validator(mode="after")
    def _database_urls_are_postgres(self) -> Settings:
        for name, url in (
            ("STEPLINE_DATABASE_URL", self.database_url),
            ("STEPLINE_MIGRATION_DATABASE_URL", self.migration_database_url),
        ):
            if url is not None and not url.startswith(("postgresql://", "postgres://")):
                raise ValueError(
                    f"{name} must be a postgresql:// URL, got {url.split('://')[0]}://..."
                )
        if self.migration_database_url is not None and self.database_url is None:
            raise ValueError(
                "STEPLINE_MIGRATION_DATABASE_URL needs STEPLINE_DATABASE_URL, the application's "
                "URL on the same database (the embedded server has one user)"
            )
        return self
