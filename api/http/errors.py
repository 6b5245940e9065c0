"""Every error answer is application/problem+json with the StandardError fields: one place
maps domain errors, validation errors and HTTP errors to statuses. Never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from domain.errors import DomainError, StandardError
from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

PROBLEM = "application/problem+json"
STATUS_OF_CODE = {
    "VALIDATION_FAILED": 422,
    "POLICY_REFUSED": 422,
    "INPUT_INVALID": 422,
    "TEMPLATE_NOT_FOUND": 422,
    "TEMPLATE_CYCLE": 422,
    "SESSION_NOT_FOUND": 404,
    "BATCH_NOT_FOUND": 404,
    "SCHEDULE_NOT_FOUND": 404,
    "WORKFLOW_NOT_FOUND": 404,
    "LEARNED_ACTION_NOT_FOUND": 404,
    "ARTIFACT_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "INVALID_STATE_TRANSITION": 409,
    "VERSION_CONFLICT": 409,
    "UNAUTHORIZED": 401,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "CONCURRENT_LIMIT_EXCEEDED": 429,
    "RATE_LIMITED": 429,
    "DATABASE_UNAVAILABLE": 503,
    # Secrets
    "SECRET_NOT_FOUND": 404,
    "SECRET_MISSING": 422,
    "SECRET_KIND_MISMATCH": 422,
    "MASTER_KEY_MISSING": 503,
    # Completion webhooks
    "WEBHOOK_SECRET_MISSING": 422,
    "EGRESS_REFUSED": 422,
    "SESSION_ERASED": 410,
    "DATA_KEY_NOT_AVAILABLE": 503,
    # Limits and edges of the API.
    "KEY_RATE_LIMITED": 429,
    "STREAM_LIMIT_EXCEEDED": 429,
    "TOO_MANY_AUTH_FAILURES": 429,
    "HOST_NOT_ALLOWED": 400,
}
HTTP_CODES = {
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


class ApiError(Exception):
    """An error of the HTTP layer itself (auth, limits), with optional headers."""

    def __init__(self, error: StandardError, headers: dict[str, str] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers or {}

    @classmethod
    def of(
        cls,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        suggested_action: str | None = None,
        **details: Any,
    ) -> ApiError:
        return cls(StandardError.of(code, message, details, suggested_action), headers)


def problem(
    error: StandardError, status: int | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    status = status or STATUS_OF_CODE.get(error.code, 500)
    body = {"type": "about:blank", "title": error.code, "status": status, "detail": error.message}
    return JSONResponse(
        {**body, **error.to_dict()}, status_code=status, media_type=PROBLEM, headers=headers
    )


PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
"""Problem is published by api.http.openapi: FastAPI would list a response's model under
application/json, which is not what these answers are sent as."""


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give: each a Problem, sent (and so
    documented) as application/problem+json, its one content type."""
    return {
        status: {
            "description": f"{HTTPStatus(status).phrase}: a problem",
            "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def _field(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


PLACES = {
    "query": "query parameter",
    "path": "path segment",
    "header": "header",
    "body": "body field",
}


def _request_advice(errors: Sequence[Any]) -> str:
    """What to fix: each parameter or body field named, with its allowed values if known."""
    named = dict.fromkeys(_named(error) for error in errors)
    return f"Fix the {', '.join(named)}: see details.errors, and /docs for the allowed values"


def _named(error: Any) -> str:
    place, *rest = error["loc"]
    name = PLACES.get(place, str(place))
    if rest:
        name += f" '{_field(tuple(rest))}'"
    expected = error.get("ctx", {}).get("expected")
    return f"{name} (one of {expected})" if expected else name


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        return problem(error.to_standard_error())

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return problem(error.error, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [{"field": _field(e["loc"]), "message": e["msg"]} for e in error.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        advice = _request_advice(error.errors())
        return problem(
            StandardError.of(
                "VALIDATION_FAILED", f"invalid request: {summary}", {"errors": fields}, advice
            )
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "VALIDATION_FAILED")
        return problem(StandardError.of(code, str(error.detail)), status=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        standard = StandardError.of("INTERNAL_ERROR", "an unexpected error; it has been logged")
        log.error("Unexpected error %s: %r", standard.id, error, exc_info=error)
        return problem(standard, status=500)
