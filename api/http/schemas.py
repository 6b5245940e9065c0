"""Request and response bodies of the HTTP API (they are its OpenAPI schema)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from api.http.event_views import SessionEvent
from api.http.named_schemas import NamedEnum
from domain.batch import MAX_SESSIONS_PER_BATCH
from domain.errors import ErrorCategory, ErrorSeverity
from domain.schedule import CATCH_UPS
from domain.session import (
    MAX_NAME,
    MAX_STEP_TEXT,
    MAX_STEPS,
    SessionStatus,
    StepSpec,
    StepViewStatus,
)
from domain.workflow import REFERENCE, Reference
from engine.executors.kinds import DEFAULT_EXECUTOR, ExecutorName
from engine.workflows.check import RunsAs
from engine.workflows.file import (
    InputName,
    StepForms,
    WebhookSpec,
    WorkflowConfig,
    loops_as_entries,
    one_or_the_other,
    session_config,
)
from engine.workflows.inputs import MAX_INPUTS, InputSpec

SessionStatusName = Annotated[str, NamedEnum.of(SessionStatus)]
StepStatusName = Annotated[str, NamedEnum.of(StepViewStatus, name="StepStatus")]
"""A step's status in the step history: its own, or its session's while the step is under way."""
Origin = Annotated[str, NamedEnum("SessionOrigin", ("new", "replay", "fork"))]
HealthState = Annotated[str, NamedEnum("HealthState", ("ok", "unhealthy"))]


def _iso_only(value: object) -> object:
    """Lax pydantic reads "0.5" or "2e-313" as a Unix time; the API takes ISO 8601 only."""
    if isinstance(value, str) and _is_number(value):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]
IsoDay = Annotated[date, BeforeValidator(_iso_only)]
NO_NUL = r"^[^\x00]*$"
"""For query strings: PostgreSQL text cannot hold NUL, so such input is refused up front."""


class Strict(BaseModel):
    """Request bodies: no unknown fields, no coercion (`false` is not 0, `"3"` is not 3)."""

    model_config = ConfigDict(extra="forbid", strict=True)


StepText = Annotated[str, Field(min_length=1, max_length=MAX_STEP_TEXT, pattern=r"\S")]


BaseUrl = Annotated[str, Field(max_length=2_000, pattern=r"^https?://[^\s/]+")]


class StepIn(Strict, StepForms):
    """A step with its success criterion, its own policy (retries, retry_backoff_ms,
    timeout_ms, max_turns over the config for this step only; on_failure), the condition it
    runs under (`if`), or any of them; or a loop: `for_each` with its `steps`; or a template:
    `use`, a workflow of the tenant's registry, with its input values in `with`."""

    model_config = ConfigDict(**Strict.model_config, populate_by_name=True)

    text: StepText | None = None
    expect: str | None = Field(default=None, max_length=MAX_STEP_TEXT)

    @model_validator(mode="after")
    def _text_or_loop(self) -> StepIn:
        one_or_the_other(self.text, self.expect, self)
        return self

    def spec(self) -> StepSpec:
        return self.step_spec(self.text, self.expect, self.step_policy(), self.if_)


def _step_form(given: Any) -> str:
    return "text" if isinstance(given, str) else "step"


AnyStep = Annotated[
    Annotated[StepIn, Tag("step")] | Annotated[StepText, Tag("text")], Discriminator(_step_form)
]
"""A step as a body gives it: text; {text, expect, if, policy...}; or a loop, written
`{"for_each": "NAME in EXPRESSION", "steps": [...], "max_iterations": 10}` (or, as a file
writes it, `{"for each NAME in EXPRESSION": [steps]}`)."""


def step_specs(steps: list[AnyStep]) -> list[StepSpec]:
    """Steps as the domain takes them."""
    return [StepSpec(s) if isinstance(s, str) else s.spec() for s in steps]


WorkflowReference = Annotated[
    str,
    # checked by CreateSession._a_reference, which says why
    Field(max_length=MAX_NAME + 10, json_schema_extra={"pattern": REFERENCE}),
]
REGISTERED_ALONGSIDE = frozenset({"workflow", "with_", "labels", "webhook"})
"""What a body naming a registered `workflow` may give besides: the rest is the workflow's."""


