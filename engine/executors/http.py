"""The HTTP executor: requests against a base URL, with cookies and variables kept per session."""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import certifi
import httpx

from domain.errors import StandardError
from engine.executors import (
    SAVED_PLACEHOLDER,
    Command,
    Outcome,
    VariableNotSet,
    holds_placeholder,
    refused,
    truncated,
    with_variables,
)
from engine.secrets import NO_ORIGIN, SecretOriginRefused, Secrets, SecretUnusable, origin_of
from engine.tenancy.egress import EgressPolicy, EgressRefused, checked_transport
from engine.tracing import inject_trace_context

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HTTP_STATUS_ERROR = "HTTP_STATUS_ERROR"
MAX_BODY_BYTES = 10 * 1024 * 1024
"""Of a response body, what is read: a tenant's server cannot fill the worker's memory."""


@dataclass
class LastResponse:
    status: int
    text: str
    origin: str = NO_ORIGIN
    """Where it came from: the checks that read it fill in secrets for that origin."""

    def json(self) -> Any:
        return json.loads(self.text)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every session: building one loads the CA bundle, which cost more
    CPU than the rest of a short session put together."""
    return ssl.create_default_context(cafile=certifi.where())


@functools.lru_cache(maxsize=1024)
def base_url_of(text: str) -> httpx.URL:
    """A workflow's base URL, parsed once for all its sessions (a client copies it)."""
    url = httpx.URL(text)
    return url if url.raw_path.endswith(b"/") else url.copy_with(raw_path=url.raw_path + b"/")


def lookup(document: Any, dotted_path: str) -> Any:
    """`items.0.name` in {"items": [{"name": "x"}]} is "x". Raises KeyError if absent."""
    current = document
    for part in dotted_path.split("."):
        if isinstance(current, list) and part.lstrip("-").isdigit():
            try:
                current = current[int(part)]
            except IndexError:
                raise KeyError(dotted_path) from None
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(dotted_path)
    return current


