from __future__ import annotations

from domain.errors import (
    ErrorCategory,
    ErrorSeverity,
    InvalidStateTransition,
    InvalidWorkflow,
    StandardError,
    kind_of,
)


def test_the_original_codes_keep_their_category_severity_and_flags() -> None:
    expected = {
        "VALIDATION_FAILED": (ErrorCategory.VALIDATION, ErrorSeverity.MEDIUM, False, False),
        "SESSION_CREATION_FAILED": (ErrorCategory.EXECUTION, ErrorSeverity.CRITICAL, True, True),
        "TASK_LOOP_TIMEOUT": (ErrorCategory.EXECUTION, ErrorSeverity.HIGH, True, True),
        "CONCURRENT_LIMIT_EXCEEDED": (ErrorCategory.SYSTEM, ErrorSeverity.CRITICAL, True, False),
    }
    for code, (category, severity, recoverable, retryable) in expected.items():
        kind = kind_of(code)
        assert (kind.category, kind.severity, kind.recoverable, kind.retryable) == (
            category,
            severity,
            recoverable,
            retryable,
        ), code
    assert kind_of("TASK_LOOP_TIMEOUT").suggested_action == "Increase timeout or simplify steps"


def test_an_unknown_code_falls_back_as_the_original_design_did() -> None:
    kind = kind_of("SOMETHING_NEW")
    assert kind.category is ErrorCategory.INTEGRATION
    assert kind.severity is ErrorSeverity.MEDIUM
    assert kind.suggested_action == "Contact system administrator"


STANDARD_FIELDS = {
    "id",
    "category",
    "severity",
    "code",
    "message",
    "details",
    "timestamp",
    "module_id",
    "recoverable",
    "retryable",
    "suggested_action",
}


def test_a_standard_error_carries_every_field_and_round_trips() -> None:
    error = StandardError.of("TASK_LOOP_TIMEOUT", "step 2 took 120 s", {"step_index": 2})
    data = error.to_dict()
    assert set(data) == STANDARD_FIELDS
    assert (data["category"], data["severity"], data["module_id"]) == (
        "EXECUTION",
        "HIGH",
        "step-processor",
    )
    assert StandardError.from_dict(data) == error


def test_a_domain_error_becomes_a_standard_error_with_its_details() -> None:
    error = InvalidStateTransition("cannot pause: session is paused", status="paused")
    standard = error.to_standard_error()
    assert (standard.code, standard.message) == (
        "INVALID_STATE_TRANSITION",
        "cannot pause: session is paused",
    )
    assert standard.details == {"status": "paused"}


def test_a_domain_error_may_say_what_to_do_about_its_own_case() -> None:
    error = InvalidWorkflow("cannot read x.yaml", suggested_action="Check the path", file="x.yaml")
    standard = error.to_standard_error()
    assert standard.suggested_action == "Check the path"
    assert standard.details == {"file": "x.yaml"}


def test_without_its_own_advice_a_domain_error_gets_the_catalogues() -> None:
    standard = InvalidStateTransition("cannot pause").to_standard_error()
    assert standard.suggested_action == kind_of("INVALID_STATE_TRANSITION").suggested_action