class CreateSession(Strict):
    """A workflow to run: ordered steps, each plain text or {text, expect}; or a registered
    workflow (`workflow`: its name, or `name@3`), with `with`, `labels` and `webhook` only."""

    # Saved as it came (a schedule keeps its body): `with`, never the attribute's `with_`.
    model_config = ConfigDict(**Strict.model_config, serialize_by_alias=True)

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"\S",
        description="required unless `workflow` names a registered one",
    )
    steps: list[AnyStep] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEPS,
        description="required unless `workflow` names a registered one",
    )
    workflow: WorkflowReference | None = Field(
        default=None,
        description="a workflow of the tenant's registry: `name` (its current version) or "
        "`name@3`; the session records the version it runs (404 WORKFLOW_NOT_FOUND if there is "
        "none). With it, give only `with`, `labels` and `webhook`",
    )
    executor: ExecutorName = DEFAULT_EXECUTOR
    base_url: BaseUrl | None = None
    config: WorkflowConfig = Field(default_factory=WorkflowConfig)
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)
    webhook: WebhookSpec | None = Field(
        default=None,
        description="where to POST, signed with the tenant's webhook secret, when the session "
        "reaches one of the events",
    )
    inputs: dict[InputName, InputSpec] = Field(
        default_factory=dict,
        max_length=MAX_INPUTS,
        description="the inputs the workflow takes, each a JSON Schema with a `type` (and a "
        "`default` if optional); its steps and base URL use them as {{inputs.NAME}}",
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        max_length=MAX_INPUTS,
        description="this run's input values, checked against `inputs` and written into the "
        "steps when the session is created (422 INPUT_INVALID naming the input if not)",
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _loops_as_written(cls, steps: Any) -> Any:
        return loops_as_entries(steps)

    @field_validator("workflow")
    @classmethod
    def _a_reference(cls, workflow: str | None) -> str | None:
        if workflow is not None and Reference.parse(workflow) is None:
            raise ValueError("name a registered workflow as name, or name@3 for a version")
        return workflow

    @model_validator(mode="after")
    def _inline_or_registered(self) -> CreateSession:
        if self.workflow is None:
            missing = [name for name in ("name", "steps") if getattr(self, name) is None]
            if missing:
                raise ValidationError.from_exception_data(
                    "CreateSession",
                    [InitErrorDetails(type="missing", loc=(name,), input={}) for name in missing],
                )
            return self
        inline = sorted(self.model_fields_set - REGISTERED_ALONGSIDE)
        if inline:
            raise ValueError(
                f"workflow names a registered workflow, so {', '.join(inline)} cannot be given "
                "with it: they are the workflow's own (give with, labels and webhook only)"
            )
        return self

    @property
    def reference(self) -> Reference | None:
        """The registered workflow the body names, if it names one."""
        return None if self.workflow is None else Reference.parse(self.workflow)

    def step_specs(self) -> list[StepSpec]:
        return step_specs(self.steps or [])

    def given_config(self, webhook: WebhookSpec | None = None) -> dict[str, Any]:
        """The config the session records; `webhook` if the body names none (a batch's, a
        schedule's)."""
        return session_config(self.config, self.executor, self.base_url, self.webhook or webhook)


class ReplaySession(Strict):
    """Do again what a session did, without the model."""

    strict: bool = Field(
        default=False,
        description="fail a step whose replayed result differs from the recorded one "
        "(REPLAY_DIVERGED), instead of carrying on live from there",
    )
    base_url: BaseUrl | None = Field(
        default=None, description="replay against another target; the source's by default"
    )


class ForkSession(Strict):
    """A new session that takes the source's first steps as done and runs from `from_step`."""

    from_step: int = Field(ge=0, lt=MAX_STEPS)
    steps: list[AnyStep] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEPS,
        description="replace the source's steps from `from_step` on",
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _loops_as_written(cls, steps: Any) -> Any:
        return loops_as_entries(steps)

    def step_specs(self) -> list[StepSpec] | None:
        return None if self.steps is None else step_specs(self.steps)


class LineageNode(BaseModel):
    session_id: UUID
    name: str
    status: SessionStatusName
    origin: Origin
    source_id: UUID | None
    created_at: datetime
    children: list[LineageNode] = Field(description="its replays and forks, oldest first")


class Lineage(BaseModel):
    session_id: UUID
    root: LineageNode = Field(description="the first session of the line, not a replay or fork")


class StepUsage(BaseModel):
    step_index: int
    day: date
    model: str
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = Field(description="null when STEPLINE_AI_PRICES has no such model")


class SessionUsage(BaseModel):
    session_id: UUID
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = Field(description="null if a model used has no price")
    steps: list[StepUsage]


class DayUsage(BaseModel):
    day: date
    model: str
    sessions: int
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None


class TenantUsage(BaseModel):
    tenant: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    days: list[DayUsage]


class Reason(Strict):
    reason: str = Field(default="", max_length=1_000)


class Decision(Strict):
    """An approver's answer to a session waiting for approval."""

    comment: str = Field(default="", max_length=1_000, pattern=NO_NUL)


class SignalAccepted(BaseModel):
    session_id: UUID
    name: str
    status: SessionStatusName
    version: int
    taken: bool = Field(
        description="a wait for this signal took it at once; false: it is kept in the "
        "session's mailbox until a step waits for it"
    )


class SessionCreated(BaseModel):
    session_id: UUID
    stream_url: str
    status: SessionStatusName
    version: int
    estimated_duration_ms: int | None
    created_at: datetime


class ForkCreated(SessionCreated):
    notice: str | None = Field(
        description="what the fork starts without, said plainly: the source's cookies, once "
        "forgotten (STEPLINE_FORK_STATE_TTL_S after the source ended); null if nothing"
    )


CONTINUED_STEPS = Field(
    default=0,
    description="steps that failed and that the session went on past (on_failure: continue); "
    "done, as completed steps are, in the percent",
)
SKIPPED_STEPS = Field(
    default=0, description="steps whose `if` was false when they came up: done, without running"
)
STEPS_MAY_GROW = Field(
    default=False,
    description="the session has loops that have not come up yet: each will add its "
    "iterations' steps, so total_steps, percent and estimated_remaining_ms count the steps "
    "known so far",
)
"""Of a session's steps, as its view and its progress both say them."""


class SessionView(BaseModel):
    session_id: UUID
    name: str
    status: SessionStatusName
    version: int
    total_steps: int
    completed_steps: int
    failed_steps: int
    continued_steps: int = CONTINUED_STEPS
    skipped_steps: int = SKIPPED_STEPS
    steps_may_grow: bool = STEPS_MAY_GROW
    current_step_index: int | None
    current_step_text: str | None
    percent: float
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    estimated_remaining_ms: int | None
    tokens_used: int = Field(description="model tokens spent so far")
    error_code: ErrorCode = None
    error_message: str | None = None
    waiting_for: WaitingFor = None
    due_at: DueAt = None
    trace_id: str | None = Field(
        default=None,
        description="the session's OpenTelemetry trace id (its id's 32 hex digits) when "
        "sessions are traced (STEPLINE_OTEL_ENDPOINT); null otherwise",
    )
    trace_url: str | None = Field(
        default=None,
        description="where the trace is viewed (STEPLINE_OTEL_TRACE_URL), if that is set",
    )


class ProgressView(BaseModel):
    session_id: UUID
    status: SessionStatusName
    total_steps: int
    completed_steps: int
    failed_steps: int
    continued_steps: int = CONTINUED_STEPS
    skipped_steps: int = SKIPPED_STEPS
    steps_may_grow: bool = STEPS_MAY_GROW
    current_step_index: int | None
    percent: float
    estimated_remaining_ms: int | None
    tokens_used: int = Field(description="model tokens spent so far")
    updated_at: datetime


class StepView(BaseModel):
    step_index: int
    text: str
    expect: str | None
    status: StepStatusName
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    turns: int
    commands: int = Field(description="commands issued, every attempt")
    checks: int = Field(description="checks made (`expect …`), every attempt")
    summary: str | None
    error_code: str | None
    error_message: str | None
    did: list[str] = Field(
        default_factory=list,
        description="what the latest attempt did, a line per command or check: "
        "`POST /todos → 201`, `saved todo_id = 7`, `expect status 201: passed`",
    )
    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="the step's own policy as written: retries, retry_backoff_ms, timeout_ms, "
        "max_turns, on_failure; only those it sets",
    )
    continued: bool = Field(
        default=False,
        description="it failed and the session went on past it (on_failure: continue)",
    )
    condition: str | None = Field(
        default=None, description="its `if`, as written: it ran only if this was true"
    )
    origin: dict[str, Any] | None = Field(
        default=None,
        description="the loop iteration it came from: {loop, iteration, of, bind} (bind: the "
        "loop variables' values); the template it came from: {template: name@version, via: "
        "[outer templates]}; both for a template's step in a loop; null for a step as written",
    )