class HttpExecutor:
    kind = "http"
    checks = frozenset({"expect_status", "expect_body_contains", "expect_json"})

    def __init__(
        self,
        base_url: str | None,
        secrets: Secrets,
        *,
        egress: EgressPolicy,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        max_output_chars: int = 4_000,
        fail_on_error_status: bool = True,
        traced: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`fail_on_error_status`: a 4xx/5xx answer fails the request (HTTP_STATUS_ERROR)
        unless the task loop says a check will judge it; False records it as a result
        (`config.http_errors: record`, the behaviour before). `traced`: requests carry the
        command's span as `traceparent`, so the target's own spans join the session's trace.
        `transport`: where requests go, checked under `egress` (a lease of the worker's pool
        for the tenant and `egress`, see http_pool), closed with the executor; without, a
        pool of the executor's own."""
        self.secrets = secrets
        self.traced = traced
        self.fail_on_error_status = fail_on_error_status
        self.max_output_chars = max_output_chars
        self.variables: dict[str, Any] = {}
        self.last: LastResponse | None = None
        self.client = httpx.Client(
            base_url=base_url_of(base_url or ""),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            follow_redirects=True,
            transport=transport or checked_transport(egress, tls_context()),
            trust_env=False,
        )
        _read_only_cookie_setting_answers(self.client.cookies)

    def close(self, *, ended: bool = True) -> None:
        self.client.close()

    # ---- commands -----------------------------------------------------------------------

    def run(self, command: Command) -> Outcome:
        handlers: dict[str, Callable[..., Outcome]] = {
            "request": self._request,
            "expect_status": self._expect_status,
            "expect_body_contains": self._expect_body_contains,
            "expect_json": self._expect_json,
            "save_json": self._save_json,
        }
        handler = handlers.get(command.name)
        if handler is None:
            return Outcome.failed("UNKNOWN_COMMAND", f"the http executor has no {command.name}")
        try:
            outcome = handler(**self._arguments(command))
        except (SecretUnusable, VariableNotSet) as error:
            return refused(error)
        except (TypeError, ValueError, httpx.InvalidURL) as error:  # a URL or header not sent
            return Outcome.failed("INVALID_COMMAND", f"bad arguments for {command.name}: {error}")
        if command.name == "request" and outcome.ok:
            return self._judged(command, outcome)
        return outcome

    def _judged(self, command: Command, outcome: Outcome) -> Outcome:
        """A request answered with a 4xx/5xx fails, unless a check will judge the answer or
        the workflow records such answers as results. The answer stays its output, so the
        model sees what the server said."""
        assert self.last is not None  # a request that succeeded recorded its response
        status = self.last.status
        if status < 400 or not self.fail_on_error_status or command.error_status_expected:
            return outcome
        method = str(command.args.get("method", "")).upper()
        url = with_variables(str(command.args.get("url", "")), self.variables)  # no secret filled
        answer = f"{status} {httpx.codes.get_reason_phrase(status)}".strip()
        error = StandardError.of(
            HTTP_STATUS_ERROR,
            f"{method} {url} answered {answer}",
            {"method": method, "url": url, "status": status},
        )
        return Outcome(False, outcome.output, error)

    def _arguments(self, command: Command) -> dict[str, Any]:
        args: dict[str, Any] = with_variables(command.args, self.variables)
        # With no secret to fill in or to guard, where the command goes changes nothing.
        destination = self._destination(command.name, args) if self.secrets.names else NO_ORIGIN
        args = self.secrets.filled(args, destination)
        if command.name == "request" and command.idempotency_key:
            headers = {"Idempotency-Key": command.idempotency_key, **(args.get("headers") or {})}
            args = {**args, "headers": headers}
        return args

    def _destination(self, name: str, args: dict[str, Any]) -> str:
        """The origin a command sends its arguments to: a request's, after joining its URL to
        the base URL as the client does; the other commands only read the last response."""
        if name != "request":
            return self.last.origin if self.last is not None else NO_ORIGIN
        try:
            return origin_of(str(self.client.build_request("GET", str(args.get("url"))).url))
        except httpx.InvalidURL:
            return NO_ORIGIN

    def _request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Outcome:
        method = method.upper()
        if method not in METHODS:
            return Outcome.failed("INVALID_COMMAND", f"unknown HTTP method {method}")
        request = self.client.build_request(method, url, json=body, headers=headers)
        if self.traced:
            inject_trace_context(request.headers)
        if request.url.userinfo:  # httpx would send it as Basic auth: encoded, so unredactable
            return Outcome.failed(
                "INVALID_COMMAND",
                "credentials in a URL are not sent; put them in an Authorization header",
            )
        # A redirect may not carry a bound secret (in a custom header, say) past its origins.
        reach = self.secrets.reach_of([url, body, headers])
        try:
            response = self.client.send(request, follow_redirects=reach is None, stream=True)
            if reach is not None:
                response = self._follow_within(response, reach)
            try:
                content, complete = _read_at_most(response, MAX_BODY_BYTES)
            finally:
                response.close()
        except EgressRefused as refusal:
            return Outcome.failed("EGRESS_REFUSED", str(refusal), **refusal.refusal.details())
        except httpx.HTTPError as error:
            return Outcome.failed("HTTP_REQUEST_FAILED", f"{method} {url}: {error}")
        text = content.decode(response.encoding or "utf-8", errors="replace")
        self.last = LastResponse(response.status_code, text, origin_of(str(response.url)))
        read = {} if complete else {"body_cut_at_bytes": MAX_BODY_BYTES}
        return Outcome.of(
            True,
            status=response.status_code,
            content_type=response.headers.get("content-type", ""),
            body=truncated(text, self.max_output_chars),
            body_size=len(content),
            **read,
        )

    def _follow_within(self, response: httpx.Response, reach: frozenset[str]) -> httpx.Response:
        """Follow the response's redirects while they stay within `reach`."""
        for _ in range(self.client.max_redirects):
            following = response.next_request
            if following is None:
                return response
            destination = origin_of(str(following.url))
            if destination not in reach:
                response.close()
                raise SecretOriginRefused.redirected(destination, reach)
            response.close()
            response = self.client.send(following, follow_redirects=False, stream=True)
        raise httpx.TooManyRedirects("too many redirects", request=response.request)

    def _expect_status(self, code: int | str) -> Outcome:
        if self.last is None:
            return _no_response()
        if not status_matches(code, self.last.status):
            return Outcome.failed(
                "EXPECTATION_FAILED", f"expected status {code}, got {self.last.status}"
            )
        return Outcome.of(True, status=self.last.status)

    def _expect_body_contains(self, text: str) -> Outcome:
        if self.last is None:
            return _no_response()
        if text not in self.last.text:
            return Outcome.failed(
                "EXPECTATION_FAILED",
                f"the response body does not contain {text!r}",
                body=truncated(self.last.text, 200),
            )
        return Outcome.of(True, found=text)

    def _json_at(self, path: str) -> tuple[Any, Outcome | None]:
        if self.last is None:
            return None, _no_response()
        try:
            return lookup(self.last.json(), path), None
        except json.JSONDecodeError:
            return None, Outcome.failed("EXPECTATION_FAILED", "the response body is not JSON")
        except KeyError:
            return None, Outcome.failed("EXPECTATION_FAILED", f"the response JSON has no {path}")

    def _expect_json(self, path: str, value: Any) -> Outcome:
        actual, problem = self._json_at(path)
        if problem is not None:
            return problem
        if actual != value:
            return Outcome.failed(
                "EXPECTATION_FAILED", f"expected {path} == {value!r}, got {actual!r}"
            )
        return Outcome.of(True, path=path, value=actual)

    def _save_json(self, path: str, name: str) -> Outcome:
        value, problem = self._json_at(path)
        if problem is not None:
            return problem
        if holds_placeholder(value):
            return Outcome.failed(
                "EXTRACTION_INVALID", f"{path} cannot be saved: {SAVED_PLACEHOLDER}"
            )
        self.variables[name] = value
        return Outcome.of(True, saved=name, value=value)

    # ---- recovery and AI ----------------------------------------------------------------

    def restore(self, command: Command, output: str) -> None:
        try:
            recorded = json.loads(output)
        except json.JSONDecodeError:
            return
        if command.name == "request" and isinstance(recorded, dict) and "status" in recorded:
            self.last = LastResponse(recorded["status"], recorded.get("body", ""))
        elif command.name == "save_json" and isinstance(recorded, dict) and "saved" in recorded:
            self.variables[recorded["saved"]] = recorded.get("value")

    def state(self) -> dict[str, Any] | None:
        cookies = [
            {"name": c.name, "value": c.value, "domain": c.domain, "path": c.path}
            for c in self.client.cookies.jar
        ]
        return {"cookies": cookies} if cookies else None

    def load_state(self, state: dict[str, Any]) -> None:
        for cookie in state.get("cookies", []):
            self.client.cookies.set(
                cookie["name"], cookie["value"], domain=cookie["domain"], path=cookie["path"]
            )

    def briefing(self) -> str | None:
        return None

    def tools(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": "http_request",
                    "description": (
                        "Send an HTTP request relative to the workflow's base URL. Returns the "
                        "status, content type and (truncated) body. Cookies persist across "
                        "requests. Use {{secrets.NAME}} for secret values and {{vars.name}} "
                        "for saved variables."
                    ),
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "method": {"type": "string", "enum": list(METHODS)},
                            "url": {"type": "string", "description": "path or absolute URL"},
                            "body": {"description": "JSON body, if any"},
                            "headers": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                        "required": ["method", "url"],
                    },
                },
            }
        ]

    def command_for_tool(self, name: str, arguments: dict[str, Any]) -> Command | None:
        if name != "http_request":
            return None
        return Command("http", "request", arguments)


def status_matches(expected: int | str, status: int) -> bool:
    """`404` is 404 only; a class, `4xx`, is any 400 to 499."""
    text = str(expected).lower()
    if text.endswith("xx"):
        return str(status)[0] == text[0]
    return status == int(text)


def _read_only_cookie_setting_answers(cookies: httpx.Cookies) -> None:
    """The client gives every answer to the cookie jar, which wraps it and its request for
    the standard library's jar and reads its headers; an answer that sets no cookie
    (`Set-Cookie`, or the obsolete `Set-Cookie2`, the only headers that jar reads) changes
    nothing, and is now not handed over at all."""
    extract = cookies.extract_cookies

    def extract_set_cookies(response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            extract(response)

    cookies.extract_cookies = extract_set_cookies  # type: ignore[method-assign]


def _read_at_most(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body's first `limit` bytes, and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), True


def _no_response() -> Outcome:
    return Outcome.failed("EXPECTATION_FAILED", "no request has been made yet in this session")
