"""The StandardError model and the domain's exceptions.

Every failure Stepline reports — a failed step recorded in the log, an HTTP error body, a log
line — is a `StandardError`: one shape, with a code from the catalogue below deciding its
category, severity, whether it is recoverable or retryable, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import uuid4

from domain.payloads import ErrorPayload

MODULE_ID = "step-processor"


class ErrorCategory(Enum):
    VALIDATION = "VALIDATION"
    EXECUTION = "EXECUTION"
    SYSTEM = "SYSTEM"
    INTEGRATION = "INTEGRATION"


class ErrorSeverity(Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class ErrorKind:
    category: ErrorCategory
    severity: ErrorSeverity
    recoverable: bool
    retryable: bool
    suggested_action: str


_V, _E, _S, _I = (
    ErrorCategory.VALIDATION,
    ErrorCategory.EXECUTION,
    ErrorCategory.SYSTEM,
    ErrorCategory.INTEGRATION,
)
_LOW, _MEDIUM, _HIGH, _CRITICAL = (
    ErrorSeverity.LOW,
    ErrorSeverity.MEDIUM,
    ErrorSeverity.HIGH,
    ErrorSeverity.CRITICAL,
)

CATALOGUE: dict[str, ErrorKind] = {
    # The original design's codes, with its categories, severities and flags.
    "VALIDATION_FAILED": ErrorKind(
        _V, _MEDIUM, False, False, "Fix the input the message names (details.field, if given)"
    ),
    "SESSION_CREATION_FAILED": ErrorKind(
        _E, _CRITICAL, True, True, "Retry with exponential backoff"
    ),
    "TASK_LOOP_TIMEOUT": ErrorKind(_E, _HIGH, True, True, "Increase timeout or simplify steps"),
    "CONCURRENT_LIMIT_EXCEEDED": ErrorKind(
        _S, _CRITICAL, True, False, "Wait for available session slots"
    ),
    # Stepline's own.
    "INVALID_STATE_TRANSITION": ErrorKind(
        _V, _LOW, True, False, "Read the session's status and send a command it allows"
    ),
    "SESSION_NOT_FOUND": ErrorKind(_V, _LOW, False, False, "Check the session id"),
    "SESSION_ID_AMBIGUOUS": ErrorKind(
        _V, _LOW, False, False, "Give more of the id: enough characters to name one session"
    ),
    "BATCH_NOT_FOUND": ErrorKind(_V, _LOW, False, False, "Check the batch id"),
    "SCHEDULE_NOT_FOUND": ErrorKind(
        _V, _LOW, False, False, "Check the schedule id: `stepline schedules list` shows them"
    ),
    "LEARNED_ACTION_NOT_FOUND": ErrorKind(
        _V, _LOW, False, False, "Check the id: `stepline learned list` shows the tenant's"
    ),
    "WORKFLOW_NOT_FOUND": ErrorKind(
        _V,
        _LOW,
        False,
        False,
        "Check the name and version: `stepline workflows list` (or GET /v1/workflows) shows the "
        "tenant's registered workflows",
    ),
    "TEMPLATE_NOT_FOUND": ErrorKind(
        _V,
        _LOW,
        False,
        False,
        "Push the template first (`stepline workflows push`), or correct the name `use:` gives; "
        "a file template is found beside the workflow file, by `stepline run` only",
    ),
    "TEMPLATE_CYCLE": ErrorKind(
        _V,
        _LOW,
        False,
        False,
        "Remove the `use:` that leads back to a workflow it is used by",
    ),
    "UNSUPPORTED_MEDIA_TYPE": ErrorKind(
        _V, _LOW, False, False, "Send the body as application/json or application/yaml"
    ),
    "ARTIFACT_NOT_FOUND": ErrorKind(
        _V,
        _LOW,
        False,
        False,
        "Use a hash recorded in this session's CommandFinished or Checked events",
    ),
    "UNAUTHORIZED": ErrorKind(
        _V, _MEDIUM, False, False, "Send a valid API key as 'Authorization: Bearer <key>'"
    ),
    "RATE_LIMITED": ErrorKind(_S, _MEDIUM, True, True, "Wait for Retry-After seconds"),
    # Limits and edges of the API.
    "KEY_RATE_LIMITED": ErrorKind(
        _S,
        _MEDIUM,
        True,
        True,
        "Wait for Retry-After seconds and send fewer requests, or ask the operator to raise "
        "the tenant's requests_per_minute",
    ),
    "STREAM_LIMIT_EXCEEDED": ErrorKind(
        _S,
        _MEDIUM,
        True,
        True,
        "Close a stream you no longer read (details.limit names the cap), then open again",
    ),
    "TOO_MANY_AUTH_FAILURES": ErrorKind(
        _V,
        _HIGH,
        True,
        True,
        "Fix the API key you send, then wait for Retry-After seconds: this address is refused "
        "until then",
    ),
    "HOST_NOT_ALLOWED": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Use the server's own host name, or have the operator add it to STEPLINE_ALLOWED_HOSTS",
    ),
    "PAYLOAD_TOO_LARGE": ErrorKind(_V, _LOW, False, False, "Send a smaller request body"),
    "NOT_FOUND": ErrorKind(_V, _LOW, False, False, "Check the URL"),
    "METHOD_NOT_ALLOWED": ErrorKind(_V, _LOW, False, False, "Check the HTTP method"),
    "INTERNAL_ERROR": ErrorKind(
        _S, _CRITICAL, True, True, "Retry later; the error id is in the server log"
    ),
    "VERSION_CONFLICT": ErrorKind(
        _S, _MEDIUM, True, True, "Reload the session and send the command again"
    ),
    "MAX_TURNS_EXCEEDED": ErrorKind(
        _E, _HIGH, True, True, "Raise max_turns_per_step or split the step"
    ),
    "TOKEN_BUDGET_EXCEEDED": ErrorKind(
        _E, _HIGH, False, False, "Raise the session's token budget or shorten the steps"
    ),
    "COMMAND_INTERRUPTED": ErrorKind(
        _E, _MEDIUM, True, True, "None: the task loop decides again after recovery"
    ),
    "SESSION_EXPIRED": ErrorKind(
        _E, _MEDIUM, False, False, "Raise the session TTL or create a new session"
    ),
    "AI_PROVIDER_ERROR": ErrorKind(
        _I, _HIGH, True, True, "Check STEPLINE_AI_BASE_URL, STEPLINE_AI_API_KEY and the model"
    ),
    "AI_AUTH_FAILED": ErrorKind(
        _I, _HIGH, False, False, "Check STEPLINE_AI_API_KEY (or OPENAI_API_KEY)"
    ),
    "AI_MODEL_NOT_FOUND": ErrorKind(
        _I, _HIGH, False, False, "Check STEPLINE_AI_MODEL names a model the server serves"
    ),
    "AI_CONTEXT_TOO_LONG": ErrorKind(
        _I, _MEDIUM, True, False, "Lower STEPLINE_CONTEXT_CHAR_BUDGET or use a longer-context model"
    ),
    "AI_RATE_LIMITED": ErrorKind(
        _I, _MEDIUM, True, True, "Resume the session later, or raise the provider's rate limit"
    ),
    "AI_PROVIDER_UNAVAILABLE": ErrorKind(
        _I, _HIGH, True, True, "Resume the session when the AI provider is back"
    ),
    "AI_TIMEOUT": ErrorKind(
        _I, _MEDIUM, True, True, "Raise STEPLINE_AI_TIMEOUT_S, or resume the session later"
    ),
    "AI_UNREACHABLE": ErrorKind(
        _I, _HIGH, True, True, "Check STEPLINE_AI_BASE_URL and that the server is up; resume"
    ),
    "MODEL_NO_TOOL_CALL": ErrorKind(
        _I, _MEDIUM, True, True, "Use a model that supports tool calls, or rephrase the step"
    ),
    "MODEL_MANY_TOOL_CALLS": ErrorKind(
        _I, _MEDIUM, True, True, "Use a model that calls one tool at a time"
    ),
    "MODEL_UNKNOWN_TOOL": ErrorKind(
        _I, _MEDIUM, True, True, "Use a model that keeps to the tools offered"
    ),
    "MODEL_BAD_ARGUMENTS": ErrorKind(
        _I, _MEDIUM, True, True, "Use a model that writes valid tool arguments"
    ),
    "NO_AI_PROVIDER": ErrorKind(
        _V, _HIGH, False, False, "Set STEPLINE_AI_MODEL and STEPLINE_AI_API_KEY or _BASE_URL"
    ),
    "STEP_FAILED": ErrorKind(_E, _MEDIUM, True, True, "Read the model's reason in the step"),
    "LOOP_DETECTED": ErrorKind(
        _E, _MEDIUM, True, True, "Rephrase the step; the model repeated one command"
    ),
    "CONSECUTIVE_FAILURES": ErrorKind(
        _E, _MEDIUM, True, True, "Check the target is up and the step is feasible"
    ),
    "EXPECTATION_FAILED": ErrorKind(
        _E, _MEDIUM, True, True, "Compare the recorded output with the expectation"
    ),
    "REPLAY_DIVERGED": ErrorKind(
        _E,
        _MEDIUM,
        True,
        False,
        "The target answers differently than when the session was recorded: replay without "
        "strict to let the step carry on live, or fork the source from this step",
    ),
    "TENANT_DAILY_TOKENS_EXCEEDED": ErrorKind(
        _E,
        _MEDIUM,
        True,
        False,
        "Resume the session once the tenant's daily token budget resets (midnight UTC) or is "
        "raised (STEPLINE_TENANT_DAILY_TOKENS)",
    ),
    "HTTP_REQUEST_FAILED": ErrorKind(
        _I, _MEDIUM, True, True, "Check the base URL and that the target answers"
    ),
    "HTTP_STATUS_ERROR": ErrorKind(
        _E,
        _MEDIUM,
        True,
        True,
        "If that answer is what the step expects, follow it with `expect status <code>` (or "
        "`expect status 4xx`), or give the step `expect: expect status <code>`; otherwise fix "
        "the request (URL, body, an earlier sign-in). `config.http_errors: record` keeps "
        "every answer as a result",
    ),
    "COMMAND_FAILED": ErrorKind(_E, _MEDIUM, True, True, "Read the command's recorded output"),
    "COMMAND_TIMEOUT": ErrorKind(
        _E, _MEDIUM, True, True, "Raise STEPLINE_REQUEST_TIMEOUT_MS or speed the command up"
    ),
    "SANDBOX_VIOLATION": ErrorKind(
        _V, _HIGH, False, False, "Allow the program (shell_allow) or keep paths inside the workdir"
    ),
    # The sandboxes of the shell and of Chromium.
    "SANDBOX_UNAVAILABLE": ErrorKind(
        _S,
        _CRITICAL,
        True,
        False,
        "Install bubblewrap on the worker (apt-get install -y bubblewrap) or set "
        "STEPLINE_BWRAP_PATH; the message says why the sandbox could not be built. Then "
        "resume the session",
    ),
    "RESOURCE_LIMIT_EXCEEDED": ErrorKind(
        _E, _HIGH, False, False, "The command needs less CPU, memory or disk"
    ),
    "UNKNOWN_COMMAND": ErrorKind(_V, _MEDIUM, False, False, "Use a command the executor has"),
    "INVALID_COMMAND": ErrorKind(_V, _MEDIUM, False, False, "Fix the command's arguments"),
    "UNKNOWN_EXECUTOR": ErrorKind(
        _V, _MEDIUM, False, False, "Use the http, shell or browser executor"
    ),
    "BROWSER_UNAVAILABLE": ErrorKind(
        _S,
        _HIGH,
        True,
        False,
        "Install Chromium (apt-get install -y chromium) or set STEPLINE_BROWSER_PATH",
    ),
    "BROWSER_TIMEOUT": ErrorKind(
        _E, _MEDIUM, True, True, "Check the page loads; raise STEPLINE_BROWSER_ACTION_TIMEOUT_MS"
    ),
    "BROWSER_COMMAND_FAILED": ErrorKind(
        _E, _MEDIUM, True, True, "Read the error and the page snapshot in the command's result"
    ),
    "ELEMENT_NOT_FOUND": ErrorKind(
        _E,
        _MEDIUM,
        True,
        True,
        'Name an element as the message lists it: by its name ("Sign in"), by role and name '
        '(button "Sign in"), or by its number',
    ),
    "SECRET_MISSING": ErrorKind(
        _V,
        _HIGH,
        False,
        False,
        "Store each secret the message names for the tenant, then create the session again: "
        "`stepline secrets set NAME --tenant T` (value on stdin) or PUT /v1/secrets/NAME "
        "(a dev-mode server's own tenant may also use STEPLINE_SECRET_NAME)",
    ),
    "CONFIGURATION_INVALID": ErrorKind(
        _V, _CRITICAL, False, False, "Fix the STEPLINE_* settings named in the message"
    ),
    "DATABASE_UNAVAILABLE": ErrorKind(
        _S, _CRITICAL, True, True, "Check STEPLINE_DATABASE_URL and that PostgreSQL is up"
    ),
    "SERVER_UNREACHABLE": ErrorKind(
        _I, _HIGH, True, True, "Check --api (STEPLINE_API_URL) and that `stepline serve` runs there"
    ),
    # The tenant boundary.
    "POLICY_INVALID": ErrorKind(
        _V, _LOW, False, False, "Fix the option named in the message (stepline tenants set --help)"
    ),
    "INPUT_INVALID": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Give the input the message names (details.input) a value of the type the workflow "
        "declares",
    ),
    "POLICY_REFUSED": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Stay within the tenant's policy (`stepline tenants show T`); the operator may widen it",
    ),
    # What a browser step may open.
    "URL_SCHEME_REFUSED": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Open an http:// or https:// URL (or a path under the base URL); local files and "
        "browser pages are never opened",
    ),
    # Egress: every outgoing connection.
    "EGRESS_REFUSED": ErrorKind(
        _V,
        _HIGH,
        False,
        False,
        "Ask the operator to add the host (or its address) to the tenant's egress allow-list: "
        "`stepline tenants set T --egress-allow host`",
    ),
    # Conditions and loops (`if:`, `for each`), evaluated as their step comes up.
    "EXPRESSION_FAILED": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Fix the expression the message quotes: a path that is there (vars.NAME saved by an "
        "earlier step), values of one type compared, a condition that gives true or false",
    ),
    "LOOP_LIMIT_EXCEEDED": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Loop over fewer items, or raise the loop's max_iterations (default 100)",
    ),
    "LOOP_ITEM_INVALID": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Loop over items that hold every path the loop's steps use, with no {{ or }} in them",
    ),
    "VARIABLE_NOT_SET": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        'Save it in an earlier step (`save json <path> as <name>`, `save text of "…" as '
        "<name>`) before a step uses {{vars.name}}; the only placeholders are {{vars.NAME}} and "
        "{{secrets.NAME}}",
    ),
    # Secrets: per tenant, encrypted at rest, bound to the origins they may be sent to.
    "SECRET_NOT_FOUND": ErrorKind(
        _V,
        _HIGH,
        False,
        False,
        "Store the secret for this tenant: `stepline secrets set NAME --tenant T` (value on "
        "stdin) or PUT /v1/secrets/NAME; `stepline secrets list` shows the names stored",
    ),
    "SECRET_KIND_MISMATCH": ErrorKind(
        _V,
        _HIGH,
        False,
        False,
        "Write {{totp.NAME}} for a stored TOTP seed's current code and {{secrets.NAME}} for a "
        "value; store a seed with `stepline secrets set NAME --totp`",
    ),
    "SECRET_ORIGIN_REFUSED": ErrorKind(
        _V,
        _HIGH,
        False,
        False,
        "Send the secret only to an origin it is bound to, or store it again with this origin "
        'among its origins (--origin, or "origins" in PUT /v1/secrets/NAME)',
    ),
    "MASTER_KEY_MISSING": ErrorKind(
        _S,
        _CRITICAL,
        False,
        False,
        "Set STEPLINE_MASTER_KEY to 32 random bytes in base64 (`stepline secrets key` prints a "
        "new one) and keep it: secrets stored under a key only open with that key",
    ),
    # Completion webhooks: signed with the tenant's secret, retried, every attempt logged.
    "WEBHOOK_SECRET_MISSING": ErrorKind(
        _V,
        _MEDIUM,
        False,
        False,
        "Create the tenant's webhook signing secret first: `stepline keys webhook-secret "
        "--tenant T` or POST /v1/webhook-secret (it is shown once: give it to the receiver)",
    ),
    "WEBHOOK_DELIVERY_FAILED": ErrorKind(
        _I,
        _MEDIUM,
        True,
        False,
        "See what the receiver answered to each attempt (GET /v1/sessions/{id}/webhooks); "
        "the session itself is not affected",
    ),
    # Waits: approvals, timers, signals.
    "APPROVAL_REJECTED": ErrorKind(
        _E,
        _MEDIUM,
        True,
        False,
        "Read the comment in details.comment; fix what it asks and start a new session (or a "
        "fork from this step)",
    ),
    "APPROVAL_TIMED_OUT": ErrorKind(
        _E,
        _MEDIUM,
        True,
        False,
        "Nobody approved in time: ask an approver to watch for waiting sessions "
        "(`stepline sessions list --status waiting`), or give the step a longer `within`",
    ),
    "SIGNAL_TIMED_OUT": ErrorKind(
        _E,
        _MEDIUM,
        True,
        False,
        "The signal did not come in time: check that the sender posts to "
        "/v1/sessions/{id}/signals/{name} with the name the step waits for, or give the step "
        "a longer `within`",
    ),
    # Erasure (crypto-shredding)
    "SESSION_ERASED": ErrorKind(
        _V,
        _LOW,
        False,
        False,
        "The session was erased: its steps and results are gone for good. Create a new "
        "session with the steps written again",
    ),
    "DATA_KEY_NOT_AVAILABLE": ErrorKind(
        _S,
        _CRITICAL,
        False,
        False,
        "Give this process the master key the session's data key is wrapped under: during a "
        "rotation, run `stepline secrets rotate-master` again once every process has the new key",
    ),
}

_UNKNOWN = ErrorKind(_I, _MEDIUM, True, False, "Contact system administrator")


def kind_of(code: str) -> ErrorKind:
    """The catalogue entry for `code`; unknown codes get the original design's fallback."""
    return CATALOGUE.get(code, _UNKNOWN)