# What a session's summary and its progress both show of how it ended or what it waits for.
ErrorCode = Annotated[str | None, Field(description="why it failed or expired")]
WaitingFor = Annotated[
    str | None,
    Field(
        description="what a waiting session waits for: `approval: <question>`, "
        "`signal <name>`, `timer`"
    ),
]
DueAt = Annotated[
    datetime | None,
    Field(
        description="when a waiting session's wait is due: a timer's time, or when an "
        "approval or a signal times out; null: it waits until answered"
    ),
]


class SessionSummary(BaseModel):
    session_id: UUID
    name: str
    status: SessionStatusName
    labels: dict[str, str]
    step_count: int
    completed_steps: int = Field(description="0 until the progress view has the session")
    failed_steps: int = Field(
        default=0,
        description="steps failed: the one that failed the session, or those it went on past "
        "(on_failure: continue)",
    )
    percent: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    origin: Origin = "new"
    source_id: UUID | None = Field(default=None, description="the session replayed or forked")
    error_code: ErrorCode = None
    error_message: str | None = None
    waiting_for: WaitingFor = None
    due_at: DueAt = None


class SessionPage(BaseModel):
    items: list[SessionSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class EventPage(BaseModel):
    items: list[SessionEvent]
    next_after: int | None = Field(description="pass as `after` for the next page")


class ArtifactAnnouncement(BaseModel):
    """The data of an `artifact` frame of the event stream: a file a command or check stored,
    announced just before the event that records it."""

    hash: str = Field(description="its SHA-256")
    size: int = Field(description="in bytes")
    media_type: str
    kind: str = Field(description="what it is: `screenshot`, `failure_screenshot`")
    url: str = Field(description="where to GET it, with the same key")
    step_index: int | None
    command_id: str | None = Field(description="the command that stored it; null for a check")
    version: int = Field(description="the version of the event that records it")


class EraseSession(Strict):
    reason: str = Field(min_length=1, max_length=1_000, description="why, for the audit")


class SessionErasedView(BaseModel):
    session_id: UUID
    cancelled: bool = Field(description="it was still under way, and was cancelled first")
    shredded: bool = Field(
        description="its data key was destroyed; false for a session stored in clear (made "
        "without a master key), whose log still reads"
    )


class CommandAccepted(BaseModel):
    session_id: UUID
    status: SessionStatusName
    version: int


class CreateBatch(Strict):
    sessions: list[CreateSession] = Field(min_length=1, max_length=MAX_SESSIONS_PER_BATCH)
    webhook: WebhookSpec | None = Field(
        default=None, description="the webhook of each session that names none of its own"
    )


class BatchCreated(BaseModel):
    batch_id: UUID
    session_ids: list[UUID]
    created_at: datetime


class BatchSession(BaseModel):
    session_id: UUID
    status: SessionStatusName


class BatchView(BaseModel):
    batch_id: UUID
    cancelled: bool
    total: int
    finished: int
    percent: float
    by_status: dict[str, int]
    sessions: list[BatchSession]


class BatchSummary(BaseModel):
    batch_id: UUID
    created_at: datetime
    created_by: str
    cancelled: bool
    total: int
    finished: int
    percent: float


class BatchPage(BaseModel):
    items: list[BatchSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class BatchCancelled(BaseModel):
    batch_id: UUID
    cancelled_sessions: list[UUID]


CatchUpName = Annotated[str, NamedEnum("CatchUp", CATCH_UPS)]
CATCH_UP_HELP = (
    "firings missed while nothing ran: none lets them go, one fires once for all of them (the "
    "default), all fires each"
)
Cron = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]*$",
        description='five fields (minute hour day month weekday), e.g. "*/5 * * * *"; or '
        "@hourly, @daily, @weekly, @monthly, @yearly",
    ),
]
Every = Annotated[
    str,
    Field(
        max_length=20,
        pattern=r"^\s*[0-9]+\s*[smhd]\s*$",
        description='a period: "30s", "5m", "2h", "1d" (on a grid from the Unix epoch)',
    ),
]
TimeZone = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_+/-]+$", description="IANA name"),
]


def _given_inline(workflow: CreateSession) -> CreateSession:
    if workflow.workflow is not None:
        raise ValueError(
            "a schedule runs a workflow given inline (name and steps), not a registered one"
        )
    return workflow


InlineWorkflow = Annotated[CreateSession, AfterValidator(_given_inline)]


class CreateSchedule(Strict):
    """A workflow run at given times: `cron` (in `timezone`) or `every`, not both. Each firing
    creates one session of `workflow`, admitted as POST /v1/sessions would be."""

    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=r"\S")
    workflow: InlineWorkflow
    cron: Cron | None = None
    every: Every | None = None
    timezone: TimeZone = "UTC"
    paused: bool = False
    catch_up: CatchUpName = Field(default="one", description=CATCH_UP_HELP)
    webhook: WebhookSpec | None = Field(
        default=None,
        description="the webhook of each session it creates (unless the workflow names its own)",
    )


class UpdateSchedule(Strict):
    """The fields to change; a field not given keeps its value. Giving `cron` replaces
    `every` and the other way round; a new timing counts from now. `webhook: null` removes
    it. `paused` pauses or resumes (firings missed while paused are not caught up)."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME, pattern=r"\S")
    workflow: InlineWorkflow | None = None
    cron: Cron | None = None
    every: Every | None = None
    timezone: TimeZone | None = None
    paused: bool | None = None
    catch_up: CatchUpName | None = Field(default=None, description=CATCH_UP_HELP)
    webhook: WebhookSpec | None = None


class ScheduleView(BaseModel):
    schedule_id: UUID
    name: str
    cron: str | None
    every: str | None
    timezone: str
    catch_up: CatchUpName
    paused: bool
    workflow: CreateSession
    webhook: WebhookSpec | None
    next_firing_at: datetime | None = Field(description="null while paused")
    last_fired_at: datetime | None
    last_session_id: UUID | None = Field(description="the session its last firing created")
    firings: int = Field(description="sessions created")
    refused_firings: int = Field(description="firings whose session was not admitted")
    last_error: dict[str, Any] | None = Field(
        description="why the last firing created no session (a StandardError), until one does"
    )
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int


class SchedulePage(BaseModel):
    items: list[ScheduleView]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class WebhookSecretCreated(BaseModel):
    secret: str = Field(
        description="whsec_ and 32 bytes in base64: the key every webhook is signed with "
        "(Standard Webhooks); shown this once, and it replaces any before"
    )


class WebhookAttemptView(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int | None = Field(
        description="null: no answer recorded (in flight, or cut short)"
    )
    status_code: int | None = Field(description="the receiver's answer; null if none")
    error: str | None = Field(description="why it failed: the connection's error, or the answer")


class WebhookDeliveryView(BaseModel):
    webhook_id: str = Field(description="the webhook-id header: the same on every attempt")
    event_type: str
    url: str
    state: Annotated[str, NamedEnum("WebhookState", ("pending", "delivered", "failed"))]
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="while pending")
    finished_at: datetime | None
    attempts: list[WebhookAttemptView]


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryView] = Field(description="oldest first")


class AuditEntryView(BaseModel):
    position: int
    session_id: UUID
    event_type: str
    actor: str
    occurred_at: datetime
    description: str


class AuditPage(BaseModel):
    items: list[AuditEntryView]
    next_after: int | None = Field(description="oldest first: pass as `after` for the next page")
    next_before: int | None = Field(
        default=None, description="newest first: pass as `before` for the next page"
    )


class AuditVerification(BaseModel):
    """What the last `stepline audit verify` found."""

    verified_at: datetime
    actor: str
    from_position: int
    to_position: int = Field(description="the last position it checked")
    head_hash: str | None = Field(description="the chain's hash there, hex")
    events: int = Field(description="chained events it recomputed")
    clean: bool = Field(description="no break found (and the kept head matched, if given)")
    first_break: int | None = Field(description="the first position where the chain broke")


class AuditHead(BaseModel):
    position: int = Field(description="the log's last position (0: no event yet)")
    hash: str | None = Field(
        description="that row's chain hash, hex (null before any event is chained): keep it "
        "elsewhere, check it later with `stepline audit verify --head POSITION:HASH`"
    )
    time: datetime = Field(description="when the head was read (the database's clock)")
    last_verification: AuditVerification | None


class WorkerHealth(BaseModel):
    worker_id: str
    role: str
    concurrency: int
    sessions: int
    oldest_lease_s: float | None
    seen_s_ago: float


class Health(BaseModel):
    status: HealthState
    database: bool
    worker: bool | None = Field(
        description="what drives this server's sessions (its own worker, or the worker "
        "processes `serve` started) is alive; null: API only"
    )
    projections_live: bool
    projection_lag: int | None
    workers: list[WorkerHealth] = Field(description="live workers of the whole deployment")


class Problem(BaseModel):
    """Every error answer, sent as application/problem+json: an RFC 9457 problem (`type`,
    `title`, `status`, `detail`) carrying Stepline's StandardError fields: `code` to act on,
    `suggested_action` for a person, `details` naming what was wrong."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    id: str
    code: str
    message: str
    category: Annotated[str, NamedEnum.of(ErrorCategory)]
    severity: Annotated[str, NamedEnum.of(ErrorSeverity)]
    details: dict[str, Any]
    timestamp: str
    module_id: str
    recoverable: bool
    retryable: bool
    suggested_action: str