@dataclass(frozen=True)
class StandardError:
    code: str
    message: str
    category: ErrorCategory
    severity: ErrorSeverity
    recoverable: bool
    retryable: bool
    suggested_action: str
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid4()))
    timestamp: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
    )
    module_id: str = MODULE_ID

    @classmethod
    def of(
        cls,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        suggested_action: str | None = None,
    ) -> StandardError:
        """An error of `code`, with the catalogue's advice unless `suggested_action` fits
        this one case better (a missing file: which path; bad YAML: how to quote)."""
        kind = kind_of(code)
        return cls(
            code=code,
            message=message,
            category=kind.category,
            severity=kind.severity,
            recoverable=kind.recoverable,
            retryable=kind.retryable,
            suggested_action=suggested_action or kind.suggested_action,
            details=details or {},
        )

    def to_dict(self) -> ErrorPayload:
        """Plain JSON-ready fields, as recorded in events and sent in problem responses."""
        copied = asdict(self)  # `details` copied all the way down, as it always was
        return {
            "code": self.code,
            "message": self.message,
            "category": self.category.value,
            "severity": self.severity.value,
            "recoverable": self.recoverable,
            "retryable": self.retryable,
            "suggested_action": self.suggested_action,
            "details": copied["details"],
            "id": self.id,
            "timestamp": self.timestamp,
            "module_id": self.module_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StandardError:
        return cls(
            **{
                **data,
                "category": ErrorCategory(data["category"]),
                "severity": ErrorSeverity(data["severity"]),
            }
        )


class DomainError(Exception):
    """A command the model refuses. Carries the StandardError code that describes it, and
    what to do about this very case when the code's catalogue advice is too general."""

    code = "VALIDATION_FAILED"

    def __init__(
        self, message: str, *, suggested_action: str | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggested_action = suggested_action
        self.details = details

    def to_standard_error(self) -> StandardError:
        return StandardError.of(self.code, self.message, self.details, self.suggested_action)


class InvalidWorkflow(DomainError):
    code = "VALIDATION_FAILED"


class InvalidInput(InvalidWorkflow):
    """A run's input values do not fit what its workflow declares; the error names the input."""

    code = "INPUT_INVALID"

    def __init__(self, name: str, message: str, *, suggested_action: str | None = None) -> None:
        super().__init__(message, suggested_action=suggested_action, input=name)


class InvalidPolicy(DomainError):
    """An operator's change to a tenant policy that could never be enforced."""

    code = "POLICY_INVALID"


class PolicyRefused(InvalidWorkflow):
    """A workflow asked for more than its tenant's policy allows; the error names the field."""

    code = "POLICY_REFUSED"


class InvalidStateTransition(DomainError):
    code = "INVALID_STATE_TRANSITION"


class SessionNotFound(DomainError):
    code = "SESSION_NOT_FOUND"


class SessionErased(DomainError):
    code = "SESSION_ERASED"


class BatchNotFound(DomainError):
    code = "BATCH_NOT_FOUND"


class ScheduleNotFound(DomainError):
    code = "SCHEDULE_NOT_FOUND"


class LearnedActionNotFound(DomainError):
    """No learned action of that id among the tenant's (another tenant's is not found)."""

    code = "LEARNED_ACTION_NOT_FOUND"


class WorkflowNotFound(DomainError):
    """No workflow of that name (or no such version of it) in the tenant's registry."""

    code = "WORKFLOW_NOT_FOUND"


class TemplateNotFound(InvalidWorkflow):
    """A step's `use:` names no workflow its creator's tenant has (or no file beside it)."""

    code = "TEMPLATE_NOT_FOUND"


class TemplateCycle(InvalidWorkflow):
    """Templates that use each other: expanded, they would never end."""

    code = "TEMPLATE_CYCLE"


class WebhookSecretMissing(DomainError):
    code = "WEBHOOK_SECRET_MISSING"


class ArtifactNotFound(DomainError):
    code = "ARTIFACT_NOT_FOUND"


class VersionConflict(DomainError):
    code = "VERSION_CONFLICT"