SHA256_HELP = "the SHA-256 (hex) of its document's canonical JSON: keys sorted, no spaces"


class WorkflowVersionSummary(BaseModel):
    version: int
    sha256: str = Field(description=SHA256_HELP)
    pushed_at: datetime
    actor: str = Field(description="who pushed it")
    current: bool = Field(description="the version a session of the workflow's name runs")


class WorkflowVersionView(WorkflowVersionSummary):
    """A version of a registered workflow: immutable, its document as pushed."""

    name: str
    document: dict[str, Any] = Field(
        description="the workflow document as pushed, normalised: the fields left at their "
        "defaults are left out and a step with no expect is its text (a WorkflowDocument)"
    )


class StepRunsAs(BaseModel):
    index: int = Field(description="the step's position in the document's steps, from 0")
    kind: RunsAs = Field(
        description="definition: a step definition matches its text; ai: the AI decides; "
        "unusable: a definition matches but cannot be used; loop; template (`use`)"
    )
    runs_as: str = Field(description="the commands its definition builds, or who decides them")


class WorkflowCheckView(BaseModel):
    """A workflow document the registry would take, and how each of its steps will run."""

    ok: Literal[True] = True
    steps: list[StepRunsAs]


class WorkflowView(BaseModel):
    """A registered workflow and its versions."""

    name: str
    current_version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    versions: list[WorkflowVersionSummary] = Field(description="oldest first")


class WorkflowSummary(BaseModel):
    name: str
    current_version: int
    version_count: int = Field(description="how many versions it has")
    created_at: datetime
    updated_at: datetime = Field(description="its last push or rollback")


class WorkflowPage(BaseModel):
    items: list[WorkflowSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class RollbackWorkflow(Strict):
    to_version: int = Field(
        ge=1, le=2**31 - 1, description="the version to make current again (recorded as an event)"
    )
